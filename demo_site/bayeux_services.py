"""Service handlers mapped the older way, in ``REALTIME["BAYEUX_SERVICES"]`` (docs/bayeux.md).

The demo itself registers its methods in code (``demo_site/rpc.py``); the test servers map
these (``tests/conftest.py``) to keep that setting tested: each mapped ``/service/<name>``
becomes the RPC method ``<name>``, for Bayeux (``cometd.remoteCall("echo", data, callback)``)
and native clients (``{"rpc": {"method": "echo"}}``) alike, in place of a method of the
same name registered in code.
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
