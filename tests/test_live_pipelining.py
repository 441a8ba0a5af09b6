"""Publishes sent one after the other without waiting are pipelined: each reaches Redis
before the next frame is read, over one pipelined connection per Redis host, so they
keep their order, and the replies keep the frames' order (docs/protocol.md)."""

import pytest

pytestmark = [pytest.mark.live, pytest.mark.usefixtures("redis_layer")]

COUNT = 120  # under the default RATE_BURST of the suite's daphne server


@pytest.fixture(params=["daphne", "uvicorn-realtime"])
def any_server(request, server, uvicorn_realtime_pipelining_server):
    return server if request.param == "daphne" else uvicorn_realtime_pipelining_server


@pytest.fixture(scope="session")
def uvicorn_realtime_pipelining_server(request, service_dir, redis_server, test_database):
    from tests.services import AsgiServer

    server = AsgiServer(
        service_dir,
        database=test_database,
        redis_url=redis_server.url,
        server="uvicorn-realtime",
        realtime={"RATE_LIMIT": 1_000_000, "RATE_BURST": 1_000_000},
    )
    request.addfinalizer(server.stop)
    return server.start()


def test_publishes_in_a_row_keep_their_order_and_their_replies_too(
    any_server, connect, make_key, make_channel, uid
):
    plain = make_channel(f"plain-{uid}", anonymous_read=True).name
    kept = make_channel(f"kept-{uid}", anonymous_read=True, history_size=1000).name
    subscriber = connect(any_server)
    assert subscriber.subscribe(plain)["ok"] is True
    first = subscriber.subscribe(kept)
    publisher = connect(any_server)
    assert publisher.auth(make_key())["ok"] is True

    # Every frame at once: publishes on both channels, a ping and a refused publish among them.
    for n in range(COUNT):
        channel = plain if n % 2 else kept
        publisher.send({"publish": {"channel": channel, "event": "n", "data": n}, "id": n})
        if n == COUNT // 2:
            publisher.send({"ping": True, "id": "ping"})
            publisher.send({"publish": {"channel": "nowhere-" + uid, "event": "n", "data": 0}, "id": "bad"})
    replies = [publisher.recv(timeout=20) for _ in range(COUNT + 2)]

    ids = [reply["id"] for reply in replies]
    expected = list(range(COUNT // 2 + 1)) + ["ping", "bad"] + list(range(COUNT // 2 + 1, COUNT))
    assert ids == expected
    by_id = {reply["id"]: reply for reply in replies}
    assert by_id["bad"]["err"] == "invalid_channel"
    assert [n for n in range(COUNT) if by_id[n].get("ok") is not True] == [], [
        by_id[n] for n in range(COUNT) if "err" in by_id[n]
    ][:3]
    offsets = [by_id[n]["offset"] for n in range(0, COUNT, 2)]
    assert offsets == list(range(first["offset"] + 1, first["offset"] + 1 + COUNT // 2))

    got = {plain: [], kept: []}
    for _ in range(COUNT):
        message = subscriber.next_message(timeout=20)["message"]
        got[message["channel"]].append(message["data"])
    assert got[kept] == list(range(0, COUNT, 2))
    assert got[plain] == list(range(1, COUNT, 2))
