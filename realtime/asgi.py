"""The base of realtime's WebSocket consumers: one instance per connection, and a loop.

It does what realtime needs of Channels' ``AsyncConsumer`` and no more, because the rest
costs on every connection and every frame: ``AsyncConsumer`` asks for a channel layer,
creates an asyncio task (and a wait) for each message it receives, and makes a thread hop
before each handler. Here each connection awaits ``receive()`` in a plain loop and hands
the message to the handler its type names in ``EVENTS``. Consumers stay ordinary ASGI
applications, so Channels' ``URLRouter`` mounts them and ``WebsocketCommunicator`` tests
them as before.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import ClassVar

from channels.exceptions import StopConsumer

from .conf import settings
from .errors import CloseCode
from .origins import origin_allowed, origin_from_scope
from .outbox import Outbox

logger = logging.getLogger("realtime")


class Consumer:
    """Subclasses set ``EVENTS``: ASGI message type -> handler (a coroutine function).

    Sends go through ``self.outbox`` (a ``realtime.outbox.Outbox``, made by :meth:`open`,
    with :meth:`too_slow` as its overflow callback). ``let_go`` is what the subclass
    undoes when its connection stops being served (leave the hub, release sessions).
    """

    EVENTS: ClassVar[dict] = {}
    closing = False

    async def __call__(self, scope: dict, receive, send) -> None:
        self.scope = scope
        self.base_send = send
        events = self.EVENTS
        try:
            while True:
                message = await receive()
                handler = events.get(message["type"])
                if handler is not None:
                    await handler(self, message)
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

    async def open(self) -> bool:
        """Accept the socket, with its outbox; a browser origin that may not connect is
        closed at once (4003), and False returned."""
        self.outbox = Outbox(self.base_send, settings.MAX_PENDING_FRAMES, self.too_slow)
        await self.base_send({"type": "websocket.accept"})
        if not origin_allowed(origin_from_scope(self.scope)):
            await self.close(CloseCode.ORIGIN_NOT_ALLOWED)
            return False
        return True

    def let_go(self, reason: str) -> None:
        """Stop serving this connection's subscriptions; ``reason`` is ``closed`` or ``too_slow``."""

    async def close(self, code: int) -> None:
        """Close after every queued frame has gone out; ignore the client from now on."""
        if self.closing:
            return
        self.closing = True
        self.let_go("closed")
        await self.outbox.flush()
        self.outbox.push_message({"type": "websocket.close", "code": int(code)})
        self.outbox.closed = True

    def close_soon(self, code: int) -> None:
        asyncio.get_running_loop().create_task(self.close(code))

    def too_slow(self) -> None:
        """The outbox overflowed: frames were lost, so close at once (4004)."""
        logger.info("realtime: closing a %s that reads too slowly", type(self).__name__)
        self.closing = True
        self.let_go("too_slow")
        asyncio.get_running_loop().create_task(self._send_close(CloseCode.TOO_SLOW))

    async def _send_close(self, code: int) -> None:
        try:
            await self.base_send({"type": "websocket.close", "code": int(code)})
        except Exception:
            pass  # the client is gone already
