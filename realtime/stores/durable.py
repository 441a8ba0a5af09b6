"""Durable history: the database copy of durable channels' publications.

:class:`DurableHistory` wraps a history store (memory or Redis), which stays where
publications are numbered and read. For a channel marked ``history_durable`` every
publication is also written to the database (:meth:`DurableHistory.persist`), and a
stream the store has lost (Redis flushed, a process restarted on the in-memory default)
is restored from the database with its epoch and offsets unchanged, so clients still
recover. Channels that are not durable pass straight through.

Internal.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from asgiref.sync import sync_to_async
from django.db import close_old_connections, transaction
from django.utils import timezone

from .. import stats
from ..errors import Unavailable
from ..positions import Position, new_epoch
from ..registry import ChannelInfo
from .history import Page, StreamMissing

logger = logging.getLogger("realtime")

PRUNE_EVERY = 100  # offsets between deletions of what the channel no longer keeps
ATTEMPTS = 3  # restores tried before giving up (another process may be restoring too)


class DurableHistory:
    """A history store whose durable channels are kept in the database as well."""

    def __init__(self, store) -> None:
        self.store = store

    async def _with_restore(self, name: str, info: ChannelInfo, call):
        for _ in range(ATTEMPTS):
            try:
                return await call()
            except StreamMissing:
                epoch, offset, rows = await sync_to_async(restore)(name, info)
                await self.store.restore(name, info, epoch, offset, rows)
        raise Unavailable("the durable history could not be restored")

    async def append(
        self, name: str, frame: str, info: ChannelInfo, copies=(), middle=b"", **options
    ) -> tuple:
        """Number and keep a publication: ``(position, stamped frame)`` (see the stores;
        ``options`` are the Redis store's deadline, idempotency key and replicas).

        When nothing needs restoring, nothing is awaited but the store's own append: the
        in-memory broker relies on that to deliver in numbering order.
        """
        append = self.store.append
        return await self._with_restore(
            name, info, lambda: append(name, frame, info, copies, middle, **options)
        )

    async def read(self, name: str, info: ChannelInfo, since: int, limit: int, epoch: str | None) -> Page:
        stats.counters.history_reads += 1
        return await self._with_restore(name, info, lambda: self.store.read(name, info, since, limit, epoch))

    async def position(self, name: str, info: ChannelInfo) -> Position:
        return await self._with_restore(name, info, lambda: self.store.position(name, info))

    async def remove(self, name: str, info: ChannelInfo) -> None:
        """Forget the channel's stream, and its database copy if durable: the next
        publication starts a new epoch, so clients that recover are told recovered: false."""
        if info.history_durable:
            await sync_to_async(forget)(name)
        await self.store.remove(name)

    async def persist(self, name: str, position: Position, frame: str | None, info: ChannelInfo) -> None:
        """Write a durable channel's publication to the database (a thread hop, durable
        channels only; writing one twice keeps one). A failure is logged: the
        publication was delivered already. ``frame`` None: nothing to write (a duplicate
        whose frame the store no longer keeps)."""
        if not info.history_durable or frame is None:
            return
        try:
            await sync_to_async(store)(name, position.offset, position.epoch, frame, info)
        except Exception:
            logger.exception(
                "realtime: could not keep publication %s of %s in the database", position.offset, name
            )


# The database side (synchronous; called through sync_to_async) --------------------


def restore(name: str, info: ChannelInfo) -> tuple[str, int, list[tuple[int, float, str]]]:
    """The stream's epoch, last offset and kept publications, creating the stream if new."""
    from ..models import Stream

    close_old_connections()
    stream, _ = Stream.objects.get_or_create(name=name, defaults={"epoch": new_epoch()})
    rows = stream.publications.order_by("-offset")
    if info.history_ttl:
        rows = rows.filter(created_at__gt=timezone.now() - timedelta(seconds=info.history_ttl))
    kept = list(rows.values_list("offset", "created_at", "frame")[: info.history_size])
    kept.reverse()
    return stream.epoch, stream.offset, [(offset, at.timestamp(), frame) for offset, at, frame in kept]


def forget(name: str) -> None:
    """Delete a durable stream's database copy (its publications go with it)."""
    from ..models import Stream

    close_old_connections()
    Stream.objects.filter(name=name).delete()


def store(name: str, offset: int, epoch: str, frame: str, info: ChannelInfo) -> None:
    """Mirror one publication the store has numbered."""
    from ..models import StoredPublication, Stream

    close_old_connections()
    with transaction.atomic():
        stream, created = Stream.objects.select_for_update().get_or_create(
            name=name, defaults={"epoch": epoch, "offset": offset}
        )
        if stream.epoch != epoch:
            # The store started a new epoch (the channel became durable after its stream
            # began, or the database copy was removed): the old copy no longer applies.
            stream.publications.all().delete()
            stream.epoch = epoch
            stream.offset = offset
            stream.save(update_fields=["epoch", "offset"])
        elif offset > stream.offset:
            Stream.objects.filter(pk=stream.pk).update(offset=offset)
        StoredPublication.objects.get_or_create(stream=stream, offset=offset, defaults={"frame": frame})
        if offset % PRUNE_EVERY == 0:
            old = stream.publications.filter(offset__lte=offset - info.history_size)
            if info.history_ttl:
                cutoff = timezone.now() - timedelta(seconds=info.history_ttl)
                old = old | stream.publications.filter(created_at__lte=cutoff)
            old.delete()
