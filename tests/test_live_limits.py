"""Limits and misbehaving clients, against a server with tiny limits (tests.conftest.STRICT)."""

import time

import pytest
from websockets.exceptions import ConnectionClosed

from tests.conftest import STRICT

pytestmark = [pytest.mark.live, pytest.mark.usefixtures("redis_layer")]


def wait_for_close(client):
    with pytest.raises(ConnectionClosed):
        while True:
            client.recv(timeout=5)
    return client.close_code


def test_frame_over_the_size_limit_is_message_too_large(strict_server, connect):
    client = connect(strict_server)
    client.send(
        {"publish": {"channel": "x", "event": "e", "data": "a" * STRICT["MAX_MESSAGE_SIZE"]}, "id": 1}
    )
    assert client.recv()["err"] == "message_too_large"
    assert client.logout()["ok"] is True


def test_multibyte_text_is_measured_in_bytes(strict_server, connect):
    client = connect(strict_server)
    client.send({"publish": {"channel": "x", "event": "e", "data": "é" * 600}})
    assert client.recv()["err"] == "message_too_large"


def test_subscriptions_beyond_the_limit_are_too_many_subscriptions(
    strict_server, connect, make_key, make_channel, uid
):
    rooms = make_channel(f"rooms-{uid}", include_subchannels=True)
    client = connect(strict_server)
    client.auth(make_key())
    for n in range(STRICT["MAX_SUBSCRIPTIONS"]):
        assert client.subscribe(f"{rooms.name}/{n}")["ok"] is True
    assert client.subscribe(f"{rooms.name}/extra")["err"] == "too_many_subscriptions"
    client.unsubscribe(f"{rooms.name}/0")
    assert client.subscribe(f"{rooms.name}/extra")["ok"] is True


def test_repeated_failed_auth_closes_the_connection_with_4002(strict_server, connect):
    client = connect(strict_server)
    for _ in range(STRICT["MAX_AUTH_FAILURES"]):
        client.send({"auth": {"secret": "rt_wrong"}})
        assert client.recv()["err"] == "invalid_credentials"
    assert wait_for_close(client) == 4002


def test_a_client_that_keeps_sending_garbage_is_closed_with_4001(strict_server, connect):
    client = connect(strict_server)
    for _ in range(STRICT["MAX_INVALID_FRAMES"]):
        client.send_raw("garbage")
        assert client.recv()["err"] == "invalid_data"
    assert wait_for_close(client) == 4001


def test_a_valid_command_resets_the_garbage_count(strict_server, connect):
    client = connect(strict_server)
    for _ in range(3):
        for _ in range(STRICT["MAX_INVALID_FRAMES"] - 1):
            client.send_raw("garbage")
            assert client.recv()["err"] == "invalid_data"
        assert client.logout()["ok"] is True
        time.sleep(0.5)  # stay under the rate limit


def test_frames_faster_than_the_rate_limit_are_refused_then_accepted_again(strict_server, connect):
    client = connect(strict_server)
    for n in range(STRICT["RATE_BURST"] + 5):
        client.send({"logout": True, "id": n})
    replies = [client.recv() for _ in range(STRICT["RATE_BURST"] + 5)]
    assert [reply["id"] for reply in replies] == list(range(STRICT["RATE_BURST"] + 5))
    assert sum("ok" in reply for reply in replies) == STRICT["RATE_BURST"]
    assert {reply["err"] for reply in replies if "err" in reply} == {"rate_limited"}
    time.sleep(1.0)
    assert client.logout()["ok"] is True


def test_other_clients_are_unaffected_by_a_misbehaving_one(
    strict_server, connect, make_key, make_channel, uid
):
    news = make_channel(f"news-{uid}")
    good, bad = connect(strict_server), connect(strict_server)
    good.auth(make_key())
    good.subscribe(news.name)
    for _ in range(STRICT["MAX_INVALID_FRAMES"]):
        bad.send_raw("{")
    assert wait_for_close(bad) == 4001
    assert good.publish(news.name, "e", "still here")["ok"] is True
    assert good.next_message()["message"]["data"] == "still here"


def test_browser_from_a_foreign_origin_is_closed_with_4003(server, connect):
    client = connect(server, origin="https://evil.example")
    assert wait_for_close(client) == 4003


def test_browser_from_an_allowed_origin_may_connect(server, connect):
    client = connect(server, origin="http://localhost:8000")
    assert client.logout()["ok"] is True


def test_client_without_origin_may_connect(server, connect, make_key):
    client = connect(server)
    assert client.auth(make_key())["ok"] is True
