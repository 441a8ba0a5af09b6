"""The base of realtime's WebSocket consumers: one instance per connection, and a loop.

It does what realtime needs of Channels' ``AsyncConsumer`` and no more, because the rest
costs on every connection and every frame: ``AsyncConsumer`` asks for a channel layer,
creates an asyncio task (and a wait) for each message it receives, and makes a thread hop
before each handler. Here each connection awaits ``receive()`` in a plain loop and calls
the handler of the three WebSocket events directly. Consumers stay ordinary ASGI
applications, so Channels' ``URLRouter`` mounts them and ``WebsocketCommunicator`` (and
``realtime.testing``) tests them as before.

What both consumers (native and Bayeux) share lives here: opening with the origin
check, the close paths (after queued frames; at once for slow readers), and the
counters of malformed frames and failed authentications that close a connection.
"""

from __future__ import annotations

import asyncio
import functools
import logging

from channels.exceptions import StopConsumer

from .conf import settings
from .errors import CloseCode
from .origins import origin_allowed, origin_from_scope
from .outbox import Outbox

logger = logging.getLogger("realtime")


class Consumer:
    """Subclasses implement :meth:`websocket_connect` (calling :meth:`open`) and
    :meth:`websocket_receive`, and :meth:`let_go` for what they undo when the connection
    stops being served (leave the hub, release sessions).

    Sends go through ``self.outbox`` (a ``realtime.outbox.Outbox``, made by :meth:`open`,
    with :meth:`too_slow` as its overflow callback).
    """

    closing = False
    outbox: Outbox | None = None
    invalid_frames = 0
    auth_failures = 0
    # The close code this side sent, if it closed the connection.
    close_code: int | None = None

    async def __call__(self, scope: dict, receive, send) -> None:
        self.scope = scope
        self.base_send = send
        try:
            while True:
                message = await receive()
                kind = message["type"]
                if kind == "websocket.receive":
                    await self.websocket_receive(message)
                elif kind == "websocket.connect":
                    await self.websocket_connect(message)
                elif kind == "websocket.disconnect":
                    await self.websocket_disconnect(message)
        except StopConsumer:
            pass

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
        self.closing = True
        self.let_go("closed")
        if self.outbox is not None:
            self.outbox.cancel()
        raise StopConsumer()

    # Opening -----------------------------------------------------------------------

    async def open(self) -> bool:
        """Accept the socket, with its outbox; a browser origin that may not connect is
        closed at once (4003), and False returned."""
        self.outbox = Outbox(self.base_send, settings.MAX_PENDING_FRAMES, self.too_slow)
        await self.base_send({"type": "websocket.accept"})
        if not origin_allowed(origin_from_scope(self.scope)):
            await self.close(CloseCode.ORIGIN_NOT_ALLOWED)
            return False
        return True

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
        self.auth_failures += 1
        if self.auth_failures >= settings.MAX_AUTH_FAILURES:
            self.close_soon(CloseCode.TOO_MANY_AUTH_FAILURES)

    # Closing -----------------------------------------------------------------------

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

    def close_soon(self, code: int) -> None:
        """:meth:`close` from code that must not await (the client is ignored at once)."""
        if self._stop_serving():
            asyncio.get_running_loop().create_task(self._close_after_queued(code))

    async def _close_after_queued(self, code: int) -> None:
        self.close_code = int(code)
        await self.outbox.flush()
        self.outbox.push_message({"type": "websocket.close", "code": int(code)})
        self.outbox.closed = True

    def too_slow(self) -> None:
        """The outbox overflowed: frames were lost, so close at once (4004)."""
        logger.info("realtime: closing a %s that reads too slowly", type(self).__name__)
        self.close_code = int(CloseCode.TOO_SLOW)
        self.closing = True
        self.let_go("too_slow")
        asyncio.get_running_loop().create_task(self._send_close(CloseCode.TOO_SLOW))

    async def _send_close(self, code: int) -> None:
        try:
            await self.base_send({"type": "websocket.close", "code": int(code)})
        except Exception:
            pass  # the client is gone already
