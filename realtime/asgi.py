"""The base of realtime's WebSocket consumers: one instance per connection, and a loop.

It does what realtime needs of Channels' ``AsyncConsumer`` and no more, because the rest
costs on every connection and every frame: ``AsyncConsumer`` asks for a channel layer,
creates an asyncio task (and a wait) for each message it receives, and makes a thread hop
before each handler. Here each connection awaits ``receive()`` in a plain loop and calls
the handler of the three WebSocket events directly. Consumers stay ordinary ASGI
applications, so Channels' ``URLRouter`` mounts them and ``WebsocketCommunicator`` (and
``realtime.testing``) tests them as before.

What both consumers (native and Bayeux) share lives here: opening with the origin
check and the connection limits, the stale timeout, the close paths (after queued
frames; at once for slow readers), and the counters of malformed frames and failed
authentications that close a connection.
"""

from __future__ import annotations

import asyncio
import functools
import logging

from channels.exceptions import StopConsumer

from . import stats
from .addresses import client_address
from .conf import settings
from .errors import CloseCode
from .origins import origin_allowed, origin_from_scope
from .outbox import Outbox, frame_writer
from .quotas import quotas
from .stopping import forget, watch

logger = logging.getLogger("realtime")


class Consumer:
    """Subclasses implement :meth:`websocket_connect` (calling :meth:`open`) and
    :meth:`websocket_receive`, and :meth:`let_go` for what they undo when the connection
    stops being served (leave the hub, release sessions).

    Sends go through ``self.outbox`` (a ``realtime.outbox.Outbox``, made by :meth:`open`,
    with :meth:`too_slow` as its overflow callback). :meth:`is_stale` says whether the
    connection holds nothing yet (``STALE_TIMEOUT``).
    """

    closing = False
    outbox: Outbox | None = None
    _task: asyncio.Task | None = None
    _receiving = False
    _close_sent = False
    _receive_cancelled = False
    _closing: asyncio.Task | None = None
    # Which protocol the connection speaks, for the metrics ("native", "bayeux").
    protocol_name = "native"
    invalid_frames = 0
    auth_failures = 0
    # Who ended the connection: the code (and reason) the server closed with, or the
    # client's close frame (code, reason) as the server passed it on.
    close_code: int | None = None
    close_reason = ""
    client_close: tuple[int | None, str] | None = None
    # The client's address (realtime.addresses), once opened; None if unknown.
    address: str | None = None
    admitted = False
    stale_timer: asyncio.TimerHandle | None = None
    idle_since = 0.0

    async def __call__(self, scope: dict, receive, send) -> None:
        self.scope = scope
        self.base_send = send
        self._task = asyncio.current_task()
        try:
            await self._serve(receive)
        finally:
            self._release()
            self.finished()

    async def _serve(self, receive) -> None:
        try:
            while True:
                self._receiving = True
                message = await receive()
                self._receiving = False
                kind = message["type"]
                if kind == "websocket.receive":
                    await self.websocket_receive(message)
                elif kind == "websocket.connect":
                    await self.websocket_connect(message)
                elif kind == "websocket.disconnect":
                    await self.websocket_disconnect(message)
                if self._close_sent:
                    break
        except StopConsumer:
            return
        except asyncio.CancelledError:
            if not self._receive_cancelled or self._task.uncancel():
                await self._cancelled()
                raise
            # Cancelled by _end_after_close alone: the connection is over, return quietly.
        # We closed. Return once the server has the close: one that resolves it only when
        # no receive() is pending (granian) drops its code if the application returns first.
        await self.outbox.flush()
        if self._closing is not None:
            await asyncio.wait([self._closing])

    async def _cancelled(self) -> None:
        """The server cancelled the application (daphne does on SIGTERM) with the socket
        still open: say so with a close frame (4009) rather than dropping it unannounced.
        uvicorn closes the sockets itself (1012) before it would cancel anything."""
        if self.outbox is None or self.closing:
            return
        self.closing = True
        self.close_code, self.close_reason = int(CloseCode.SHUTTING_DOWN), _name_of(CloseCode.SHUTTING_DOWN)
        self.let_go("closed")
        self.outbox.cancel()
        try:
            await self.base_send({"type": "websocket.close", "code": int(CloseCode.SHUTTING_DOWN)})
        except BaseException:
            pass  # the socket is gone already; the server is stopping anyway

    def _release(self) -> None:
        if self.stale_timer is not None:
            self.stale_timer.cancel()
            self.stale_timer = None
        if self.admitted:
            self.admitted = False
            quotas.release(self.address)
            forget(self)

    @classmethod
    def as_asgi(cls, **initkwargs):
        """An ASGI application that serves each connection with a new instance."""

        async def app(scope, receive, send):
            return await cls(**initkwargs)(scope, receive, send)

        app.consumer_class = cls
        app.consumer_initkwargs = initkwargs
        functools.update_wrapper(app, cls, updated=())
        return app

    # ASGI events -------------------------------------------------------------------

    async def websocket_connect(self, message: dict) -> None:
        await self.open()

    async def websocket_receive(self, message: dict) -> None:
        raise NotImplementedError

    async def websocket_disconnect(self, message: dict) -> None:
        """The client went away: undo, stop sending, end the loop."""
        if not self.closing:
            stats.counters.closed("client", message.get("code"))
            self.client_close = (message.get("code"), message.get("reason") or "")
        self.closing = True
        self.let_go("closed")
        if self.outbox is not None:
            self.outbox.cancel()
        raise StopConsumer()

    # Opening -----------------------------------------------------------------------

    async def open(self) -> bool:
        """Accept the socket, with its outbox. A browser origin that may not connect is
        closed at once (4003), and so is a connection over ``MAX_CONNECTIONS`` (4007) or
        ``MAX_CONNECTIONS_PER_ADDRESS`` (4008); False is returned then.

        Accepted first, then closed, because a client can read a close code but not the
        status of a refused handshake (browsers hide it).
        """
        self.outbox = Outbox(
            self.base_send, settings.MAX_PENDING_FRAMES, self.too_slow, frame_writer(self.scope)
        )
        await self.base_send({"type": "websocket.accept"})
        if not origin_allowed(origin_from_scope(self.scope)):
            await self.close(CloseCode.ORIGIN_NOT_ALLOWED)
            return False
        self.address = client_address(self.scope)
        refused = quotas.admit(self.address)
        if refused is not None:
            await self.close(refused)
            return False
        self.admitted = True
        watch(self)
        self.became_idle()
        return True

    # Stale connections -------------------------------------------------------------

    def is_stale(self) -> bool:
        """Whether the connection holds nothing (no authentication, no subscription)."""
        return False

    def became_idle(self) -> None:
        """The connection may hold nothing now: close it (4006) if it still holds nothing
        ``STALE_TIMEOUT`` seconds from now. Cheap: one timer, and none while one is set."""
        timeout = settings.STALE_TIMEOUT
        if not timeout or self.closing:
            return
        loop = asyncio.get_running_loop()
        self.idle_since = loop.time()
        if self.stale_timer is None:
            self.stale_timer = loop.call_later(timeout, self._stale_check)

    def _stale_check(self) -> None:
        self.stale_timer = None
        if self.closing or not self.is_stale():
            return
        loop = asyncio.get_running_loop()
        left = self.idle_since + settings.STALE_TIMEOUT - loop.time()
        if left > 0:  # idle again since the timer was set, but not for long enough yet
            self.stale_timer = loop.call_later(left, self._stale_check)
            return
        logger.debug("realtime: closing a %s that holds nothing", type(self).__name__)
        self.close_soon(CloseCode.STALE)

    # Counting misbehaviour ---------------------------------------------------------

    def frame_was_malformed(self) -> None:
        """One more malformed frame in a row; ``MAX_INVALID_FRAMES`` of them close (4001)."""
        self.invalid_frames += 1
        if self.invalid_frames >= settings.MAX_INVALID_FRAMES:
            self.close_soon(CloseCode.TOO_MANY_INVALID_FRAMES)

    def frame_was_valid(self) -> None:
        self.invalid_frames = 0

    def authentication_failed(self) -> None:
        """One more failed authentication; ``MAX_AUTH_FAILURES`` of them close (4002)."""
        stats.counters.auth_failed(self.protocol_name)
        self.auth_failures += 1
        if self.auth_failures >= settings.MAX_AUTH_FAILURES:
            self.close_soon(CloseCode.TOO_MANY_AUTH_FAILURES)

    # Closing -----------------------------------------------------------------------

    def finished(self) -> None:
        """The connection is over, whoever ended it (called once, as the application returns)."""

    def let_go(self, reason: str) -> None:
        """Stop serving this connection's subscriptions; ``reason`` is ``closed`` or ``too_slow``."""

    def _stop_serving(self) -> bool:
        """Ignore the client from now on (frames already received included); False if
        that had begun already."""
        if self.closing:
            return False
        self.closing = True
        self.let_go("closed")
        return True

    async def close(self, code: int) -> None:
        """Close after every queued frame has gone out; ignore the client from now on."""
        if self._stop_serving():
            await self._close_after_queued(code)

    def close_soon(self, code: int, reason: str = "") -> None:
        """:meth:`close` from code that must not await (the client is ignored at once).

        ``reason`` goes into the close frame on servers that send one (uvicorn; daphne
        sends the code alone)."""
        if self._stop_serving():
            asyncio.get_running_loop().create_task(self._close_after_queued(code, reason))

    async def _close_after_queued(self, code: int, reason: str = "") -> None:
        self.close_code = int(code)
        self.close_reason = reason or _name_of(code)
        stats.counters.closed("server", int(code))
        await self.outbox.flush()
        message = {"type": "websocket.close", "code": int(code)}
        if reason:
            message["reason"] = reason
        self.outbox.push_message(message)
        self.outbox.closed = True
        self._end_after_close()

    def _end_after_close(self) -> None:
        """The close is with the server: end the receive loop, so the application returns.

        Some servers (granian) complete a close only once no ``receive()`` is pending, so a
        client that sends nothing more would otherwise never see it. A loop that is in a
        handler returns when the handler does; one that waits in ``receive()`` is cancelled.
        """
        self._close_sent = True
        if self._receiving and self._task is not None and self._task is not asyncio.current_task():
            self._receive_cancelled = True
            self._task.cancel()

    def too_slow(self) -> None:
        """The outbox overflowed: frames were lost, so close at once (4004)."""
        logger.info("realtime: closing a %s that reads too slowly", type(self).__name__)
        stats.counters.too_slow += 1
        stats.counters.closed("server", int(CloseCode.TOO_SLOW))
        self.close_code = int(CloseCode.TOO_SLOW)
        self.close_reason = _name_of(CloseCode.TOO_SLOW)
        self.closing = True
        self.let_go("too_slow")
        self._closing = asyncio.get_running_loop().create_task(self._send_close(CloseCode.TOO_SLOW))

    async def _send_close(self, code: int) -> None:
        try:
            sent = self.base_send({"type": "websocket.close", "code": int(code)})
            self._end_after_close()
            await sent
        except Exception:
            pass  # the client is gone already


def _name_of(code: int) -> str:
    """``too_many_invalid_frames`` for 4001: the reason the lifecycle signals report."""
    try:
        return CloseCode(code).name.lower()
    except ValueError:
        return ""
