import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from realtime.errors import ErrorCode, InvalidData, MessageTooLarge, RealtimeError
from realtime.protocol import (
    ACCESS_LEVELS,
    HISTORY_MAX_LIMIT,
    MAX_EPOCH_LENGTH,
    MAX_EVENT_LENGTH,
    MAX_ID_LENGTH,
    MAX_OFFSET,
    MAX_SECRET_LENGTH,
    MAX_TOKEN_LENGTH,
    PARSERS,
    Auth,
    Disconnect,
    History,
    Logout,
    Ping,
    Presence,
    Publish,
    Refresh,
    Rpc,
    Subscribe,
    Time,
    Unsubscribe,
    encode,
    error_frame,
    logout_frame,
    message_frame,
    ok_frame,
    parse_frame,
    unsubscribed_frame,
)

MAX_SIZE = 64 * 1024
COMMAND_TYPES = (
    Auth,
    Subscribe,
    Unsubscribe,
    Publish,
    History,
    Presence,
    Logout,
    Disconnect,
    Ping,
    Rpc,
    Refresh,
    Refresh,
    Rpc,
    Time,
)
COMMAND_KEYS = sorted(PARSERS)


def parse(frame, max_size=MAX_SIZE):
    text = frame if isinstance(frame, str) else json.dumps(frame)
    return parse_frame(text, max_size)


def refusal(frame, max_size=MAX_SIZE) -> RealtimeError:
    with pytest.raises(RealtimeError) as caught:
        parse(frame, max_size)
    return caught.value


def assert_invalid_data(frame, request_id=None, max_size=MAX_SIZE):
    error = refusal(frame, max_size)
    assert isinstance(error, InvalidData)
    assert error.code == ErrorCode.INVALID_DATA
    assert error.request_id == request_id
    return error


def publish_text(data_json: str, request_id: str = "") -> str:
    """A publish frame with ``data_json`` spliced in as it is, for input json.dumps won't write."""
    id_part = f', "id": {request_id}' if request_id else ""
    return '{"publish": {"channel": "a", "event": "e", "data": ' + data_json + "}" + id_part + "}"


def publish_body(**overrides):
    return {"channel": "rooms/lobby", "event": "chat", "data": None, **overrides}


# Command shapes ------------------------------------------------------------------------


def test_auth_with_secret_only_leaves_access_unset():
    assert parse({"auth": {"secret": "rt_abc"}}) == Auth(id=None, secret="rt_abc", access=None)


@pytest.mark.parametrize("access", ["read-only", "read-write"])
def test_auth_accepts_each_access_level(access):
    assert parse({"auth": {"secret": "rt_abc", "access": access}, "id": 1}) == Auth(1, "rt_abc", access)


def test_auth_with_null_access_leaves_access_unset():
    assert parse({"auth": {"secret": "rt_abc", "access": None}}).access is None


def test_auth_ignores_unknown_body_fields():
    assert parse({"auth": {"secret": "rt_abc", "extra": [1]}}) == Auth(None, "rt_abc")


def test_auth_secret_at_the_length_limit_is_accepted():
    secret = "s" * MAX_SECRET_LENGTH
    assert parse({"auth": {"secret": secret}}).secret == secret


def test_subscribe_carries_the_channel():
    assert parse({"subscribe": {"channel": "rooms/lobby"}, "id": "s1"}) == Subscribe("s1", "rooms/lobby")


def test_unsubscribe_carries_the_channel():
    assert parse({"unsubscribe": {"channel": "news"}}) == Unsubscribe(None, "news")


@pytest.mark.parametrize("channel", ["", "a//b", "/news", "meta/handshake", "x" * 500])
def test_channel_naming_rules_are_left_to_the_names_module(channel):
    assert parse({"subscribe": {"channel": channel}}).channel == channel


@pytest.mark.parametrize("data", [None, 0, 1.5, "text", [1, "two"], {"text": "hi", "n": [1, 2]}, False])
def test_publish_carries_any_json_data(data):
    command = parse({"publish": publish_body(data=data), "id": 9})
    assert command == Publish(9, "rooms/lobby", "chat", data)


def test_publish_event_at_the_length_limit_is_accepted():
    event = "e" * MAX_EVENT_LENGTH
    assert parse({"publish": publish_body(event=event)}).event == event


@pytest.mark.parametrize("value", [True, {}])
def test_logout_is_true_or_an_empty_object(value):
    assert parse({"logout": value, "id": 3}) == Logout(3)


@pytest.mark.parametrize("value", [True, {}])
def test_disconnect_is_true_or_an_empty_object(value):
    assert parse({"disconnect": value}) == Disconnect(None)


