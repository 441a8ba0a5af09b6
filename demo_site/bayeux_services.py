"""Server-side handlers for the demo's Bayeux service channels (docs/bayeux.md).

Mapped in settings: ``REALTIME["BAYEUX_SERVICES"]``. A CometD client calls them with
``cometd.remoteCall("echo", data, callback)``; any Bayeux client can publish to
``/service/echo`` and read the reply's ``data``.
"""

from realtime.errors import AccessDenied


def echo(request):
    """Answer the sender alone with what it sent, and who the server knows it as."""
    return {"echo": request.data, "user": request.user}


async def whoami(request):
    """An async handler: runs on the event loop, with no thread hop."""
    if request.principal is None:
        raise AccessDenied("anonymous sessions have no identity")
    return {"client": request.client, "access": request.principal.access, "user": request.user}
