import re
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from realtime.errors import ErrorCode, InvalidChannelName
from realtime.names import (
    CONTROL_GROUP,
    MAX_LENGTH,
    group_name,
    is_valid_channel_name,
    lineage,
    validate_channel_name,
)

LAYER_GROUP_RE = re.compile(r"^[a-zA-Z0-9._-]{1,99}$")
SEGMENT_CHARACTERS = string.ascii_letters + string.digits + "-_.!~()$@"


@pytest.mark.parametrize(
    "name",
    [
        "news",
        "rooms/lobby",
        "rooms/42/typing",
        "a",
        "A-Z_a.z!~()$@0-9",
        "metadata",
        "services",
        "Meta",
        "rooms/meta",
        "rooms/service/x",
        "...",
        "a/.b/c..",
        "x" * MAX_LENGTH,
        "/".join(["a"] * 100),
    ],
)
def test_valid_names_are_returned_unchanged(name):
    assert validate_channel_name(name) == name
    assert is_valid_channel_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "rooms lobby",
        "rooms#1",
        "rooms?x=1",
        "café",
        "rooms\\lobby",
        "a*",
        "a/**",
        "news\n",
        "\nnews",
        "rooms:lobby",
        "a+b",
        "a%2Fb",
        "١٢٣",
        "ｎｅｗｓ",
    ],
)
def test_characters_outside_the_bayeux_set_are_invalid(name):
    assert not is_valid_channel_name(name)


@pytest.mark.parametrize("name", ["", "/", "//", "a//b", "/news", "news/", "/news/", "rooms/42/"])
def test_empty_segments_and_leading_or_trailing_slashes_are_invalid(name):
    assert not is_valid_channel_name(name)


@pytest.mark.parametrize("name", [".", "..", "./a", "a/.", "a/../b", "../etc", "a/./b"])
def test_dot_and_dot_dot_segments_are_invalid(name):
    assert not is_valid_channel_name(name)


@pytest.mark.parametrize("name", ["meta", "meta/handshake", "service", "service/chat/x"])
def test_reserved_first_segments_are_invalid(name):
    with pytest.raises(InvalidChannelName) as caught:
        validate_channel_name(name)
    assert name.split("/")[0] in caught.value.detail


def test_name_at_the_length_limit_is_valid():
    assert is_valid_channel_name("a" * MAX_LENGTH)
    assert is_valid_channel_name("a/" * (MAX_LENGTH // 2 - 1) + "ab")


def test_name_over_the_length_limit_is_invalid():
    assert MAX_LENGTH == 200
    assert not is_valid_channel_name("a" * (MAX_LENGTH + 1))
    assert not is_valid_channel_name("a/" * (MAX_LENGTH // 2) + "a")


@pytest.mark.parametrize("name", [None, 1, b"news", ["news"], {"news": 1}, True])
def test_non_string_names_are_invalid(name):
    with pytest.raises(InvalidChannelName) as caught:
        validate_channel_name(name)
    assert caught.value.detail == "channel must be a string"


def test_invalid_name_error_has_the_invalid_channel_name_code():
    with pytest.raises(InvalidChannelName) as caught:
        validate_channel_name("a//b")
    assert caught.value.code == ErrorCode.INVALID_CHANNEL_NAME


def test_lineage_of_a_single_segment_is_itself():
    assert lineage("news") == ["news"]


def test_lineage_lists_the_name_then_its_ancestors_nearest_first():
    assert lineage("a/b/c") == ["a/b/c", "a/b", "a"]


def test_lineage_keeps_dots_inside_segments():
    assert lineage("v1.0/rooms.x") == ["v1.0/rooms.x", "v1.0"]


segments = st.text(alphabet=SEGMENT_CHARACTERS, min_size=1, max_size=12).filter(
    lambda s: s not in (".", "..")
)
valid_names = (
    st.lists(segments, min_size=1, max_size=8)
    .map("/".join)
    .filter(lambda name: len(name) <= MAX_LENGTH and name.split("/")[0] not in ("meta", "service"))
)


@given(valid_names)
def test_generated_names_are_valid(name):
    assert validate_channel_name(name) == name


@given(valid_names)
def test_lineage_starts_with_the_name_and_walks_up_one_segment_at_a_time(name):
    chain = lineage(name)
    assert chain[0] == name
    assert len(chain) == name.count("/") + 1
    for child, parent in zip(chain, chain[1:], strict=False):
        assert child.startswith(parent + "/")
        assert "/" not in child[len(parent) + 1 :]
    assert all(is_valid_channel_name(ancestor) for ancestor in chain)


@given(valid_names)
def test_group_name_is_a_valid_channel_layer_group(name):
    assert LAYER_GROUP_RE.match(group_name(name))


@given(st.text(max_size=MAX_LENGTH))
def test_group_name_is_a_valid_channel_layer_group_for_any_text(name):
    assert LAYER_GROUP_RE.match(group_name(name))


@given(valid_names, valid_names)
def test_group_names_differ_for_different_names(first, second):
    assert (group_name(first) == group_name(second)) == (first == second)


def test_group_name_is_stable():
    assert group_name("rooms/lobby") == group_name("rooms/lobby")


def test_group_names_differ_for_names_that_differ_only_in_case():
    assert group_name("News") != group_name("news")


def test_group_name_never_collides_with_the_control_group():
    assert LAYER_GROUP_RE.match(CONTROL_GROUP)
    assert group_name("control") != CONTROL_GROUP


# Wildcard patterns ---------------------------------------------------------------------

from realtime.names import (  # noqa: E402
    is_pattern,
    pattern_prefix,
    patterns_matching,
    topic,
    validate_subscription_name,
)


@pytest.mark.parametrize("pattern", ["rooms/*", "rooms/**", "a/b/*", "*", "**"])
def test_patterns_are_valid_subscription_names(pattern):
    assert validate_subscription_name(pattern) == pattern
    assert is_pattern(pattern)


@pytest.mark.parametrize("name", ["rooms/*/x", "rooms/***", "*/x", "meta/*", "bad name/*", "/*", "rooms//*"])
def test_wildcards_only_as_the_last_segment_of_a_valid_prefix(name):
    with pytest.raises(InvalidChannelName):
        validate_subscription_name(name)


def test_publishing_names_never_accept_wildcards():
    for name in ["rooms/*", "**"]:
        with pytest.raises(InvalidChannelName):
            validate_channel_name(name)


def test_patterns_matching_lists_every_pattern_that_matches_a_channel():
    assert patterns_matching("a/b/c") == ["a/b/*", "a/b/**", "a/**", "**"]
    assert patterns_matching("a/b") == ["a/*", "a/**", "**"]
    assert patterns_matching("a") == ["*", "**"]


def test_topics_keep_patterns_apart_from_channel_names():
    assert topic("rooms/42") == "rooms/42"
    assert topic("rooms/42/*") == topic("rooms/**") == "tree:rooms"
    assert topic("*") == topic("**") == "*"
    assert pattern_prefix("rooms/42/**") == "rooms/42" and pattern_prefix("**") == ""
    assert not is_valid_channel_name("tree:rooms") and not is_valid_channel_name("*")