def test_id_may_come_before_the_command():
    assert parse('{"id": 5, "subscribe": {"channel": "news"}}') == Subscribe(5, "news")


@pytest.mark.parametrize(
    "request_id", [0, -1, 2**53 - 1, -(2**53 - 1), "", "a", "x" * MAX_ID_LENGTH, "ünïcode ✓"]
)
def test_id_accepts_strings_and_safe_integers(request_id):
    assert parse({"logout": True, "id": request_id}).id == request_id


def test_surrounding_whitespace_is_allowed():
    assert parse('  {"logout": true}\n') == Logout(None)


# invalid_data ----------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", " ", "{", "hello", "{'logout': true}", '{"logout": true}}', "[1,]"])
def test_text_that_is_not_json_is_invalid_data(text):
    assert_invalid_data(text)


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_in_data_are_invalid_data(constant):
    assert_invalid_data(publish_text(constant))


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_as_id_are_invalid_data(constant):
    assert_invalid_data('{"logout": true, "id": ' + constant + "}")


@pytest.mark.parametrize("number", ["1e400", "-1e400", "1.5e999"])
def test_numbers_too_large_for_a_float_are_invalid_data(number):
    # They would become inf, which no JSON encoder can send on to subscribers.
    assert_invalid_data(publish_text(number))


def test_integer_with_more_digits_than_python_parses_is_invalid_data():
    assert_invalid_data(publish_text("9" * 5000))


@pytest.mark.parametrize(
    "text", ["[]", '[{"logout": true}]', '"logout"', "1", "1.5", "null", "true", "false"]
)
def test_frame_that_is_not_an_object_is_invalid_data(text):
    error = assert_invalid_data(text)
    assert "object" in error.detail


@pytest.mark.parametrize("frame", [{}, {"id": 1}])
def test_frame_without_a_command_is_invalid_data(frame):
    assert_invalid_data(frame, request_id=frame.get("id"))


def test_frame_with_two_commands_is_invalid_data():
    error = assert_invalid_data({"logout": True, "disconnect": True, "id": 4}, request_id=4)
    assert "exactly one command" in error.detail


@pytest.mark.parametrize("command", ["hello", "Subscribe", "__class__", "_parse_auth", "", "ok"])
def test_unknown_command_is_invalid_data(command):
    error = assert_invalid_data({command: {}, "id": "u"}, request_id="u")
    assert "unknown command" in error.detail


def test_unknown_command_detail_is_truncated():
    error = assert_invalid_data({"x" * 1000: {}})
    assert len(error.detail) < 100


@pytest.mark.parametrize("command", ["auth", "subscribe", "unsubscribe", "publish"])
@pytest.mark.parametrize("body", [None, True, 1, "news", ["news"]])
def test_command_body_that_is_not_an_object_is_invalid_data(command, body):
    error = assert_invalid_data({command: body, "id": 2}, request_id=2)
    assert error.detail == f"{command} must be an object"


@pytest.mark.parametrize("body", [{}, {"secret": ""}, {"secret": None}, {"secret": 1}, {"secret": ["s"]}])
def test_auth_without_a_non_empty_string_secret_is_invalid_data(body):
    assert_invalid_data({"auth": body})


def test_auth_secret_over_the_length_limit_is_invalid_data():
    assert_invalid_data({"auth": {"secret": "s" * (MAX_SECRET_LENGTH + 1)}})


@pytest.mark.parametrize("access", ["admin", "READ-ONLY", "read", "", 1, True, ["read-only"]])
def test_auth_with_an_unknown_access_level_is_invalid_data(access):
    assert_invalid_data({"auth": {"secret": "rt_abc", "access": access}})


@pytest.mark.parametrize("command", ["subscribe", "unsubscribe", "publish"])
@pytest.mark.parametrize("channel", [None, 1, ["news"], {"name": "news"}])
def test_channel_that_is_not_a_string_is_invalid_data(command, channel):
    body = publish_body(channel=channel) if command == "publish" else {"channel": channel}
    assert_invalid_data({command: body})


@pytest.mark.parametrize("command", ["subscribe", "unsubscribe"])
def test_subscribe_without_a_channel_is_invalid_data(command):
    assert_invalid_data({command: {}})


def test_publish_without_a_channel_is_invalid_data():
    body = publish_body()
    del body["channel"]
    assert_invalid_data({"publish": body})


@pytest.mark.parametrize("event", ["", None, 1, ["chat"]])
def test_publish_without_a_non_empty_string_event_is_invalid_data(event):
    assert_invalid_data({"publish": publish_body(event=event)})


