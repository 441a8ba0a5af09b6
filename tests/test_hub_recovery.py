"""The hub's hand-over from history to live delivery, without a server (realtime.hub)."""

import asyncio

from realtime.hub import SKIP_SECONDS, Hub


class Connection:
    def __init__(self):
        self.principal = None
        self.subscriptions = set()
        self.client_id = "c"
        self.frames = []

    def push(self, frame):
        self.frames.append(frame)


class Broker:
    async def listen(self, name, hub):
        pass


def recovered_connection(mark):
    loop = asyncio.new_event_loop()
    hub = Hub(loop, Broker())
    conn, other = Connection(), Connection()
    loop.run_until_complete(hub.subscribe(conn, "news", hold=True))
    loop.run_until_complete(hub.subscribe(other, "news"))
    hub.stop_holding(conn, "news")
    hub.sent_up_to(conn, "news", mark)
    return hub, conn, other, loop


def test_live_copies_of_what_the_history_gave_are_dropped_until_a_newer_one_arrives():
    hub, conn, other, loop = recovered_connection(5)
    for offset in (4, 5, 6, 3):
        hub.deliver("news", f"p{offset}", "exact", None, offset)
    assert conn.frames == ["p6", "p3"]  # after 6, nothing more is dropped
    assert other.frames == ["p4", "p5", "p6", "p3"]
    assert "news" not in hub.skipping
    loop.close()


def test_notices_without_an_offset_are_never_dropped():
    hub, conn, _, loop = recovered_connection(5)
    hub.deliver("news", "join", "exact", None, None)
    hub.deliver("news", "p5", "exact", None, 5)
    assert conn.frames == ["join"]
    loop.close()


def test_the_mark_is_forgotten_after_a_while_and_on_unsubscribe(monkeypatch):
    hub, conn, _, loop = recovered_connection(5)
    now = loop.time()
    monkeypatch.setattr(loop, "time", lambda: now + SKIP_SECONDS + 1)
    hub.deliver("news", "p1", "exact", None, 1)  # a new epoch after a flush starts again at 1
    assert conn.frames == ["p1"]

    hub, conn, _, loop2 = recovered_connection(5)
    hub.unsubscribe(conn, "news")
    assert "news" not in hub.skipping
    loop.close()
    loop2.close()
