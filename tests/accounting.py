"""Clients that account for every publication while Redis fails: each publish's replies,
each delivery and notice, in the order they came.

``Publisher`` publishes one at a time with an idempotency key each, retrying
``unknown_outcome`` with the same key until Redis answers ``ok`` for it, and records
every reply. ``Subscriber`` records
what it receives; on a ``missed`` notice it recovers a channel with history the way the
JS client does (unsubscribe, subscribe with ``since`` its last position, and drop a
publication at or before a position it has seen). ``delivery_report`` then checks a
subscriber's channel against what was acknowledged.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from dataclasses import dataclass, field

from websockets.asyncio.client import connect

PUBLISH_ERRORS = {"unavailable", "unknown_outcome"}


class Connection:
    """One native-protocol WebSocket: replies matched by id, every frame handed to ``on_frame``."""

    def __init__(self, url: str, on_frame=None) -> None:
        self.url = url
        self.on_frame = on_frame or (lambda frame: None)
        self.pending: dict[int, asyncio.Future] = {}
        self.ids = itertools.count(1)
        self.ws = None
        self.reader: asyncio.Task | None = None

    async def open(self) -> Connection:
        self.ws = await connect(self.url, max_size=None, compression=None, open_timeout=20)
        self.reader = asyncio.get_running_loop().create_task(self._read())
        return self

    async def _read(self) -> None:
        async for text in self.ws:
            frame = json.loads(text)
            self.on_frame(frame)
            waiter = self.pending.get(frame.get("id")) if ("ok" in frame or "err" in frame) else None
            if waiter is not None and not waiter.done():
                waiter.set_result(frame)

    def send(self, command: str, body) -> int:
        """Send without waiting; the reply comes to ``on_frame`` (and ``wait``) by id."""
        request_id = next(self.ids)
        self.pending[request_id] = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().create_task(self.ws.send(json.dumps({command: body, "id": request_id})))
        return request_id

    async def wait(self, request_id: int, timeout: float = 60) -> dict:
        try:
            return await asyncio.wait_for(asyncio.shield(self.pending[request_id]), timeout)
        finally:
            self.pending.pop(request_id, None)

    async def request(self, command: str, body, timeout: float = 60) -> dict:
        return await self.wait(self.send(command, body), timeout)

    async def close(self) -> None:
        if self.reader is not None:
            self.reader.cancel()
        if self.ws is not None:
            await self.ws.close()


@dataclass
class Outcome:
    channel: str
    data: int
    key: str
    replies: list[str] = field(default_factory=list)  # "ok" or the error code, per attempt
    offset: int | None = None
    sent_at: float = 0.0
    answered_at: float = 0.0

    @property
    def final(self) -> str:
        """ok, unavailable (not published), or unknown_outcome (retries ran out)."""
        if self.replies[-1] == "ok" or "unknown_outcome" not in self.replies:
            return self.replies[-1]
        return "unknown_outcome"


class Publisher:
    """Publishes one at a time; ``unknown_outcome`` is retried with the same key."""

    def __init__(self, url: str, secret: str, tag: str) -> None:
        self.connection = Connection(url)
        self.secret = secret
        self.tag = tag
        self.outcomes: list[Outcome] = []

    async def start(self) -> Publisher:
        await self.connection.open()
        assert (await self.connection.request("auth", {"secret": self.secret}))["ok"]
        return self

    async def publish(self, channel: str, data: int, retries: int = 10) -> Outcome:
        outcome = Outcome(channel, data, f"{self.tag}-{channel}-{data}", sent_at=time.monotonic())
        self.outcomes.append(outcome)
        body = {"channel": channel, "event": "e", "data": data, "idempotency_key": outcome.key}
        for _ in range(retries):
            reply = await self.connection.request("publish", body)
            outcome.replies.append("ok" if reply.get("ok") else reply["err"])
            if reply.get("ok"):
                outcome.offset = reply.get("offset")
                break
            # After an unknown outcome, `unavailable` only says that this retry was not run:
            # keep asking until Redis answers for the key.
            if "unknown_outcome" not in outcome.replies:
                break
            await asyncio.sleep(0.2)
        outcome.answered_at = time.monotonic()
        return outcome

    def acknowledged(self, channel: str) -> list[int]:
        return [o.data for o in self.outcomes if o.channel == channel and o.final == "ok"]

    def refused(self, channel: str) -> list[int]:
        return [o.data for o in self.outcomes if o.channel == channel and o.final == "unavailable"]

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for outcome in self.outcomes:
            for reply in outcome.replies:
                counts[reply] = counts.get(reply, 0) + 1
        return counts


class Subscriber:
    """Records, per channel, a list of events: ``("pub", data)``, ``("missed", reason)``,
    ``("recovered", bool)``, in arrival order."""

    def __init__(self, url: str, secret: str | None, channels: dict[str, bool]) -> None:
        """``channels``: name -> whether it keeps history (recovered after ``missed``)."""
        self.connection = Connection(url, self.on_frame)
        self.secret = secret
        self.history = channels
        self.events: dict[str, list[tuple]] = {name: [] for name in channels}
        self.positions: dict[str, tuple[int, str]] = {}
        self.renewals: dict[int, str] = {}
        self.dropped = 0  # publications at or before a position already seen (the JS rule)
        self.tasks: set[asyncio.Task] = set()

    async def start(self) -> Subscriber:
        await self.connection.open()
        if self.secret:
            assert (await self.connection.request("auth", {"secret": self.secret}))["ok"]
        for name in self.history:
            reply = await self.connection.request("subscribe", {"channel": name})
            assert reply.get("ok"), reply
            if "offset" in reply:
                self.positions[name] = (reply["offset"], reply["epoch"])
        return self

    def on_frame(self, frame: dict) -> None:
        if "message" in frame:
            message = frame["message"]
            name = message["channel"]
            offset = message.get("offset")
            if offset is not None:
                known = self.positions.get(name)
                if known and known[1] == message["epoch"] and offset <= known[0]:
                    self.dropped += 1
                    return
                self.positions[name] = (offset, message["epoch"])
            self.events[name].append(("pub", message["data"]))
        elif "missed" in frame:
            name = frame["missed"]["channel"]
            self.events[name].append(("missed", frame["missed"]["reason"]))
            if self.history.get(name) and name in self.positions:
                task = asyncio.get_running_loop().create_task(self._recover(name))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
        elif frame.get("id") in self.renewals:
            name = self.renewals.pop(frame["id"])
            self.events[name].append(
                ("recovered", frame.get("recovered") if frame.get("ok") else frame["err"])
            )
            if frame.get("ok") and frame.get("recovered") is False:
                self.positions[name] = (frame["offset"], frame["epoch"])

    async def _recover(self, name: str) -> None:
        await self.connection.request("unsubscribe", {"channel": name})
        for attempt in range(60):
            offset, epoch = self.positions[name]
            body = {"channel": name, "since": {"offset": offset, "epoch": epoch}}
            request_id = self.connection.send("subscribe", body)
            self.renewals[request_id] = name
            if (await self.connection.wait(request_id)).get("err") != "unavailable":
                return
            # Redis is away again: try again, as the JS client does.
            await asyncio.sleep(min(5.0, 0.2 * 2**attempt))

    def received(self, name: str) -> list[int]:
        return [event[1] for event in self.events[name] if event[0] == "pub"]

    def notices(self, name: str) -> list[tuple]:
        return [event for event in self.events[name] if event[0] != "pub"]


def delivery_report(acknowledged: list[int], refused: list[int], events: list[tuple]) -> dict:
    """What one subscriber got on one channel, against what publishers were told.

    ``lost``: acknowledged but never received. ``unexplained``: lost ones that no
    ``missed`` notice after them accounts for. ``out_of_order``: received publications
    not in the order they were acknowledged. ``twice``: received more than once.
    ``refused_delivered``: answered ``unavailable`` yet delivered.
    """
    received = [event[1] for event in events if event[0] == "pub"]
    seen = set(received)
    order = {data: index for index, data in enumerate(acknowledged)}
    ranks = [order[data] for data in received if data in order]
    missed_at = [index for index, event in enumerate(events) if event[0] == "missed"]
    lost = [data for data in acknowledged if data not in seen]
    unexplained = []
    for data in lost:
        # Lost ones must come after every publication received before some missed notice
        # and before every one received after it.
        explained = False
        for index in missed_at:
            before = [order[e[1]] for e in events[:index] if e[0] == "pub" and e[1] in order]
            after = [order[e[1]] for e in events[index:] if e[0] == "pub" and e[1] in order]
            if all(rank < order[data] for rank in before) and all(rank > order[data] for rank in after):
                explained = True
                break
        if not explained:
            unexplained.append(data)
    return {
        "acknowledged": len(acknowledged),
        "received": len(received),
        "lost": lost,
        "unexplained": unexplained,
        "out_of_order": sum(1 for a, b in itertools.pairwise(ranks) if b < a),
        "twice": len(received) - len(seen),
        "refused_delivered": sorted(seen & set(refused)),
        "missed_notices": len(missed_at),
        "recoveries": [event[1] for event in events if event[0] == "recovered"],
    }