def test_publish_without_an_event_is_invalid_data():
    body = publish_body()
    del body["event"]
    assert_invalid_data({"publish": body})


def test_publish_event_over_the_length_limit_is_invalid_data():
    assert_invalid_data({"publish": publish_body(event="e" * (MAX_EVENT_LENGTH + 1))})


def test_publish_without_data_is_invalid_data():
    body = publish_body()
    del body["data"]
    error = assert_invalid_data({"publish": body, "id": 8}, request_id=8)
    assert "data" in error.detail


@pytest.mark.parametrize("command", ["logout", "disconnect"])
@pytest.mark.parametrize("value", [False, None, 1, 0, "true", [], {"now": True}, 1.0])
def test_logout_and_disconnect_other_values_are_invalid_data(command, value):
    error = assert_invalid_data({command: value, "id": 1}, request_id=1)
    assert error.detail == f"{command} must be true"


@pytest.mark.parametrize("request_id", [True, False, 1.0, 1.5, None, [1], {"n": 1}])
def test_id_that_is_not_a_string_or_integer_is_invalid_data(request_id):
    assert_invalid_data({"logout": True, "id": request_id})


def test_id_string_over_the_length_limit_is_invalid_data():
    assert_invalid_data({"logout": True, "id": "x" * (MAX_ID_LENGTH + 1)})


@pytest.mark.parametrize("request_id", [2**53, -(2**53), 10**30])
def test_id_integer_outside_the_safe_range_is_invalid_data(request_id):
    assert_invalid_data({"logout": True, "id": request_id})


def test_invalid_id_is_reported_even_when_the_command_is_fine():
    assert_invalid_data({"subscribe": {"channel": "news"}, "id": True})


# request_id on errors ------------------------------------------------------------------


def test_error_carries_the_request_id_when_the_id_was_readable():
    assert refusal({"subscribe": "news", "id": "abc"}).request_id == "abc"
    assert refusal({"subscribe": "news", "id": 0}).request_id == 0


def test_error_has_no_request_id_when_the_frame_has_none():
    assert refusal({"subscribe": "news"}).request_id is None


def test_error_has_no_request_id_when_the_id_itself_is_invalid():
    assert refusal({"subscribe": "news", "id": 1.5}).request_id is None


def test_error_has_no_request_id_when_the_frame_is_not_json():
    assert refusal('{"id": 1, "logout": tru}').request_id is None


# Deep nesting --------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [10_000, 200_000])
def test_deeply_nested_arrays_are_invalid_data_not_a_crash(depth):
    text = "[" * depth + "]" * depth
    assert_invalid_data(text, max_size=len(text))


def test_deeply_nested_objects_are_invalid_data_not_a_crash():
    depth = 100_000
    text = '{"a":' * depth + "1" + "}" * depth
    assert_invalid_data(text, max_size=len(text))


def test_deeply_nested_data_in_a_publication_is_invalid_data_not_a_crash():
    depth = 100_000
    data = "[" * depth + "]" * depth
    text = publish_text(data, request_id="1")
    assert isinstance(refusal(text, max_size=len(text)), InvalidData)


def test_moderately_nested_data_is_accepted():
    data = []
    for _ in range(100):
        data = [data]
    assert parse({"publish": publish_body(data=data)}).data == data


# message_too_large ---------------------------------------------------------------------


def test_frame_at_the_size_limit_is_parsed():
    text = '{"logout": true}'
    assert parse_frame(text, len(text)) == Logout(None)


def test_frame_one_byte_over_the_limit_is_message_too_large():
    text = '{"logout": true}'
    error = refusal(text, max_size=len(text) - 1)
    assert isinstance(error, MessageTooLarge)
    assert error.code == ErrorCode.MESSAGE_TOO_LARGE
    assert error.request_id is None


def test_size_is_checked_before_parsing():
    assert isinstance(refusal("not json at all", max_size=3), MessageTooLarge)


def multibyte_frame(character: str, count: int) -> str:
    return json.dumps({"publish": publish_body(data=character * count)}, ensure_ascii=False)


@pytest.mark.parametrize("character", ["é", "€", "😀"])
def test_multibyte_frame_at_the_byte_limit_is_parsed(character):
    text = multibyte_frame(character, 50)
    size = len(text.encode())
    assert parse_frame(text, size).data == character * 50


