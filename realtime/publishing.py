"""Publishing from the server: the one path views, tasks, commands and sockets share.

``publish()`` and ``apublish()`` validate the channel and the event, encode the
publication frame once, and hand it to the broker, which carries it to every server
process. They raise a :class:`~realtime.errors.RealtimeError` subclass on bad input,
:class:`~realtime.errors.Unavailable` when the broker did not take the message (it was
not delivered and never will be), and :class:`~realtime.errors.UnknownOutcome` when
it may or may not have been (retry with the same ``idempotency_key`` to find out).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from asgiref.sync import async_to_sync

from . import protocol, registry
from .broker import get_broker
from .conf import settings
from .errors import InvalidChannel, InvalidData, MessageTooLarge
from .names import validate_channel_name


@dataclass(frozen=True, slots=True)
class Publication:
    """What was published; ``offset`` and ``epoch`` place it in the channel's history
    (None when the channel keeps none)."""

    channel: str
    event: str
    data: Any
    offset: int | None = None
    epoch: str | None = None


def validate_event(event: object) -> str:
    if not isinstance(event, str) or not event or len(event) > protocol.MAX_EVENT_LENGTH:
        raise InvalidData(f"event must be a string of 1 to {protocol.MAX_EVENT_LENGTH} characters")
    return event


async def send_publication(
    channel: str,
    event: str,
    data: Any,
    user: dict | None = None,
    *,
    info: registry.ChannelInfo,
    idempotency_key: str | None = None,
) -> Publication:
    """Encode and send a publication whose channel and access were already checked.

    ``user`` names who published (``Principal.user``); subscribers see it as is.
    ``info`` is the channel row ``channel`` resolved to (pattern subscribers are
    checked against it where they receive). A publication whose ``idempotency_key``
    was already used on ``channel`` within ``IDEMPOTENCY_WINDOW`` is not published
    again: the first one's offset and epoch are returned.
    """
    try:
        frame = protocol.message_frame(channel, event, data, user)
    except (TypeError, ValueError) as error:
        raise InvalidData(f"data is not JSON-serialisable: {error}") from None
    try:
        size = len(frame.encode())
    except UnicodeEncodeError:
        raise InvalidData("data holds text that is not valid Unicode (lone surrogates)") from None
    limit = settings.MAX_MESSAGE_SIZE
    if size > limit:
        raise MessageTooLarge(f"publications are limited to {limit} bytes")
    position = await get_broker().publish(channel, frame, info, idempotency_key)
    if position is None:
        return Publication(channel, event, data)
    return Publication(channel, event, data, position.offset, position.epoch)


def validate_idempotency_key(key: object) -> str | None:
    if key is None:
        return None
    limit = protocol.MAX_IDEMPOTENCY_KEY_LENGTH
    if not isinstance(key, str) or not key or len(key) > limit or not protocol.is_encodable(key):
        raise InvalidData(f"idempotency_key must be a string of 1 to {limit} characters")
    return key


async def apublish(
    channel: str, event: str, data: Any = None, *, idempotency_key: str | None = None
) -> Publication:
    """Publish ``data`` as ``event`` on ``channel`` to every subscriber, on every process.

    Give an ``idempotency_key`` (a UUID, say) to retry safely after ``UnknownOutcome``:
    a publish with the same key on the same channel within ``IDEMPOTENCY_WINDOW``
    returns the first one's outcome and delivers nothing again.
    """
    validate_channel_name(channel)
    validate_event(event)
    validate_idempotency_key(idempotency_key)
    info = await registry.aresolve(channel)
    if info is None:
        raise InvalidChannel(f"no active channel covers {channel!r}")
    return await send_publication(channel, event, data, info=info, idempotency_key=idempotency_key)


def publish(channel: str, event: str, data: Any = None, *, idempotency_key: str | None = None) -> Publication:
    """Synchronous :func:`apublish`, for views, signals, tasks and management commands."""
    return async_to_sync(apublish)(channel, event, data, idempotency_key=idempotency_key)
