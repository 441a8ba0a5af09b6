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
