"""The demo's RPC methods (``realtime.rpc``), for native clients (``client.rpc("echo", data)``)
and Bayeux ones (``/service/echo``) alike. Imported by ``DemoSiteConfig.ready``."""

from __future__ import annotations

from realtime import rpc
from realtime.errors import AccessDenied, InvalidData

from .models import ChatMessage

RECENT_MESSAGES = 50


@rpc.method("echo", anonymous=True)
def echo(request):
    """Answer with what was sent."""
    return request.data


@rpc.method("whoami", anonymous=True)
async def whoami(request):
    """An async method: runs on the event loop, with no thread hop."""
    if request.principal is None:
        raise AccessDenied("anonymous connections have no identity")
    return {"client": request.client, "access": request.principal.access, "user": request.user}


@rpc.method("chat.recent")
def recent(request):
    """The last messages said in a room: ``{"room": "lobby"}`` -> ``[{id, text, user, time}, ...]``."""
    from .views import ROOMS

    room = request.data.get("room") if isinstance(request.data, dict) else None
    if room not in ROOMS:
        raise InvalidData(f"room must be one of {', '.join(ROOMS)}")
    if request.user_id is None:
        raise AccessDenied("log in to read the chat")
    latest = ChatMessage.objects.filter(room=room).select_related("user").order_by("-created_at", "-pk")
    return [message.as_dict() for message in reversed(latest[:RECENT_MESSAGES])]
