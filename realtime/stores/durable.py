"""The database copy of durable channels' history (synchronous; call through sync_to_async).

Redis (or memory) stays the store publications are numbered and read in; for a channel
marked ``history_durable`` every publication is also written here, and a stream the
store has lost (Redis flushed, a process restarted on the in-memory default) is
restored from here with its epoch and offsets unchanged, so clients still recover.
"""

from __future__ import annotations

from datetime import timedelta

from django.db import close_old_connections, transaction
from django.utils import timezone

PRUNE_EVERY = 100  # offsets between deletions of what the channel no longer keeps


def restore(name: str, info) -> tuple[str, int, list[tuple[int, float, str]]]:
    """The stream's epoch, last offset and kept publications, creating the stream if new."""
    from .history import new_epoch
    from .models import Stream

    close_old_connections()
    stream, _ = Stream.objects.get_or_create(name=name, defaults={"epoch": new_epoch()})
    rows = stream.publications.order_by("-offset")
    if info.history_ttl:
        rows = rows.filter(created_at__gt=timezone.now() - timedelta(seconds=info.history_ttl))
    kept = list(rows.values_list("offset", "created_at", "frame")[: info.history_size])
    kept.reverse()
    return stream.epoch, stream.offset, [(offset, at.timestamp(), frame) for offset, at, frame in kept]


def store(name: str, offset: int, epoch: str, frame: str, info) -> None:
    """Mirror one publication the store has numbered."""
    from .models import StoredPublication, Stream

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
