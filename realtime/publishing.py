"""Publishing from the server: the one path views, tasks, commands and sockets share.

``publish()`` and ``apublish()`` validate the channel and the event, encode the
publication frame once, and hand it to the broker, which carries it to every server
process. They raise a :class:`~realtime.errors.RealtimeError` subclass on bad input,
:class:`~realtime.errors.Unavailable` when the broker did not take the message (it was
not delivered and never will be), and :class:`~realtime.errors.UnknownOutcome` when
it may or may not have been (retry with the same ``idempotency_key`` to find out).

On the in-memory layer a publication reaches only the process that makes it. Made in a
process that serves no WebSockets (a shell, a worker, a WSGI process), it reaches no one:
the first such call warns, once per process, with :class:`NotDeliveredWarning`. It still
validates, stores the publication in the channel's (process-local) history and returns,
so test suites and one-off scripts keep working; ``manage.py realtime_publish``, whose
only job is delivery, refuses instead.

``publish(..., on_commit=True)`` waits for the surrounding transaction to commit.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Any

from asgiref.sync import async_to_sync
from django.db import transaction

from . import cloudevents, protocol, registry, stats
from .broker import get_broker, serving
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


class NotDeliveredWarning(RuntimeWarning):
    """A publication was made where no subscriber can get it: the in-memory layer, in a
    process that serves no WebSockets."""


_warned = False


def _warn_if_nobody_hears(stacklevel: int) -> None:
    global _warned
    if _warned or serving() or get_broker().multi_process:
        return
    _warned = True
    warnings.warn(
        "realtime: this process serves no WebSockets and the channel layer is in-memory, so its "
        "publications reach no one. Configure channels_redis (CHANNEL_LAYERS, REDIS_URL) to publish "
        "from shells and workers, or publish from the server process (a view). Said once per process.",
        NotDeliveredWarning,
        stacklevel=stacklevel + 1,
    )


def validate_event(event: object) -> str:
    if not isinstance(event, str) or not event or len(event) > protocol.MAX_EVENT_LENGTH:
        raise InvalidData(f"event must be a string of 1 to {protocol.MAX_EVENT_LENGTH} characters")
    return event


def encode_publication(
    channel: str,
    event: str,
    data: Any,
    user: dict | None,
    info: registry.ChannelInfo,
    incoming: cloudevents.Incoming | None = None,
) -> str:
    """The publication's frame, stamped with the time it was accepted: a CloudEvent on a
    channel with the CloudEvents option (``realtime.cloudevents``), the native object otherwise."""
    now = time.time()
    if info.cloudevents:
        source = info.cloudevents_source or cloudevents.default_source(settings.SSE_PATH, channel)
        return cloudevents.event_frame(
            channel, event, data, source=source, time=now, user=user, incoming=incoming
        )
    if incoming is not None:
        raise InvalidData(f"{channel!r} does not take CloudEvents (its CloudEvents option is off)")
    return protocol.message_frame(channel, event, data, user, now)


async def send_publication(
    channel: str,
    event: str,
    data: Any,
    user: dict | None = None,
    *,
    info: registry.ChannelInfo,
    incoming: cloudevents.Incoming | None = None,
    idempotency_key: str | None = None,
) -> Publication:
    """Encode and send a publication whose channel and access were already checked.

    ``user`` names who published (``Principal.user``); subscribers see it as is.
    ``info`` is the channel row ``channel`` resolved to (pattern subscribers are
    checked against it where they receive). ``incoming`` is a CloudEvent a publisher
    sent, whose attributes are kept. A publication whose ``idempotency_key`` was already
    used on ``channel`` within ``IDEMPOTENCY_WINDOW`` is not published again: the first
    one's offset and epoch are returned.
    """
    try:
        frame = encode_publication(channel, event, data, user, info, incoming)
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
    stats.counters.published += 1
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
    _warn_if_nobody_hears(2)
    validate_channel_name(channel)
    validate_event(event)
    validate_idempotency_key(idempotency_key)
    info = await registry.aresolve(channel)
    if info is None:
        raise InvalidChannel(f"no active channel covers {channel!r}")
    return await send_publication(channel, event, data, info=info, idempotency_key=idempotency_key)


def publish(
    channel: str,
    event: str,
    data: Any = None,
    *,
    on_commit: bool = False,
    using: str | None = None,
    idempotency_key: str | None = None,
) -> Publication | None:
    """Synchronous :func:`apublish`, for views, signals, tasks and management commands.

    With ``on_commit=True`` the publication is made once the current database
    transaction (of ``using``, the default database by default) commits, and never if
    it rolls back: subscribers cannot hear of a row that was not saved. It returns
    None then; outside a transaction (autocommit) it publishes at once. The channel
    name, the event and the data are checked now; a failure at commit (the channel was
    deactivated, the broker is down) is logged, not raised, as Django does for
    ``transaction.on_commit(..., robust=True)``.
    """
    _warn_if_nobody_hears(2)
    if on_commit:
        validate_channel_name(channel)
        validate_event(event)
        try:
            protocol.encode(data)
        except (TypeError, ValueError) as error:
            raise InvalidData(f"data is not JSON-serialisable: {error}") from None
        validate_idempotency_key(idempotency_key)
        transaction.on_commit(
            lambda: async_to_sync(apublish)(channel, event, data, idempotency_key=idempotency_key),
            using=using,
            robust=True,
        )
        return None
    return async_to_sync(apublish)(channel, event, data, idempotency_key=idempotency_key)
