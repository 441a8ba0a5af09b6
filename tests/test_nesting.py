"""Nesting depth of client JSON is bounded at parse time (protocol.MAX_DEPTH), for the
native frames, the HTTP publish body and Bayeux payloads alike, so nothing a client
sends can fail later, when a publication is encoded for subscribers."""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from realtime import protocol
from realtime.bayeux import protocol as bayeux
from realtime.errors import InvalidData
from realtime.protocol import MAX_DEPTH, NestingTooDeep


def nested(depth: int, kind: str = "[]"):
    """A value of exactly ``depth`` levels of arrays (or objects)."""
    value = [] if kind == "[]" else {}
    for _ in range(depth - 1):
        value = [value] if kind == "[]" else {"a": value}
    return value


def publish_frame(data) -> str:
    return json.dumps({"publish": {"channel": "rooms/1", "event": "e", "data": data}})


def test_data_at_the_limit_is_accepted_and_encodes_for_subscribers():
    data = nested(MAX_DEPTH - 2)  # the frame and the publish body are two levels
    command = protocol.parse_frame(publish_frame(data), 10**6)
    assert command.data == data
    assert json.loads(protocol.message_frame("rooms/1", "e", command.data))["message"]["data"] == data


@pytest.mark.parametrize("kind", ["[]", "{}"])
def test_one_level_more_is_invalid_data_saying_why(kind):
    with pytest.raises(InvalidData) as refused:
        protocol.parse_frame(publish_frame(nested(MAX_DEPTH - 1, kind)), 10**6)
    assert refused.value.detail == f"JSON may nest arrays and objects at most {MAX_DEPTH} deep"


@pytest.mark.parametrize("depth", [965, 100_000])
def test_what_used_to_fail_in_encoding_is_refused_when_parsed(depth):
    text = '{"publish":{"channel":"rooms/1","event":"e","data":' + "[" * depth + "]" * depth + "}}"
    with pytest.raises(InvalidData) as refused:
        protocol.parse_frame(text, len(text))
    assert "nest" in refused.value.detail


def test_many_shallow_containers_are_fine():
    data = [{"a": [i, {"b": i}]} for i in range(2000)]
    assert protocol.parse_frame(publish_frame(data), 10**6).data == data


def test_brackets_inside_strings_do_not_count():
    data = "[" * 1000 + "{" * 1000
    assert protocol.parse_frame(publish_frame(data), 10**6).data == data


def test_an_http_body_or_bayeux_payload_too_deep_is_refused_the_same_way():
    body = json.dumps({"channel": "x", "event": "e", "data": nested(MAX_DEPTH)}).encode()
    with pytest.raises(NestingTooDeep):
        protocol.decode(body)
    payload = json.dumps([{"channel": "/x", "data": nested(MAX_DEPTH)}])
    with pytest.raises(bayeux.BayeuxError) as refused:
        bayeux.parse_payload(payload, 10**6)
    expected = f"400:JSON may nest arrays and objects at most {MAX_DEPTH} deep:invalid_data"
    assert refused.value.string == expected


def depth_of(value) -> int:
    if isinstance(value, dict):
        return 1 + max((depth_of(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth_of(v) for v in value), default=0)
    return 0


json_trees = st.recursive(
    st.none() | st.integers() | st.text(alphabet='[]{}"\\ab', max_size=5),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3)
    ),
    max_leaves=400,
)


@given(tree=json_trees, extra=st.integers(min_value=0, max_value=2 * MAX_DEPTH))
def test_decode_accepts_exactly_what_nests_at_most_max_depth(tree, extra):
    value = tree
    for _ in range(extra):
        value = [value]
    text = json.dumps(value)
    if depth_of(value) <= MAX_DEPTH:
        assert protocol.decode(text) == value
    else:
        with pytest.raises(NestingTooDeep):
            protocol.decode(text)
