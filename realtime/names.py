"""Channel names: what is allowed, and how a name maps onto the channel layer.

A channel name is one or more segments joined by ``/`` (``news``, ``rooms/lobby``,
``rooms/42/typing``). Segments use the characters Bayeux allows in channel segments,
``A-Z a-z 0-9 - _ . ! ~ ( ) $ @``, so every realtime channel is also a valid Bayeux
channel (``rooms/42`` is ``/rooms/42``). Names are at most ``MAX_LENGTH`` characters;
``.`` and ``..`` are not segments, and the first segments ``meta`` and ``service``
are reserved because Bayeux gives them special meaning.

Names chosen by clients never reach the channel layer as they are: layer group names
must match ``[a-zA-Z0-9._-]{1,99}``, so :func:`group_name` hashes them.
"""

from __future__ import annotations

import hashlib
import re

from .errors import InvalidChannelName

MAX_LENGTH = 200
SEGMENT_RE = re.compile(r"[A-Za-z0-9\-_.!~()$@]+\Z")
RESERVED_FIRST_SEGMENTS = frozenset({"meta", "service"})


def validate_channel_name(name: object) -> str:
    """Return ``name`` if it is a valid channel name, else raise InvalidChannelName."""
    if not isinstance(name, str):
        raise InvalidChannelName("channel must be a string")
    if not name or len(name) > MAX_LENGTH:
        raise InvalidChannelName(f"channel must be 1 to {MAX_LENGTH} characters")
    segments = name.split("/")
    for segment in segments:
        if not SEGMENT_RE.match(segment) or segment in (".", ".."):
            raise InvalidChannelName(
                "channel segments use A-Z a-z 0-9 - _ . ! ~ ( ) $ @ and are separated by /"
            )
    if segments[0] in RESERVED_FIRST_SEGMENTS:
        raise InvalidChannelName(f"channel names may not start with {segments[0]}/")
    return name


def is_valid_channel_name(name: object) -> bool:
    try:
        validate_channel_name(name)
    except InvalidChannelName:
        return False
    return True


def lineage(name: str) -> list[str]:
    """The name and its ancestors, nearest first: ``a/b/c`` -> ``[a/b/c, a/b, a]``."""
    parts = name.split("/")
    return ["/".join(parts[:i]) for i in range(len(parts), 0, -1)]


def group_name(name: str) -> str:
    """The channel layer group that carries publications for the channel ``name``."""
    return "rt.ch." + hashlib.blake2b(name.encode(), digest_size=16).hexdigest()


CONTROL_GROUP = "rt.control"


# Wildcard subscriptions ----------------------------------------------------------------
#
# A subscription may end in a wildcard segment: ``rooms/*`` matches every direct
# sub-channel (``rooms/42``), ``rooms/**`` every channel below at any depth, and a bare
# ``*`` or ``**`` the top-level channels or every channel. Wildcards are for subscribing
# only; publishing to one is refused like any other invalid name.

WILDCARDS = ("*", "**")


def is_pattern(name: str) -> bool:
    return name.rsplit("/", 1)[-1] in WILDCARDS


def pattern_prefix(pattern: str) -> str:
    """``rooms/*`` -> ``rooms``; a bare ``*`` or ``**`` -> ``""``."""
    return pattern.rpartition("/")[0]


def validate_subscription_name(name: object) -> str:
    """A channel name, or a pattern whose last segment is ``*`` or ``**``."""
    if isinstance(name, str) and is_pattern(name):
        if name not in WILDCARDS:
            validate_channel_name(pattern_prefix(name))
        return name
    return validate_channel_name(name)


def patterns_matching(name: str) -> list[str]:
    """Every pattern that matches the channel ``name``, prefixed ones first.

    ``a/b/c`` -> ``[a/b/*, a/b/**, a/**, *?, **]`` (``*`` only for one-segment names).
    """
    parts = name.split("/")
    found = []
    if len(parts) > 1:
        found.append("/".join(parts[:-1]) + "/*")
    for depth in range(len(parts) - 1, 0, -1):
        found.append("/".join(parts[:depth]) + "/**")
    if len(parts) == 1:
        found.append("*")
    found.append("**")
    return found


def topic(name: str) -> str:
    """The broker topic a subscription listens on.

    An exact channel listens on its own name. Patterns listen on their top-level tree
    (``tree:rooms`` for ``rooms/**``), bare patterns on ``*``: neither can collide with
    a channel name, whose characters exclude ``:`` and ``*``.
    """
    if not is_pattern(name):
        return name
    prefix = pattern_prefix(name)
    return "tree:" + prefix.split("/", 1)[0] if prefix else "*"
