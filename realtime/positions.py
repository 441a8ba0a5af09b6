"""Positions in a channel's stream: ``(offset, epoch)``.

A leaf module (no Django, no I/O), so the wire protocol, the stores and the broker can
all speak of positions without importing one another.

Each channel with history has a *stream*: its publications numbered 1, 2, 3... (the
offset) within an *epoch*, a random id that changes whenever the stream is lost (Redis
flushed, the history expired). A client that remembers a position can later ask for
everything after it.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

# 16 hex characters: fixed, so the Lua script can splice it into msgpack.
EPOCH_BYTES = 8
# Offsets travel between processes as 20-digit strings, for the same reason.
OFFSET_DIGITS = 20


def new_epoch() -> str:
    return secrets.token_hex(EPOCH_BYTES)


@dataclass(frozen=True, slots=True)
class Position:
    """Where a stream stands (its last offset, 0 before the first publication, and its
    epoch), or the last publication a client saw in it (``subscribe`` with ``since``)."""

    offset: int
    epoch: str
