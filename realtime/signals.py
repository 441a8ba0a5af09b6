"""Announce changes to keys and channels so live connections are re-checked at once.

Bulk ``QuerySet.update()`` sends no signals; the admin actions call
:func:`realtime.changes.notify_changed` themselves, and the periodic revalidation
catches anything else within ``REVALIDATE_INTERVAL`` seconds.
"""

from __future__ import annotations

from django.db import transaction
from django.db.models.signals import m2m_changed, post_delete, post_save
from django.dispatch import receiver

from .changes import notify_changed
from .models import AccessKey, Channel


def _announce(**kwargs) -> None:
    transaction.on_commit(notify_changed)


@receiver(post_save, sender=Channel, dispatch_uid="realtime.channel.saved")
@receiver(post_delete, sender=Channel, dispatch_uid="realtime.channel.deleted")
@receiver(post_save, sender=AccessKey, dispatch_uid="realtime.key.saved")
@receiver(post_delete, sender=AccessKey, dispatch_uid="realtime.key.deleted")
@receiver(m2m_changed, sender=AccessKey.channels.through, dispatch_uid="realtime.key.channels")
def model_changed(sender, **kwargs) -> None:
    if kwargs.get("action", "post_").startswith("post_"):
        _announce()
