"""Server-side handlers for ``/service/**`` channels (request/response over Bayeux).

A publication on a service channel is not broadcast: ``/service/<name>`` calls the RPC
method ``<name>`` (``realtime.rpc``), the same one a native client calls with
``{"rpc": {"method": "<name>", ...}}``, and whatever it returns is sent back to the
sender alone, as the ``data`` of the reply (CometD's ``remoteCall`` waits for exactly
that). Methods are registered in code with ``@realtime.rpc.method(...)``, or, as before,
in ``REALTIME["BAYEUX_SERVICES"]``, which registers into the same registry::

    REALTIME = {"BAYEUX_SERVICES": {"/service/echo": "myapp.services.echo"}}

    # myapp/services.py
    def echo(request):            # or: async def echo(request)
        return {"echo": request.data, "user": request.user}

A plain function runs in a thread (it may use the ORM); an ``async def`` runs on the
event loop. Raising a :class:`~realtime.errors.RealtimeError` (``AccessDenied``,
``InvalidData``...) refuses the request with that error code. Returning None
acknowledges it with no data. A service channel with no method is acknowledged and goes
nowhere, as in CometD.
"""

from __future__ import annotations

from typing import Any

from .. import rpc
from ..rpc import RpcRequest as ServiceRequest  # the request every handler gets

__all__ = ["ServiceRequest", "handler_for", "method_name", "reset", "call"]


def method_name(channel: str) -> str:
    """``/service/chat/recent`` -> ``chat/recent``."""
    return channel[len(rpc.SERVICE_PREFIX) :]


def handler_for(channel: str):
    """The handler for ``channel``, or None when no method is registered for it."""
    found = rpc.get(method_name(channel))
    return found.func if found is not None else None


def reset() -> None:
    """Forget loaded handlers (settings changed)."""
    rpc.reset()


async def call(channel: str, data: Any, principal, client: str) -> Any:
    """Call the method of ``channel`` for a Bayeux session (see ``realtime.rpc.call``)."""
    return await rpc.call(method_name(channel), data, principal, client, "bayeux")