@pytest.mark.parametrize("character", ["é", "€", "😀"])
def test_multibyte_frame_just_over_the_byte_limit_is_message_too_large(character):
    # Fewer characters than the limit, but more bytes.
    text = multibyte_frame(character, 50)
    size = len(text.encode())
    assert len(text) < size - 1
    assert isinstance(refusal(text, max_size=size - 1), MessageTooLarge)


def test_ascii_frame_far_under_the_limit_skips_the_byte_count():
    text = multibyte_frame("a", 10)
    assert parse_frame(text, len(text) * 4 + 1).data == "a" * 10


def test_lone_surrogate_near_the_limit_is_refused_not_a_crash():
    text = '{"publish": {"channel": "a", "event": "e", "data": "\ud800"}}'
    assert isinstance(refusal(text, max_size=len(text) + 1), MessageTooLarge)
    assert parse_frame(text, len(text) + 2).data == "\ud800"


# Encoders ------------------------------------------------------------------------------


def test_encode_is_compact_and_keeps_utf8():
    assert encode({"a": [1, 2], "b": "héllo ✓"}) == '{"a":[1,2],"b":"héllo ✓"}'


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_encode_refuses_values_that_are_not_json(value):
    with pytest.raises(ValueError):
        encode({"data": value})


def test_ok_frame_without_an_id():
    assert ok_frame() == '{"ok":true}'


@pytest.mark.parametrize(
    ("request_id", "expected"), [(7, '{"ok":true,"id":7}'), ("a", '{"ok":true,"id":"a"}')]
)
def test_ok_frame_echoes_the_id(request_id, expected):
    assert ok_frame(request_id) == expected


def test_ok_frame_echoes_an_id_of_zero():
    assert ok_frame(0) == '{"ok":true,"id":0}'


def test_ok_frame_puts_extra_fields_before_the_id():
    assert ok_frame(1, channel="news") == '{"ok":true,"channel":"news","id":1}'


def test_error_frame_with_code_only():
    assert error_frame("invalid_data") == '{"err":"invalid_data"}'


def test_error_frame_accepts_the_error_code_enum():
    assert error_frame(ErrorCode.ACCESS_DENIED, 3) == '{"err":"access_denied","id":3}'


def test_error_frame_with_detail_and_id():
    assert error_frame("invalid_data", "x", "logout must be true") == (
        '{"err":"invalid_data","detail":"logout must be true","id":"x"}'
    )


def test_error_frame_drops_a_detail_that_only_repeats_the_code():
    assert error_frame("rate_limited", 2, "rate_limited") == '{"err":"rate_limited","id":2}'


def test_message_frame():
    assert message_frame("rooms/lobby", "chat", {"text": "héllo", "n": None}) == (
        '{"message":{"channel":"rooms/lobby","event":"chat","data":{"text":"héllo","n":null}}}'
    )


def test_unsubscribed_frame():
    assert unsubscribed_frame("news", "channel_inactive") == (
        '{"unsubscribed":{"channel":"news","reason":"channel_inactive"}}'
    )


def test_logout_frame():
    assert logout_frame("key_revoked") == '{"logout":{"reason":"key_revoked"}}'


def test_error_frame_for_a_refusal_round_trips_through_json():
    error = refusal({"subscribe": 1, "id": "r"})
    assert json.loads(error_frame(error.code, error.request_id, error.detail)) == {
        "err": "invalid_data",
        "detail": "subscribe must be an object",
        "id": "r",
    }


# Properties ----------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=20,
)

command_bodies = st.dictionaries(
    st.sampled_from(["secret", "access", "channel", "event", "data", "extra"]),
    json_values | st.sampled_from(["read-only", "read-write", "news"]),
)

max_sizes = st.sampled_from([0, 1, 16, 64, 1024, MAX_SIZE])


def parses_or_refuses(text: str, max_size: int = MAX_SIZE) -> None:
    size = len(text.encode(errors="surrogatepass"))
    try:
        command = parse_frame(text, max_size)
    except RealtimeError as error:
        # The only two codes a frame can get before its command runs (docs/protocol.md).
        if error.code == ErrorCode.MESSAGE_TOO_LARGE:
            assert size > max_size and error.request_id is None
        else:
            assert error.code == ErrorCode.INVALID_DATA
            assert error.request_id is None or isinstance(error.request_id, (str, int))
    else:
        assert isinstance(command, COMMAND_TYPES)
        assert size <= max_size


@given(st.text(), max_sizes)
def test_any_text_parses_or_is_refused_with_a_wire_code(text, max_size):
    parses_or_refuses(text, max_size)


@given(json_values)
def test_any_json_value_parses_or_is_refused_with_a_wire_code(value):
    parses_or_refuses(json.dumps(value))


