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

import functools
from typing import ClassVar

from channels.exceptions import StopConsumer


class Consumer:
    """Subclasses set ``EVENTS``: ASGI message type -> handler (a coroutine function)."""

    EVENTS: ClassVar[dict] = {}

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
