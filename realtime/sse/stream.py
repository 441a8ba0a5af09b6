"""``GET /realtime/sse?channel=...``: publications as server-sent events.

A plain ASGI application, mounted for the ``http`` protocol by
``realtime.routing.http_urlpatterns``, rather than a Django view with a
``StreamingHttpResponse``. Three reasons, all about what happens after the headers:

* **Back-pressure.** Each stream is a hub subscriber with an ``Outbox`` over the ASGI
  ``send``, like a WebSocket: a delivery steps ``send`` once, synchronously, and a
  client that stops reading queues at most ``MAX_PENDING_FRAMES`` events before it is
  dropped. A streaming response is pulled by Django from an async iterator, so every
  delivery would wake a task (a queue per stream), and the queue in front of it would
  be unbounded unless rebuilt by hand.
* **Disconnects.** The application awaits ``receive()`` itself and sees
  ``http.disconnect`` at once under uvicorn, daphne and hypercorn; the stream leaves the
  hub right then. Django's handler also listens for it (5.0+), but only cancels the
  response, so cleanup would hang on ``finally`` blocks inside a generator.
* **No middleware in the way.** Django's middleware (GZip, ConditionalGet, anything a
  project adds) may buffer or rewrite a response; an event stream must not be.

Authentication is the socket's: a signed token in ``?token=`` (``EventSource`` cannot
set headers), a key's secret or a token as ``Authorization: Bearer``, or none for
channels with anonymous read. Subscribing, recovery and the access checks are
``realtime.actions``, shared with the socket and Bayeux.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from urllib.parse import parse_qsl

from .. import actions, auth, keys, protocol
from ..addresses import client_address
from ..conf import settings
from ..errors import (
    AccessDenied,
    ErrorCode,
    InvalidCredentials,
    InvalidData,
    RealtimeError,
    TooManyConnections,
    TooManySubscriptions,
)
from ..names import is_pattern, validate_subscription_name
from ..origins import origin_allowed
from ..outbox import Outbox
from ..quotas import quotas
from ..runtime import get_hub
from . import protocol as sse

logger = logging.getLogger("realtime")

MAX_QUERY_FIELDS = 1000
CORS_HEADERS = b"Authorization, Last-Event-ID, Cache-Control"


class Stream:
    """One event stream, as the hub sees it (a ``hub.Subscriber``)."""

    protocol_name = "sse"

    def __init__(
        self, send, principal: auth.Principal | None, limit: int, address: str | None = None
    ) -> None:
        self.send = send
        self.principal = principal
        self.address = address  # the client address its subscriptions count towards (quotas)
        self.subscriptions: set[str] = set()
        # The policy's cached decisions for this principal (hub.Subscriber).
        self.readable: dict[str, bool] = {}
        self.writable: dict[str, str | None] = {}
        self.client_id = secrets.token_hex(16)  # public: shown in presence
        self.hub = None
        # Channels with history this stream names -> the last (epoch, offset) sent.
        self.positions: dict[str, tuple[str, int] | None] = {}
        # Events written before the response started (while subscribing), in order: the
        # replays of every channel recovering (each at most RECOVERY_LIMIT) and what arrived
        # meanwhile (at most ``limit``).
        self.early: list[bytes] | None = []
        self.early_limit = limit
        self.limit = limit
        self.outbox = Outbox(send, limit, self.too_slow)
        self.ended: asyncio.Future = asyncio.get_running_loop().create_future()
        self.final = b""
        self.beat: asyncio.TimerHandle | None = None
        self.named = True
        self.released = False

    # What the hub calls ------------------------------------------------------------

    def push(self, frame: str) -> None:
        converted = sse.delivery(frame)
        if converted is None:
            return
        named, unnamed, channel, offset, epoch = converted
        head = named if self.named else unnamed
        if offset is not None and channel in self.positions:
            self.positions[channel] = (epoch, offset)
            self.write(head + b"id: " + sse.format_id(self.positions).encode() + b"\n\n")
        else:
            self.write(head + b"\n")

    def drop_subscription(self, name: str, reason: str) -> None:
        self.hub.unsubscribe(self, name)
        self.push(protocol.unsubscribed_frame(name, reason))
        if not self.subscriptions:
            self.end()

    def drop_principal(self, reason: str) -> None:
        self.principal = None
        self.push(protocol.logout_frame(reason))
        self.end()

    def replace_principal(self, principal: auth.Principal) -> None:
        self.principal = principal
        self.readable.clear()
        self.writable.clear()

    def disconnect(self, code: int, reason: str = "") -> None:
        """The server API ended this client (``code`` says whether it should come back)."""
        body = protocol.encode({"code": int(code), "reason": reason})
        self.end(sse.event(sse.NOTICE + "closed", body))

    # Writing -----------------------------------------------------------------------

    def write(self, body: bytes) -> None:
        """Queue bytes for the client; never blocks, never raises."""
        if self.early is not None:
            if len(self.early) >= self.early_limit:
                self.early = []
                asyncio.get_running_loop().call_soon(self.too_slow)
            else:
                self.early.append(body)
            return
        self.outbox.push_message({"type": "http.response.body", "body": body, "more_body": True})

    def start(self, headers: list[tuple[bytes, bytes]]) -> None:
        """Begin the response, then what was written while subscribing."""
        early, self.early = self.early, None
        self.outbox.push_message({"type": "http.response.start", "status": 200, "headers": headers})
        self.write(sse.retry(settings.SSE_RETRY) + b"".join(early or ()))
        self._schedule_beat()

    def _schedule_beat(self) -> None:
        self.beat = asyncio.get_running_loop().call_later(settings.SSE_HEARTBEAT, self._heartbeat)

    def _heartbeat(self) -> None:
        self.write(sse.HEARTBEAT)
        self._schedule_beat()

    # Ending ------------------------------------------------------------------------

    def end(self, final: bytes = b"") -> None:
        """Stop serving: leave the hub and finish the response after what is queued."""
        if self.hub is not None:
            self.hub.remove(self)
        if not self.ended.done():
            self.final = final
            self.ended.set_result(None)

    def too_slow(self) -> None:
        """More than ``MAX_PENDING_FRAMES`` events queued: the client is dropped (the
        browser reconnects by itself, and recovers from history with Last-Event-ID)."""
        logger.info("realtime: dropping an event stream that reads too slowly")
        if self.early is None:
            self.outbox.closed = True  # started: nothing more is queued behind the stuck send
        self.end(sse.event(sse.NOTICE + "closed", '{"reason":"too_slow"}'))

    async def finish(self) -> None:
        """Send the last bytes once the queue has drained (a writer may still be busy)."""
        await self.outbox.flush()
        try:
            await self.send({"type": "http.response.body", "body": self.final, "more_body": False})
        except Exception:
            pass  # the client is gone already

    def cancel(self) -> None:
        if self.beat is not None:
            self.beat.cancel()
        self.outbox.cancel()
        if self.hub is not None:
            self.hub.remove(self)
        if not self.released:
            self.released = True
            quotas.remove_subscriber(self, self.address)
            quotas.release(self.address)


# The ASGI application --------------------------------------------------------------------


async def _respond(send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _error_headers(error: RealtimeError, cors: list) -> list[tuple[bytes, bytes]]:
    headers = [(b"content-type", b"application/json"), (b"cache-control", b"no-store"), *cors]
    if error.code == ErrorCode.INVALID_CREDENTIALS:
        headers.append((b"www-authenticate", b'Bearer realm="realtime"'))
    return headers


def _cors(origin: str | None) -> list[tuple[bytes, bytes]]:
    if origin is None:
        return []
    return [
        (b"access-control-allow-origin", origin.encode()),
        (b"access-control-allow-credentials", b"true"),
        (b"vary", b"Origin"),
    ]


def _credential(query: list[tuple[str, str]], headers: dict[bytes, bytes]) -> str | None:
    if any(name == "secret" for name, _ in query):
        raise InvalidData("send a key's secret as Authorization: Bearer, never in the URL")
    header = headers.get(b"authorization")
    if header is not None:
        scheme, _, value = header.decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise InvalidCredentials("send Authorization: Bearer <secret or token>")
        return value.strip()
    tokens_given = [value for name, value in query if name == "token"]
    if tokens_given and tokens_given[-1].startswith(keys.SECRET_PREFIX):
        raise InvalidData("send a key's secret as Authorization: Bearer, never in the URL")
    return tokens_given[-1] if tokens_given else None


async def _principal(credential: str | None, address: str | None) -> auth.Principal | None:
    """Read-only, like the socket's ``auth`` (failures count towards the address's)."""
    if credential is None:
        return None
    if len(credential) > protocol.MAX_TOKEN_LENGTH or not protocol.is_encodable(credential):
        raise InvalidCredentials("unknown, revoked or expired credentials")
    if credential.startswith(keys.SECRET_PREFIX):
        credentials = protocol.Auth(None, secret=credential, access="read-only")
    else:
        credentials = protocol.Auth(None, access="read-only", token=credential)
    return await actions.authenticate(credentials, address)


def _channels(query: list[tuple[str, str]]) -> list[str]:
    names = list(dict.fromkeys(value for name, value in query if name == "channel"))
    if not names:
        raise InvalidData("name at least one channel: ?channel=news&channel=rooms/*")
    if len(names) > settings.MAX_SUBSCRIPTIONS:
        raise TooManySubscriptions(f"at most {settings.MAX_SUBSCRIPTIONS} subscriptions")
    return [validate_subscription_name(name) for name in names]


async def _subscribe(hub, stream: Stream, names: list[str], last_event_id: str | None) -> None:
    """Subscribe to each channel, recovering after ``Last-Event-ID`` where it can."""
    stream.early_limit = stream.limit + len(names) * settings.RECOVERY_LIMIT
    exact = [name for name in names if not is_pattern(name)]
    infos = {name: await actions.authorize_channel(stream.principal, name) for name in exact}
    stream.positions = {name: None for name in exact if infos[name].has_history}
    since = sse.parse_id(last_event_id, list(stream.positions)) if last_event_id is not None else {}
    for name in names:
        result = await actions.subscribe(hub, stream, name, since.get(name))
        # No await from here to the recovered frames: nothing live slips in between.
        reply = result.reply
        if "offset" in reply:
            stream.positions[name] = (reply["epoch"], reply["offset"])
        event_id = sse.format_id(stream.positions) if stream.positions else None
        stream.write(
            sse.event(sse.NOTICE + "subscribed", protocol.encode({"channel": name, **reply}), event_id)
        )
        for frame in result.frames:
            stream.push(frame)
        if last_event_id is not None and not reply.get("recovered"):
            stream.push(protocol.missed_frame(name, "not_recovered"))


async def _wait_disconnect(receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class EventStreamApp:
    """The ASGI application for ``GET /realtime/sse``; see the module docstring."""

    async def __call__(self, scope: dict, receive, send) -> None:
        if scope["type"] != "http":
            raise ValueError("realtime's event stream serves HTTP only")
        headers = dict(scope.get("headers") or ())
        origin = headers.get(b"origin")
        origin = origin.decode("latin-1") if origin is not None else None
        if not origin_allowed(origin):
            error = AccessDenied("this origin may not read events")
            await _respond(send, 403, protocol.error_frame(error.code, None, error.detail).encode(),
                           _error_headers(error, []))  # fmt: skip
            return
        cors = _cors(origin)
        method = scope.get("method", "GET")
        if method == "OPTIONS":
            preflight = [(b"access-control-allow-methods", b"GET, OPTIONS"),
                         (b"access-control-allow-headers", CORS_HEADERS),
                         (b"access-control-max-age", b"86400")]  # fmt: skip
            await _respond(send, 204, b"", [*cors, *preflight])
            return
        stream = None
        try:
            if method != "GET":
                raise InvalidData("use GET")
            query = parse_qsl(
                scope.get("query_string", b"").decode("latin-1"), max_num_fields=MAX_QUERY_FIELDS
            )
            names = _channels(query)
            address = client_address(scope)
            principal = await _principal(_credential(query, headers), address)
            last = headers.get(b"last-event-id")
            last_event_id = last.decode("latin-1") if last is not None else dict(query).get("lastEventId")
            hub = await get_hub()
            if quotas.admit(address) is not None:
                raise TooManyConnections("too many connections from this address, or to this process")
            stream = Stream(send, principal, settings.MAX_PENDING_FRAMES, address)
            quotas.add_subscriber(stream, address)
            stream.hub = hub
            stream.named = dict(query).get("named") != "0"
            hub.add(stream)
            await _subscribe(hub, stream, names, last_event_id)
        except (RealtimeError, ValueError) as error:
            if stream is not None:
                stream.cancel()
            if not isinstance(error, RealtimeError):
                error = InvalidData("the query string is not readable")
            if isinstance(error, AccessDenied) and stream is not None and stream.principal is None:
                error = InvalidCredentials("authenticate: ?token=<signed token> or Authorization: Bearer")
            status = 405 if method != "GET" else error.http_status
            extra = [(b"allow", b"GET, OPTIONS")] if status == 405 else []
            body = protocol.error_frame(error.code, None, error.detail).encode()
            await _respond(send, status, body, _error_headers(error, cors) + extra)
            return
        except Exception:
            if stream is not None:
                stream.cancel()
            logger.exception("realtime: unexpected error opening an event stream")
            error = RealtimeError()
            await _respond(send, 500, protocol.error_frame(error.code).encode(), _error_headers(error, cors))
            return
        await self.serve(stream, receive, cors)

    async def serve(self, stream: Stream, receive, cors) -> None:
        stream.start(
            [
                (b"content-type", b"text/event-stream; charset=utf-8"),
                # no-transform: proxies must neither compress nor buffer the stream.
                (b"cache-control", b"no-cache, no-store, no-transform"),
                (b"x-accel-buffering", b"no"),
                *cors,
            ]
        )
        gone = asyncio.ensure_future(_wait_disconnect(receive))
        finishing = None
        try:
            await asyncio.wait([gone, stream.ended], return_when=asyncio.FIRST_COMPLETED)
            if not gone.done():
                finishing = asyncio.ensure_future(stream.finish())
                await asyncio.wait([gone, finishing], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stream.cancel()
            for task in (gone, finishing):
                if task is not None and not task.done():
                    task.cancel()


app = EventStreamApp()
