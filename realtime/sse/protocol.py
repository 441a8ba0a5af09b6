"""The SSE wire format: native frames as server-sent events, and stream positions as ids.

Pure functions over text, with no Django, Channels or asyncio, like ``realtime.protocol``.
``docs/protocol.md`` ("Server-sent events") describes the same events for people.

A publication becomes one event: ``event:`` is the publication's event, ``data:`` its
``message`` object exactly as the WebSocket sends it (sliced out of the frame, never
encoded again), and, on channels with history that the stream names, ``id:`` the
stream's positions. Native notices become events named ``realtime:<notice>``
(``realtime:unsubscribed``, ``realtime:missed``, ``realtime:logout``, ``realtime:join``,
``realtime:leave``) whose ``data`` is the notice's object.
"""

from __future__ import annotations

import json

from ..positions import Position
from ..protocol import MAX_EPOCH_LENGTH, MAX_OFFSET

NOTICE = "realtime:"
HEARTBEAT = b": keepalive\n\n"
_MESSAGE = '{"message":'

# (event head, the same without its event line, channel, offset, epoch): a head is
# "event: ...\ndata: ...\n", to which each stream adds its own id line (or none) and the
# blank line. Streams opened with ?named=0 send publications unnamed, so that
# EventSource.onmessage gets every one (the data names the event).
Delivery = tuple[bytes, bytes, str | None, int | None, str | None]


def _line_safe(text: str) -> str:
    """A field value ends at CR or LF: a publication's event may hold neither."""
    return text.replace("\r", " ").replace("\n", " ")


def event(name: str, data: str, event_id: str | None = None) -> bytes:
    """One complete event. ``data`` is compact JSON, which holds no raw line breaks."""
    head = f"event: {_line_safe(name)}\ndata: {data}\n"
    if event_id is not None:
        head += f"id: {event_id}\n"
    return (head + "\n").encode()


def retry(seconds: float) -> bytes:
    """The reconnection delay a browser's EventSource uses after the stream ends."""
    return f": realtime\nretry: {round(seconds * 1000)}\n\n".encode()


_last: tuple[str, Delivery | None] | None = None


def delivery(frame: str) -> Delivery | None:
    """A native frame (a publication or a notice) as the head of an SSE event.

    The hub hands the same frame object to every subscriber of a publication, so the
    conversion is remembered for the last frame: one decode per publication per
    process, however many streams it reaches. None for frames SSE has no event for.
    """
    global _last
    last = _last
    if last is not None and last[0] is frame:
        return last[1]
    result: Delivery | None = None
    if frame.startswith(_MESSAGE):
        native = json.loads(frame)["message"]
        name = native.get("event") or native.get("type") or "message"
        data = f"data: {frame[len(_MESSAGE) : -1]}\n".encode()
        head = f"event: {_line_safe(name)}\n".encode() + data
        result = (head, data, native.get("channel"), native.get("offset"), native.get("epoch"))
    elif frame.startswith('{"'):
        kind = frame[2 : frame.find('"', 2)]
        if kind and kind not in ("ok", "err"):
            body = frame[len(kind) + 4 : -1]
            head = f"event: {NOTICE}{kind}\ndata: {body}\n".encode()
            result = (head, head, None, None, None)
    _last = (frame, result)
    return result


# Ids: where each channel with history stood -------------------------------------------


def format_id(positions: dict[str, tuple[str, int] | None]) -> str | None:
    """The id of an event: ``epoch:offset`` when the stream follows one channel with
    history, else ``name=epoch:offset`` for each whose position is known, comma-separated
    (channel names hold neither ``=`` nor ``,``). None when nothing is known yet."""
    if len(positions) == 1:
        (known,) = positions.values()
        return None if known is None else f"{known[0]}:{known[1]}"
    parts = [f"{name}={known[0]}:{known[1]}" for name, known in positions.items() if known is not None]
    return ",".join(parts) or None


def _position(text: str) -> Position | None:
    epoch, _, offset = text.rpartition(":")
    if not epoch or len(epoch) > MAX_EPOCH_LENGTH or not offset.isdigit():
        return None
    value = int(offset)
    return Position(value, epoch) if value <= MAX_OFFSET else None


def parse_id(text: str, channels: list[str]) -> dict[str, Position]:
    """The positions a ``Last-Event-ID`` names, for the stream's ``channels`` with
    history. Anything unreadable is left out (those channels cannot be recovered)."""
    found: dict[str, Position] = {}
    if "=" not in text:
        position = _position(text.strip())
        if position is not None and len(channels) == 1:
            found[channels[0]] = position
        return found
    for part in text.split(","):
        name, _, rest = part.strip().partition("=")
        position = _position(rest)
        if position is not None and name in channels:
            found[name] = position
    return found
