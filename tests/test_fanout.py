"""The fan-out encodes a publication once, however many local subscribers it has.

In-process: the hub of this test's event loop with the LocalBroker (the in-memory
layer), and connections that are fakes around a real ``Outbox``.
"""

import json

import pytest

from realtime import protocol
from realtime.outbox import Outbox
from realtime.publishing import send_publication
from realtime.registry import ChannelInfo
from realtime.runtime import get_hub

SUBSCRIBERS = 50


class Connection:
    """What the hub needs from a connection (``hub.Subscriber``), sending into a list."""

    def __init__(self, number: int) -> None:
        self.principal = None
        self.subscriptions: set[str] = set()
        self.client_id = f"client-{number}"
        self.protocol_name = "native"
        # The policy's cached decisions (hub.Subscriber): none yet.
        self.readable: dict[str, bool] = {}
        self.writable: dict[str, str | None] = {}
        self.sent: list[str] = []
        self.outbox = Outbox(self._send, limit=10, on_overflow=lambda: None)

    async def _send(self, message: dict) -> None:
        self.sent.append(message["text"])

    def push(self, frame: str) -> None:
        self.outbox.push(frame)

    def drop_subscription(self, name: str, reason: str) -> None:
        raise AssertionError(f"unexpected drop of {name}: {reason}")

    def drop_principal(self, reason: str) -> None:
        raise AssertionError(f"unexpected logout: {reason}")


class Counting:
    """Wraps a function and counts its calls."""

    def __init__(self, function) -> None:
        self.function = function
        self.calls = 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.function(*args, **kwargs)


@pytest.mark.asyncio
@pytest.mark.usefixtures("in_memory_layer")
@pytest.mark.parametrize("history_size", [0, 10], ids=["plain", "history"])
async def test_a_publication_is_encoded_once_and_every_subscriber_gets_the_same_string(
    monkeypatch, history_size
):
    hub = await get_hub()
    assert hub.broker.kind == "local"
    connections = [Connection(n) for n in range(SUBSCRIBERS)]
    for conn in connections:
        hub.add(conn)
        await hub.subscribe(conn, "fanout")
    info = ChannelInfo(1, "fanout", False, False, history_size=history_size)
    dumps = Counting(json.dumps)
    encode = Counting(protocol.encode)
    monkeypatch.setattr(json, "dumps", dumps)
    monkeypatch.setattr(protocol, "encode", encode)

    try:
        await send_publication("fanout", "e", {"text": "hi", "n": [1, 2, 3]}, info=info)
        await send_publication("fanout", "e", "second", info=info)
    finally:
        for conn in connections:
            hub.remove(conn)
        hub.stop()

    assert (encode.calls, dumps.calls) == (2, 2)  # one per publication, not per subscriber
    first, second = connections[0].sent
    assert json.loads(first)["message"]["data"] == {"text": "hi", "n": [1, 2, 3]}
    assert json.loads(second)["message"]["data"] == "second"
    for conn in connections:
        assert len(conn.sent) == 2
        assert conn.sent[0] is first and conn.sent[1] is second