@given(st.dictionaries(st.sampled_from([*COMMAND_KEYS, "id"]) | st.text(max_size=8), json_values, min_size=1))
def test_any_object_with_command_keys_parses_or_is_refused_with_a_wire_code(frame):
    parses_or_refuses(json.dumps(frame))


@given(st.sampled_from(COMMAND_KEYS), command_bodies, st.none() | json_values)
def test_any_command_body_parses_or_is_refused_with_a_wire_code(command, body, request_id):
    frame = {command: body} if request_id is None else {command: body, "id": request_id}
    parses_or_refuses(json.dumps(frame))


# Valid bodies, command by command (docs/protocol.md), so every generated frame parses.
unicode_text = st.text(st.characters(exclude_categories=("Cs",)))  # no lone surrogates


def bounded_text(max_size):
    return st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=max_size)


offsets = st.integers(0, MAX_OFFSET)
epochs = bounded_text(MAX_EPOCH_LENGTH)
flags = st.sampled_from([True, {}])
valid_bodies = {
    "auth": st.fixed_dictionaries(
        {"secret": bounded_text(MAX_SECRET_LENGTH)}, optional={"access": st.sampled_from(ACCESS_LEVELS)}
    )
    | st.fixed_dictionaries({"token": bounded_text(MAX_TOKEN_LENGTH)}),
    "subscribe": st.fixed_dictionaries(
        {"channel": unicode_text},
        optional={"since": st.fixed_dictionaries({"offset": offsets, "epoch": epochs})},
    ),
    "unsubscribe": st.fixed_dictionaries({"channel": unicode_text}),
    "publish": st.fixed_dictionaries(
        {
            "channel": unicode_text,
            "event": bounded_text(MAX_EVENT_LENGTH),
            "data": st.recursive(
                st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False),
                lambda children: (
                    st.lists(children, max_size=4) | st.dictionaries(unicode_text, children, max_size=4)
                ),
                max_leaves=20,
            ),
        }
    ),
    "history": st.fixed_dictionaries(
        {"channel": unicode_text},
        optional={"since": offsets, "limit": st.integers(1, HISTORY_MAX_LIMIT), "epoch": epochs},
    ),
    "presence": st.fixed_dictionaries({"channel": unicode_text}),
    "logout": flags,
    "disconnect": flags,
    "ping": flags,
    "rpc": st.fixed_dictionaries(
        {"method": st.from_regex(r"[A-Za-z0-9_.-]{1,20}(/[A-Za-z0-9_.-]{1,20}){0,3}", fullmatch=True)},
        optional={"data": st.none() | st.integers() | unicode_text},
    ),
    "refresh": st.fixed_dictionaries(
        {"token": bounded_text(MAX_TOKEN_LENGTH)}, optional={"access": st.sampled_from(ACCESS_LEVELS)}
    ),
    "time": flags,
}
assert set(valid_bodies) == set(COMMAND_KEYS)
request_ids = (
    st.none()
    | st.integers(-(2**53 - 1), 2**53 - 1)
    | st.text(st.characters(exclude_categories=("Cs",)), max_size=MAX_ID_LENGTH)
)


@given(st.sampled_from(COMMAND_KEYS).flatmap(lambda c: st.tuples(st.just(c), valid_bodies[c])), request_ids)
def test_a_valid_command_parses_to_the_type_its_key_names_with_its_fields(command_and_body, request_id):
    command, body = command_and_body
    frame = {command: body} if request_id is None else {command: body, "id": request_id}

    parsed = parse(frame)

    assert type(parsed).__name__.lower() == command
    assert parsed.id == request_id
    for field, value in body.items() if isinstance(body, dict) else ():
        if isinstance(parsed, Subscribe) and field == "since":
            assert (parsed.since.offset, parsed.since.epoch) == (value["offset"], value["epoch"])
        else:
            assert getattr(parsed, field) == value


def test_ping_parses_with_its_id():
    assert parse({"ping": True, "id": 9}) == Ping(9)


def test_auth_with_a_token():
    assert parse({"auth": {"token": "abc"}}) == Auth(None, token="abc")


def test_auth_with_both_a_secret_and_a_token_is_invalid_data():
    with pytest.raises(InvalidData, match="not both"):
        parse({"auth": {"secret": "rt_x", "token": "abc"}})


def test_message_frame_names_the_user_when_given():
    frame = message_frame("c", "e", 1, {"id": 3, "name": "alice"})
    assert frame == '{"message":{"channel":"c","event":"e","data":1,"user":{"id":3,"name":"alice"}}}'
