"""Generated Bayeux messages against a live server: every refusal is documented, and
the session (and everybody else's) keeps working afterwards."""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from realtime.bayeux.protocol import ERRORS
from realtime.errors import ErrorCode
from tests.bayeux.wire import LongPolling, WebSocket, bayeux_url, post

pytestmark = [pytest.mark.live]

TEXTS = set(ERRORS) | {code.value for code in ErrorCode if code != ErrorCode.INTERNAL_ERROR}
CHANNELS = [
    "/meta/handshake",
    "/meta/connect",
    "/meta/subscribe",
    "/meta/unsubscribe",
    "/meta/x",
    "/service/echo",
]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


def messages(client_id, channel):
    """Messages that are mostly Bayeux-shaped, for the session ``client_id``, on ``channel``."""
    fields = st.fixed_dictionaries(
        {},
        optional={
            "channel": st.sampled_from([*CHANNELS, f"/{channel}", f"/{channel}/*", "/**"])
            | json_values
            | st.text(max_size=20),
            "clientId": st.just(client_id) | json_values,
            "subscription": st.sampled_from([f"/{channel}", "/meta/connect", "/a b"]) | json_values,
            "data": json_values,
            "id": json_values,
            "advice": st.just({"timeout": 0}) | json_values,
            "ext": json_values | st.just({"realtime": {"since": {"offset": 0, "epoch": "x"}}}),
        },
    )
    return fields | json_values


def payloads(client_id, channel):
    batch = st.lists(messages(client_id, channel), min_size=1, max_size=4)
    return batch.map(json.dumps) | messages(client_id, channel).map(json.dumps) | st.text(max_size=40)


def refusals_are_documented(replies):
    assert isinstance(replies, list) and replies
    for reply in replies:
        if reply.get("successful") is False:
            code, text = reply["error"].split(":", 1)[0], reply["error"].rsplit(":", 1)[1]
            assert code.isdigit() and text in TEXTS, reply


def test_generated_messages_over_websocket_get_documented_replies_and_the_session_survives(
    fuzz_server, make_key, make_channel, uid
):
    room = make_channel(f"fuzz-{uid}").name
    secret = make_key()
    state = {}

    def fresh():
        state["client"] = WebSocket(fuzz_server)
        assert state["client"].handshake({"secret": secret})["successful"]

    fresh()

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def check(data):
        client = state["client"]
        client.send_raw(data.draw(payloads(client.client_id, room)))
        refusals_are_documented(client.recv())
        probe = client.call({"channel": "/meta/unsubscribe", "subscription": "/probe"})
        if probe["successful"] is False:  # the generated input disconnected the session
            assert probe["error"] == "402::session_unknown"
            client.close()
            fresh()
            return
        assert probe["subscription"] == "/probe"

    try:
        check()
    finally:
        state["client"].close()


def test_generated_payloads_over_http_get_documented_replies(fuzz_server, make_key, make_channel, uid):
    room = make_channel(f"fuzz-{uid}").name
    bystander = LongPolling(fuzz_server)
    bystander.handshake({"secret": make_key()})
    bystander.connect()
    bystander.subscribe(f"/{room}")
    client = LongPolling(fuzz_server)
    client.handshake({"secret": make_key()})

    @settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def check(data):
        payload = data.draw(payloads(client.client_id, room))
        status, replies = post(bayeux_url(fuzz_server) + "?", payload)
        assert status in (200, 400, 413)
        refusals_are_documented(replies)

    check()
    # The bystander's session is untouched by all of it.
    assert bystander.subscribe(f"/{room}")["successful"] is True
    assert bystander.connect(timeout_ms=0)[-1]["successful"] is True
