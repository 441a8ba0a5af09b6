"""A client that stops reading must not hold up delivery to anyone else."""

import pytest
from websockets.exceptions import ConnectionClosed

pytestmark = [pytest.mark.live]

PAYLOAD = "x" * 60_000
COUNT = 400  # 24 MB: far more than the socket buffers and the 20-frame queue hold


def test_a_client_that_stops_reading_is_dropped_with_4004_and_others_get_everything(
    slow_reader_server, connect, make_key, make_channel, uid
):
    news = make_channel(f"news-{uid}", anonymous_read=True)
    # With a queue of one frame, websockets stops reading the socket until we recv().
    stalled = connect(slow_reader_server, max_queue=1)
    stalled.subscribe(news.name)
    healthy = connect(slow_reader_server)
    healthy.subscribe(news.name)
    writer = connect(slow_reader_server)
    writer.auth(make_key())

    for n in range(COUNT):
        writer.send({"publish": {"channel": news.name, "event": "big", "data": PAYLOAD}, "id": n})
        # The healthy subscriber keeps up, message by message.
        frame = healthy.next_message(timeout=10)
        assert frame["message"]["event"] == "big"

    received = 0
    with pytest.raises(ConnectionClosed):
        while True:
            stalled.recv(timeout=10)
            received += 1
    assert stalled.close_code == 4004
    assert received < COUNT


def test_a_bayeux_websocket_that_stops_reading_is_dropped_and_its_session_ends(
    slow_reader_server, connect, make_key, make_channel, uid
):
    from tests.bayeux.wire import LongPolling, WebSocket

    news = make_channel(f"news-{uid}", anonymous_read=True)
    secret = make_key()
    stalled = WebSocket(slow_reader_server, max_queue=1)
    try:
        stalled.handshake({"secret": secret})
        stalled.subscribe(f"/{news.name}")
        writer = connect(slow_reader_server)
        writer.auth(secret)
        for n in range(COUNT):
            assert writer.publish(news.name, "big", PAYLOAD)["ok"] is True, n
        with pytest.raises(ConnectionClosed):
            while True:
                stalled.recv(timeout=10)
        assert stalled.ws.close_code == 4004
        # Messages were lost, so the session is gone: its client must handshake again.
        probe = LongPolling(slow_reader_server)
        probe.client_id = stalled.client_id
        assert probe.connect()[0]["error"] == "402::session_unknown"
    finally:
        stalled.close()
