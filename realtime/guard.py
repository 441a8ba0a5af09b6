"""Limits on realtime's HTTP endpoints, applied before Django reads a request's body.

Django's ``ASGIHandler`` reads the whole body of a request (spooling it to a temporary
file) before any view runs, so a view cannot refuse an oversized or unauthenticated
upload unread: a 512 MiB ``POST /realtime/api/publish`` without credentials would be
taken in whole and only then answered 401. Wrap the project's HTTP application::

    from realtime.guard import guard

    application = ProtocolTypeRouter({
        "http": guard(get_asgi_application()),
        "websocket": URLRouter(websocket_urlpatterns),
    })

For requests to realtime's own endpoints (those of ``realtime.urls``, wherever they are
mounted), the guard answers, before a byte of the body is read:

- the publish endpoint: 401 ``invalid_credentials`` without a valid key, 429
  ``too_many_auth_failures`` while the address has used up its failures, 403
  ``access_denied`` for a read-only key, all as the view would;
- every endpoint: 413 ``message_too_large`` when ``Content-Length`` is over
  ``MAX_MESSAGE_SIZE``.

It then reads the body itself, counting (a chunked body has no length to check), and
answers 413 as soon as it passes ``MAX_MESSAGE_SIZE``; otherwise Django gets the body
it read, as if from the server. Other paths pass through untouched. The guard speaks
ASGI only, so it works under any server; but a server that reads whole bodies before
calling the application (daphne does) has taken the body in already: limit bodies at
the reverse proxy too (docs/deployment.md#hardening).
"""

from __future__ import annotations

from django.urls import Resolver404, resolve

from .addresses import client_address
from .bayeux import protocol as bayeux
from .conf import settings
from .errors import ErrorCode, MessageTooLarge, RealtimeError
from .views import publisher, refusal

NAMESPACE = "realtime"


def guard(app):
    """``app`` (the project's HTTP application) behind realtime's body limits."""
    return HTTPGuard(app)


def _endpoint(scope: dict) -> str | None:
    """The URL name of the realtime endpoint the request is for, or None."""
    path = scope["path"]
    root = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    try:
        match = resolve(path)
    except Resolver404:
        return None
    return match.url_name if NAMESPACE in match.app_names else None


def _header(scope: dict, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


class HTTPGuard:
    """The ASGI application :func:`guard` returns."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive, send) -> None:
        endpoint = _endpoint(scope) if scope["type"] == "http" else None
        if endpoint is None:
            await self.app(scope, receive, send)
            return
        try:
            if endpoint == "publish" and scope["method"] == "POST":
                await publisher(_header(scope, b"authorization"), client_address(scope))
            body = await self._read_body(scope, receive)
        except RealtimeError as error:
            await _refuse(send, endpoint, error)
            return
        if body is None:
            return  # the client went away
        await self.app(scope, _replay(body, receive), send)

    @staticmethod
    async def _read_body(scope: dict, receive) -> bytes | None:
        limit = settings.MAX_MESSAGE_SIZE
        too_large = MessageTooLarge(f"bodies are limited to {limit} bytes")
        declared = _header(scope, b"content-length")
        try:
            if declared is not None and int(declared) > limit:
                raise too_large
        except ValueError:
            pass  # the server answers a malformed length itself
        parts: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise too_large
            parts.append(chunk)
            if not message.get("more_body", False):
                return b"".join(parts)


def _replay(body: bytes, receive):
    """A ``receive`` that gives the body read, then what the server sends (disconnect)."""
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _refuse(send, endpoint: str, error: RealtimeError) -> None:
    """Answer ``error`` as the endpoint would: Bayeux's format there, the socket's elsewhere."""
    if endpoint == "bayeux":
        text = "message_too_large" if error.code == ErrorCode.MESSAGE_TOO_LARGE else error.code.value
        reason = bayeux.BayeuxError(error.http_status, text, str(settings.MAX_MESSAGE_SIZE))
        body = bayeux.batch([bayeux.encode(bayeux.error_reply(None, reason))]).encode()
        headers = [(b"content-type", b"application/json; charset=utf-8")]
    else:
        response = refusal(error)
        body = response.content
        headers = [
            (key.lower().encode("latin-1"), value.encode("latin-1")) for key, value in response.items()
        ]
    headers.append((b"content-length", str(len(body)).encode()))
    # The body was not read: the connection cannot carry another request.
    headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": error.http_status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
