"""Server-side handlers for ``/service/**`` channels (request/response over Bayeux).

A publication on a service channel is not broadcast: it goes to the handler that
``REALTIME["BAYEUX_SERVICES"]`` maps the channel to, and whatever the handler returns
is sent back to the sender alone, as the ``data`` of the reply (CometD's
``remoteCall`` waits for exactly that)::

    REALTIME = {"BAYEUX_SERVICES": {"/service/echo": "myapp.services.echo"}}

    # myapp/services.py
    def echo(request):            # or: async def echo(request)
        return {"echo": request.data, "user": request.user}

A plain function runs in a thread (it may use the ORM); an ``async def`` runs on the
event loop. Raising a :class:`~realtime.errors.RealtimeError` (``AccessDenied``,
``InvalidData``...) refuses the request with that error code. Returning None
acknowledges it with no data.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from asgiref.sync import sync_to_async
from django.utils.module_loading import import_string

from ..auth import Principal
from ..conf import settings


@dataclass(frozen=True, slots=True)
class ServiceRequest:
    """One call of a service handler."""

    channel: str  # "/service/echo"
    data: Any
    principal: Principal | None  # None for an anonymous session
    client: str  # the session's public id (as shown in presence), not its clientId

    @property
    def user(self) -> dict | None:
        """The logged-in user of a browser token, as subscribers see publishers."""
        return self.principal.user if self.principal is not None else None


@lru_cache(maxsize=64)
def _load(path: str):
    return import_string(path)


def handler_for(channel: str):
    """The handler for ``channel``, or None when no handler is configured for it."""
    path = settings.BAYEUX_SERVICES.get(channel)
    return _load(path) if path else None


def reset() -> None:
    """Forget loaded handlers (settings changed)."""
    _load.cache_clear()


async def call(handler, request: ServiceRequest) -> Any:
    if inspect.iscoroutinefunction(handler):
        return await handler(request)
    return await sync_to_async(handler)(request)
