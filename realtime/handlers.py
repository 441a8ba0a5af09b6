"""Publish handlers: project code that client publications pass through.

Public API (``ClientPublication``; handlers are configured in ``REALTIME["PUBLISH_HANDLERS"]``)::

    REALTIME = {"PUBLISH_HANDLERS": {"rooms": "chat.realtime.on_message", "*": "chat.realtime.audit"}}

    # chat/realtime.py
    from realtime.errors import Rejected

    def on_message(publication):          # or: async def on_message(publication)
        if "spam" in str(publication.data):
            raise Rejected("no spam, please", code="moderated")   # {"err": "moderated", "detail": ...}
        Message.objects.create(room=publication.channel, text=publication.data["text"])
        publication.data = {**publication.data, "stored": True}  # what subscribers receive

The key is a channel row's name (the handler runs for every channel that row covers) or
``"*"`` for every channel without a handler of its own. A handler runs after the access
checks and before the publication is sent, for publications made by clients over a
WebSocket (native or Bayeux): ``realtime.publish()`` and the HTTP endpoint, which are the
server's own, never pass through it. It may

- let it through (return nothing), or change ``publication.data`` and ``publication.event``;
- refuse it: raise :class:`~realtime.errors.Rejected` (code ``rejected`` or the project's
  own) or another ``RealtimeError``; the client gets that code and detail, and nothing is sent;
- store it: a plain ``def`` runs in Django's sync thread (``sync_to_async``) and may use
  the ORM; an ``async def`` runs on the event loop.

A handler that raises anything else is logged and the client gets ``internal_error``;
one that takes longer than ``HANDLER_TIMEOUT`` gets ``handler_timeout`` (a plain
function then runs on to its end in its thread, but its publication is not sent).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from asgiref.sync import sync_to_async
from django.utils.module_loading import import_string

from .auth import Principal, aget_user
from .conf import settings
from .errors import HandlerTimeout, RealtimeError
from .registry import ChannelInfo

logger = logging.getLogger("realtime")
ALL = "*"
_UNSET = object()


@dataclass(eq=False)
class ClientPublication:
    """One publication a client made, as its handler sees it (and may change)."""

    channel: str  # the concrete channel, "rooms/lobby"
    event: str
    data: Any
    row: ChannelInfo  # the row that covers ``channel``
    principal: Principal
    client: str  # the connection's public id (as shown in presence)
    protocol: str  # "native" or "bayeux"
    _user: Any = field(default=_UNSET, repr=False)

    @property
    def user(self) -> dict | None:
        """Who published as subscribers will see it (``{"id", "name"}``), for token users."""
        return self.principal.user

    @property
    def user_id(self) -> int | None:
        return self.principal.user_id

    async def auser(self):
        """The publisher's Django user (one query, then kept), or None for keys."""
        if self._user is _UNSET:
            self._user = await aget_user(self.user_id)
        return self._user


@lru_cache(maxsize=64)
def _load(path: str):
    return import_string(path)


def handler_for(row: ChannelInfo):
    """The handler for publications on channels ``row`` covers, or None."""
    configured = settings.PUBLISH_HANDLERS
    if not configured:
        return None
    path = configured.get(row.name) or configured.get(ALL)
    return _load(path) if path else None


def reset() -> None:
    """Forget loaded handlers (settings changed)."""
    _load.cache_clear()


async def call_handler(handler, request, what: str) -> Any:
    """Run a project's handler (sync in a thread, async on the loop) within
    ``HANDLER_TIMEOUT``; what it raises that is no ``RealtimeError`` becomes
    ``internal_error``, logged. Shared by publish handlers and RPC methods."""
    if inspect.iscoroutinefunction(handler):
        work = handler(request)
    else:
        work = sync_to_async(handler)(request)
    timeout = settings.HANDLER_TIMEOUT
    try:
        return await asyncio.wait_for(work, timeout)
    except TimeoutError:
        logger.warning("realtime: %s took more than HANDLER_TIMEOUT (%ss)", what, timeout)
        raise HandlerTimeout(f"{what} took more than {timeout:g} s") from None
    except RealtimeError:
        raise
    except Exception:
        logger.exception("realtime: %s raised", what)
        raise RealtimeError(f"{what} failed") from None


async def run(handler, publication: ClientPublication) -> None:
    result = await call_handler(handler, publication, f"the publish handler of {publication.row.name!r}")
    if result is not None:
        logger.warning(
            "realtime: the publish handler of %r returned a value, which is ignored; "
            "set publication.data to change what is published",
            publication.row.name,
        )
