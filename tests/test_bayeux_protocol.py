"""Bayeux messages in and out, without a server (realtime.bayeux.protocol)."""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from realtime import protocol
from realtime.bayeux import protocol as bayeux
from realtime.bayeux.protocol import BayeuxError
from realtime.errors import AccessDenied, InvalidChannel, InvalidChannelName, MessageTooLarge


def error_of(call, *args):
    with pytest.raises(BayeuxError) as caught:
        call(*args)
    return caught.value.string


def test_a_payload_is_an_array_of_messages_and_a_bare_object_is_accepted():
    assert bayeux.parse_payload('[{"channel": "/a"}, {"channel": "/b"}]', 1000) == [
        {"channel": "/a"},
        {"channel": "/b"},
    ]
    assert bayeux.parse_payload('{"channel": "/a"}', 1000) == [{"channel": "/a"}]


@pytest.mark.parametrize("text", ["", "[", "[]", '"text"', "42", "null", "[NaN]", "[1e999]"])
def test_a_payload_that_is_no_array_of_messages_is_invalid_data(text):
    assert error_of(bayeux.parse_payload, text, 1000).startswith("400:")
    assert error_of(bayeux.parse_payload, text, 1000).endswith(":invalid_data")


def test_oversized_payloads_and_batches_are_refused():
    assert error_of(bayeux.parse_payload, "[" + " " * 2000 + "]", 1000) == "413:1000:message_too_large"
    batch = json.dumps([{"channel": "/a"}] * (bayeux.MAX_BATCH + 1))
    assert error_of(bayeux.parse_payload, batch, 10**6) == "413:100:too_many_messages"


@pytest.mark.parametrize(
    ("message", "error"),
    [
        ([], "400:each message must be an object:invalid_data"),
        ({}, "400::channel_missing"),
        ({"channel": 7}, "405:7:channel_invalid"),
        ({"channel": "rooms/1"}, "405:rooms/1:channel_invalid"),
        ({"channel": "/a", "id": {"x": 1}}, None),
    ],
)
def test_each_message_needs_an_object_with_a_channel_and_a_usable_id(message, error):
    found = error_of(bayeux.check_message, message)
    if error is not None:
        assert found == error
    else:
        assert found.endswith(":invalid_data")


def test_bayeux_channels_are_native_names_with_a_leading_slash():
    assert bayeux.publish_name("/rooms/42") == "rooms/42"
    assert bayeux.subscription_name("/rooms/*") == "rooms/*"
    assert bayeux.subscription_name("/**") == "**"


@pytest.mark.parametrize("channel", ["/", "//a", "/a//b", "/a b", "/rooms/*", "/a/**"])
def test_publishing_to_a_pattern_or_a_malformed_channel_is_channel_invalid(channel):
    assert error_of(bayeux.publish_name, channel).startswith("405:")
    assert error_of(bayeux.publish_name, channel).endswith(":channel_invalid")


def test_meta_and_service_channels_are_recognised():
    assert bayeux.is_meta("/meta/connect") and bayeux.is_meta("/meta")
    assert not bayeux.is_meta("/metadata")
    assert bayeux.is_service("/service/echo") and not bayeux.is_service("/services")


def test_realtime_errors_keep_their_code_and_status_in_bayeux_form():
    assert BayeuxError.from_realtime(AccessDenied(), "/a").string == "403:/a:access_denied"
    assert BayeuxError.from_realtime(InvalidChannel(), "/a").string == "404:/a:invalid_channel"
    assert BayeuxError.from_realtime(MessageTooLarge(), "").string == "413::message_too_large"
    assert BayeuxError.from_realtime(InvalidChannelName(), "/a b").string == "405:/a b:channel_invalid"


def test_error_arguments_cannot_break_the_error_string_apart():
    assert BayeuxError(400, "invalid_data", "a:b,c").string == "400:a%3Ab%2Cc:invalid_data"


def test_replies_echo_the_id_and_the_subscription_as_sent():
    message = {"channel": "/meta/subscribe", "id": "7", "subscription": ["/a", "/b"]}
    assert bayeux.reply(message, "/meta/subscribe", subscription=message["subscription"]) == {
        "channel": "/meta/subscribe",
        "successful": True,
        "id": "7",
        "subscription": ["/a", "/b"],
    }
    refused = bayeux.error_reply(message, bayeux.session_unknown())
    assert refused == {
        "channel": "/meta/subscribe",
        "successful": False,
        "id": "7",
        "error": "402::session_unknown",
        "advice": {"reconnect": "handshake", "interval": 0},
        "subscription": ["/a", "/b"],
    }


def test_the_client_may_shorten_the_connect_hold_but_not_lengthen_it():
    assert bayeux.connect_timeout({"advice": {"timeout": 0}}, 30) == 0
    assert bayeux.connect_timeout({"advice": {"timeout": 5000}}, 30) == 5
    assert bayeux.connect_timeout({"advice": {"timeout": 60000}}, 30) == 30
    assert bayeux.connect_timeout({"advice": {"timeout": "soon"}}, 30) == 30


def test_a_publication_becomes_a_bayeux_message_with_what_bayeux_has_no_field_for_in_ext():
    frame = protocol.stamp(
        protocol.message_frame("rooms/1", "chat", {"text": "hi"}, {"id": 3, "name": "ann"}), 12, "e" * 16
    )
    message, payload = bayeux.delivery(frame)
    assert json.loads(message) == {
        "channel": "/rooms/1",
        "data": {"text": "hi"},
        "ext": {
            "realtime": {"event": "chat", "user": {"id": 3, "name": "ann"}, "offset": 12, "epoch": "e" * 16}
        },
    }
    assert payload == f"[{message}]"


def test_a_publication_is_converted_once_however_many_bayeux_subscribers_it_has(monkeypatch):
    frame = protocol.message_frame("rooms/1", "chat", 1)
    calls = []
    decode = json.loads
    monkeypatch.setattr(bayeux.json, "loads", lambda text: calls.append(text) or decode(text))
    first = bayeux.delivery(frame)
    assert all(bayeux.delivery(frame) is first for _ in range(100))
    assert len(calls) == 1


def test_native_notices_have_no_bayeux_message():
    assert bayeux.delivery(protocol.join_frame("rooms/1", {"client": "c"})) is None
    assert bayeux.delivery(protocol.missed_frame("rooms/1", "broker_unavailable")) is None


@given(st.text(max_size=300))
def test_any_payload_text_parses_or_is_refused_with_a_bayeux_error(text):
    try:
        messages = bayeux.parse_payload(text, 200)
    except BayeuxError as error:
        assert error.code in (400, 413)
        return
    for message in messages:
        try:
            bayeux.check_message(message)
        except BayeuxError as error:
            assert error.code in (400, 405)
