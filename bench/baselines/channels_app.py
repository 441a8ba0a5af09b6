"""The plain Channels baseline: a consumer of the tutorial kind, on the pub/sub layer.

    REDIS_URL=redis://... daphne bench.baselines.channels_app:application

``group_add`` on subscribe, one ``group_send`` per publish, and a handler per event
that JSON-encodes the frame and sends it, as the Channels tutorial's chat consumer
does. It answers realtime's native frames (docs/protocol.md) so that the same load
generator drives it: ``auth`` is accepted without a check; there is no validation,
no origin check and no ``AuthMiddlewareStack``, which makes it a generous baseline.
"""

from __future__ import annotations

import json
import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.baselines.channels_settings")
django.setup()

from channels.generic.websocket import AsyncWebsocketConsumer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402


def group(channel: str) -> str:
    # Layer group names allow [a-zA-Z0-9._-]; the bench's names are bench and bench/<n>.
    return channel.replace("/", ".")


class BenchConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        self.groups_joined: set[str] = set()
        await self.accept()

    async def receive(self, text_data=None, bytes_data=None) -> None:
        frame = json.loads(text_data)
        if "subscribe" in frame:
            name = group(frame["subscribe"]["channel"])
            await self.channel_layer.group_add(name, self.channel_name)
            self.groups_joined.add(name)
        elif "publish" in frame:
            pub = frame["publish"]
            await self.channel_layer.group_send(
                group(pub["channel"]),
                {
                    "type": "bench.message",
                    "channel": pub["channel"],
                    "event": pub["event"],
                    "data": pub["data"],
                },
            )
        reply = {"ok": True, "id": frame["id"]} if "id" in frame else {"ok": True}
        await self.send(text_data=json.dumps(reply))

    async def bench_message(self, event: dict) -> None:
        message = {"channel": event["channel"], "event": event["event"], "data": event["data"]}
        await self.send(text_data=json.dumps({"message": message}))

    async def disconnect(self, code) -> None:
        for name in getattr(self, "groups_joined", ()):
            await self.channel_layer.group_discard(name, self.channel_name)


application = ProtocolTypeRouter({"websocket": URLRouter([path("ws", BenchConsumer.as_asgi())])})
