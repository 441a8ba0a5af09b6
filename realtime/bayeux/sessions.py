"""Bayeux sessions, and what each Bayeux message does to them.

A session begins with ``/meta/handshake`` and is known by its ``clientId``, a bearer
secret. It is a subscriber of the process's hub like a native connection, so the hub
fans publications out to it, checks it on revalidation, and drops it when its key is
revoked. Deliveries go straight to the WebSocket the session last used, or wait in
the session's queue for the next ``/meta/connect`` over HTTP.

Sessions live in the process that handshook them (one :class:`BayeuxServer` per
event loop, beside the hub). A session with neither a held ``/meta/connect`` nor a
WebSocket is forgotten after ``BAYEUX_MAX_INTERVAL`` seconds; its client is then told
``402::session_unknown`` and handshakes again, as CometD and Faye clients do by
themselves.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import weakref
from typing import Any

from .. import actions, events, protocol, registry, signals
from ..conf import settings
from ..errors import CloseCode, InvalidData, MethodNotFound, RateLimited, RealtimeError
from ..positions import Position
from ..publishing import validate_event
from ..quotas import quotas
from ..ratelimit import TokenBucket
from ..runtime import get_hub
from . import protocol as bayeux
from . import services
from .protocol import BayeuxError

logger = logging.getLogger("realtime")

SUPERSEDED = "superseded"


class Session:
    """One Bayeux client, as the hub sees it (a ``hub.Subscriber``)."""

    protocol_name = "bayeux"

    def __init__(self, server: BayeuxServer, principal, address: str | None = None) -> None:
        self.server = server
        # The client address it handshook from (realtime.addresses): its subscriptions
        # count towards that address's, and it towards the address's sessions.
        self.address = address
        # The Bayeux clientId: a bearer secret (192 random bits) that only this client
        # sees. Whoever presents it acts as the session, so it is never shown to others.
        self.bayeux_id = secrets.token_urlsafe(24)
        # The public id, shown in presence and to service handlers (hub.Subscriber).
        self.client_id = secrets.token_hex(16)
        self.principal = principal
        self.subscriptions: set[str] = set()
        self.readable: dict[str, bool] = {}
        self.writable: dict[str, str | None] = {}
        self.queue: list[str] = []
        self.socket = None  # the BayeuxConsumer it last spoke through, if any
        self.waiter: asyncio.Future | None = None  # a /meta/connect held over HTTP
        self.held_reply: tuple[asyncio.TimerHandle, Any, dict] | None = None  # ... over WebSocket
        self.connected = False
        self.ended: str | None = None
        self.last_seen = server.loop.time()
        self.rate = TokenBucket(settings.RATE_LIMIT, settings.RATE_BURST)

    # What the hub calls ------------------------------------------------------------

    def push(self, frame: str) -> None:
        converted = bayeux.delivery(frame)
        if converted is not None:
            self.deliver(*converted)

    def drop_subscription(self, name: str, reason: str) -> None:
        # Bayeux has no message for an unsubscribe the client did not ask for.
        self.server.hub.unsubscribe(self, name, reason)

    def drop_principal(self, reason: str) -> None:
        # The session ends: its client handshakes again (with fresh credentials, or is refused).
        self.server.end(self, reason)

    def replace_principal(self, principal) -> None:
        self.principal = principal
        self.writable.clear()

    def disconnect(self, code: int, reason: str = "") -> None:
        # The server API's disconnect: the session ends; the reply to its connect
        # advises no reconnect for good, or a new handshake.
        final = code == CloseCode.DISCONNECTED_FOR_GOOD
        self.server.end(self, "disconnect" if final else "disconnected")

    # Deliveries --------------------------------------------------------------------

    def deliver(self, message: str, payload: str) -> None:
        """Send one encoded message (``payload`` is the same, as a one-message batch)."""
        if self.socket is not None:
            self.socket.deliver(payload)
            return
        if self.ended is not None:
            return
        if len(self.queue) >= settings.MAX_PENDING_FRAMES:
            logger.info("realtime: ending a Bayeux session that does not collect its messages")
            self.server.end(self, "too_slow")
            return
        self.queue.append(message)
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def deliver_frames(self, frames: list[str]) -> None:
        for frame in frames:
            self.push(frame)

    def drain(self) -> list[str]:
        queued, self.queue = self.queue, []
        return queued

    # Held /meta/connect ------------------------------------------------------------

    async def hold(self, timeout: float) -> str | None:
        """Wait for something to deliver, at most ``timeout`` seconds. Returns
        SUPERSEDED when a newer connect took over, None otherwise."""
        waiter = self.waiter = self.server.loop.create_future()
        try:
            await asyncio.wait([waiter], timeout=timeout)
        finally:
            if self.waiter is waiter:
                self.waiter = None
            self.last_seen = self.server.loop.time()
        return waiter.result() if waiter.done() else None

    def answer_connect(self, why: str | None = None) -> None:
        """Complete a connect held over HTTP or over a WebSocket, now."""
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(why)
        if self.held_reply is not None:
            timer, socket, message = self.held_reply
            self.held_reply = None
            timer.cancel()
            socket.send_reply(self.server.connect_reply(self, message))

    def hold_reply(self, socket, message: dict, timeout: float) -> None:
        """Over a WebSocket, the reply to /meta/connect waits (deliveries do not)."""
        timer = self.server.loop.call_later(timeout, self.answer_connect)
        self.held_reply = (timer, socket, message)

    # Transports --------------------------------------------------------------------

    def attach(self, socket) -> None:
        """Deliver through ``socket`` (a BayeuxConsumer) from now on; None: queue."""
        if self.socket is socket:
            return
        if self.socket is not None:
            self.socket.sessions.discard(self)
            self.socket.became_idle()
        self.socket = socket
        if socket is not None:
            socket.sessions.add(self)
            for message in self.drain():
                socket.deliver(f"[{message}]")

    def detach(self, socket) -> None:
        if self.socket is socket:
            self.socket = None
            self.last_seen = self.server.loop.time()
        if self.held_reply is not None and self.held_reply[1] is socket:
            self.held_reply[0].cancel()
            self.held_reply = None


_servers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # hub -> its BayeuxServer


async def get_server() -> BayeuxServer:
    """The Bayeux server of the running event loop (with its hub), started on first use."""
    hub = await get_hub()
    server = _servers.get(hub)
    if server is None:
        server = _servers[hub] = BayeuxServer(hub)
    return server


class BayeuxServer:
    """The Bayeux sessions of one event loop, and the handling of their messages."""

    def __init__(self, hub) -> None:
        self.hub = hub
        self.loop = hub.loop
        self.sessions: dict[str, Session] = {}
        hub.spawn(self._sweep())

    # Messages ----------------------------------------------------------------------

    async def handle(self, messages: list, transport) -> tuple[dict, Session] | None:
        """Act on one payload's messages in order, sending each reply through
        ``transport.send_reply``. Returns the payload's /meta/connect message and its
        session, if it had one: the transport decides when to answer it."""
        connect = None
        for message in messages:
            try:
                channel = bayeux.check_message(message)
                if channel == bayeux.CONNECT:
                    session = self.session(message, transport)
                    connect = (message, session)
                    continue
                handler = META.get(channel)
                if handler is None:
                    if bayeux.is_meta(channel):
                        raise BayeuxError(404, "unknown_channel", channel)
                    handler = BayeuxServer.publish
                await handler(self, message, transport)
            except BayeuxError as error:
                transport.send_reply(bayeux.error_reply(message, error))
            except RealtimeError as error:
                transport.send_reply(bayeux.error_reply(message, BayeuxError.from_realtime(error)))
            except Exception:
                logger.exception("realtime: unexpected error handling a Bayeux message")
                transport.send_reply(bayeux.error_reply(message, BayeuxError(500, "internal_error")))
        return connect

    def session(self, message: dict, transport) -> Session:
        session = self.sessions.get(bayeux.client_id(message))
        if session is None:
            raise bayeux.session_unknown()
        if not session.rate.take():
            raise RateLimited("slow down")
        transport.use(session, message["channel"] == bayeux.CONNECT)
        session.last_seen = self.loop.time()
        return session

    def advice(self) -> dict:
        return {
            "reconnect": "retry",
            "interval": round(settings.BAYEUX_INTERVAL * 1000),
            "timeout": round(settings.BAYEUX_TIMEOUT * 1000),
        }

    def connect_reply(self, session: Session, message: dict) -> dict:
        if session.ended == "disconnect":
            return bayeux.reply(message, bayeux.CONNECT, True, advice={"reconnect": "none", "interval": 0})
        if session.ended is not None:
            return bayeux.error_reply(message, bayeux.session_unknown())
        return bayeux.reply(message, bayeux.CONNECT, True, advice=self.advice())

    def connect_now(self, session: Session, message: dict, batched: bool) -> tuple[bool, float]:
        """Whether to answer this /meta/connect at once, and how long to hold it if not.

        A connect still held for the session is answered now: this one takes over."""
        session.answer_connect(SUPERSEDED)
        timeout = bayeux.connect_timeout(message, settings.BAYEUX_TIMEOUT)
        first = not session.connected
        session.connected = True
        return first or batched or timeout <= 0 or bool(session.queue) or session.ended is not None, timeout

    async def handshake(self, message: dict, transport) -> None:
        types = message.get("supportedConnectionTypes")
        if types is not None and (
            not isinstance(types, list) or not set(bayeux.CONNECTION_TYPES).intersection(types)
        ):
            raise BayeuxError(301, "connection_types_unsupported", ",".join(bayeux.CONNECTION_TYPES))
        credentials = bayeux.ext(message).get("auth")
        if isinstance(credentials, dict) and "secret" in credentials and not transport.secrets_allowed:
            # Over GET the secret would be in the URL, and so in access logs.
            raise BayeuxError(403, "handshake_denied", "secret_in_url", {"reconnect": "none"})
        address = transport.address
        if not quotas.add_session(address):
            retry = {"reconnect": "handshake", "interval": round(settings.BAYEUX_MAX_INTERVAL * 1000)}
            raise BayeuxError(429, "too_many_sessions", settings.MAX_BAYEUX_SESSIONS_PER_ADDRESS, retry)
        try:
            if credentials is not None:
                principal = await actions.authenticate(protocol.parse_auth(None, credentials), address)
            elif await registry.anonymous_read_anywhere():
                principal = None
            else:
                raise BayeuxError(403, "handshake_denied", "authentication_required", {"reconnect": "none"})
        except RealtimeError as error:
            quotas.remove_session(address)
            transport.handshake_failed()
            raise BayeuxError(403, "handshake_denied", error.code.value, {"reconnect": "none"}) from None
        except BaseException:
            quotas.remove_session(address)
            raise
        session = Session(self, principal, address)
        self.sessions[session.bayeux_id] = session
        self.hub.add(session)
        quotas.add_subscriber(session, address)
        self.hub.watch_expiry(session, principal)
        events.connection_event(signals.connected, session, scope=None)
        if principal is not None:
            events.connection_event(signals.authenticated, session, refreshed=False)
        transport.use(session, False)
        transport.send_reply(
            bayeux.reply(
                message,
                bayeux.HANDSHAKE,
                version=bayeux.VERSION,
                supportedConnectionTypes=list(bayeux.CONNECTION_TYPES),
                clientId=session.bayeux_id,
                advice=self.advice(),
            )
        )

    async def subscribe(self, message: dict, transport) -> None:
        session = self.session(message, transport)
        channels = bayeux.subscriptions(message)
        since = _since(message) if len(channels) == 1 else None
        extra: dict = {}
        recovered: list[str] = []
        for channel in channels:
            if bayeux.is_meta(channel):
                raise BayeuxError(403, "subscribe_failed", channel)
            if bayeux.is_service(channel):
                continue  # nothing is broadcast there: a no-op, as in CometD
            name = bayeux.subscription_name(channel)
            try:
                result = await actions.subscribe(self.hub, session, name, since)
            except RealtimeError as error:
                raise BayeuxError.from_realtime(error, channel) from None
            extra.update(result.reply)
            recovered = result.frames
        fields: dict[str, Any] = {"subscription": message["subscription"]}
        if extra:
            fields["ext"] = {"realtime": extra}
        # No await from the subscription to here: what was recovered follows the reply.
        transport.send_reply(bayeux.reply(message, bayeux.SUBSCRIBE, True, **fields))
        session.deliver_frames(recovered)

    async def unsubscribe(self, message: dict, transport) -> None:
        session = self.session(message, transport)
        for channel in bayeux.subscriptions(message):
            if bayeux.is_meta(channel) or bayeux.is_service(channel):
                continue
            self.hub.unsubscribe(session, bayeux.subscription_name(channel), "client")
        transport.send_reply(
            bayeux.reply(message, bayeux.UNSUBSCRIBE, True, subscription=message["subscription"])
        )

    async def disconnect(self, message: dict, transport) -> None:
        session = self.session(message, transport)
        self.end(session, "disconnect")
        transport.send_reply(bayeux.reply(message, bayeux.DISCONNECT, True))

    async def publish(self, message: dict, transport) -> None:
        session = self.session(message, transport)
        channel = message["channel"]
        if "data" not in message:
            raise InvalidData("a publication needs data (it may be null)")
        if bayeux.is_service(channel):
            await self._call_service(session, message, transport)
            return
        name = bayeux.publish_name(channel)
        event = validate_event(bayeux.realtime_ext(message).get("event", bayeux.DEFAULT_EVENT))
        try:
            publication = await actions.publish(session.principal, name, event, message["data"], conn=session)
        except RealtimeError as error:
            raise BayeuxError.from_realtime(error, channel) from None
        fields = {}
        if publication.offset is not None:
            fields["ext"] = {"realtime": {"offset": publication.offset, "epoch": publication.epoch}}
        transport.send_reply(bayeux.reply(message, channel, True, **fields))

    async def _call_service(self, session: Session, message: dict, transport) -> None:
        channel = message["channel"]
        fields = {}
        try:
            result = await services.call(channel, message["data"], session.principal, session.client_id)
        except MethodNotFound:
            result = None  # acknowledged, and goes nowhere, as in CometD
        except RealtimeError as error:
            raise BayeuxError.from_realtime(error, channel) from None
        if result is not None:
            fields["data"] = result
        # The answer goes to the sender alone; nothing is broadcast on /service/**.
        transport.send_reply(bayeux.reply(message, channel, True, **fields))
        if fields:
            # CometD's WebSocket transport waits for a reply without data to stop the
            # request's timer (a reply with data answers the remote call only).
            transport.send_reply(bayeux.reply(message, channel, True))

    # Lifetimes ---------------------------------------------------------------------

    def end(self, session: Session, reason: str) -> None:
        """Forget ``session``: a later message with its clientId is told to handshake."""
        if session.ended is not None:
            return
        session.ended = reason
        self.sessions.pop(session.bayeux_id, None)
        self.hub.remove(session)
        quotas.remove_subscriber(session, session.address)
        quotas.remove_session(session.address)
        events.connection_event(signals.disconnected, session, code=None, reason=reason)
        session.queue = []
        session.answer_connect()
        if session.socket is not None:
            session.socket.sessions.discard(session)
            session.socket.became_idle()
            session.socket = None

    async def _sweep(self) -> None:
        while True:
            limit = settings.BAYEUX_MAX_INTERVAL
            await asyncio.sleep(max(0.25, min(limit / 4, 2.0)))
            now = self.loop.time()
            for session in list(self.sessions.values()):
                idle = session.socket is None and session.waiter is None
                if idle and now - session.last_seen > limit:
                    self.end(session, "expired")


def _since(message: dict) -> Position | None:
    """``ext.realtime.since = {offset, epoch}`` on a subscribe: recover from history."""
    since = bayeux.realtime_ext(message).get("since")
    return None if since is None else protocol.parse_since(since, "ext.realtime.since")


META = {
    bayeux.HANDSHAKE: BayeuxServer.handshake,
    bayeux.SUBSCRIBE: BayeuxServer.subscribe,
    bayeux.UNSUBSCRIBE: BayeuxServer.unsubscribe,
    bayeux.DISCONNECT: BayeuxServer.disconnect,
}
