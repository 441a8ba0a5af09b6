"""What happens when keys, channels or settings change: forget what was cached, and
tell every server process to re-check its live connections.

Model changes arrive through the receivers below (announced after the transaction
commits); admin actions and bulk updates call :func:`notify_changed` themselves, since
``QuerySet.update()`` sends no signals, and the periodic revalidation catches anything
else within ``REVALIDATE_INTERVAL`` seconds. Settings changes (``override_settings`` in
tests) reset every process-level cache, as Channels resets its layers.
"""

from __future__ import annotations

from django.core.signals import setting_changed
from django.db import transaction
from django.db.models.signals import m2m_changed, post_delete, post_save
from django.dispatch import receiver

from . import addresses, auth, broker, handlers, permissions, registry, tokens, webhooks
from .bayeux import services
from .models import AccessKey, Channel, WebhookEndpoint


def clear_caches() -> None:
    """Drop the keys, channels and token users cached in this process."""
    auth.cache.clear()
    registry.cache.clear()
    webhooks.cache.clear()
    tokens.cache.clear()


def notify_changed() -> None:
    """Keys or channels changed: every server process re-checks its live connections."""
    clear_caches()
    broker.get_broker().announce_change()


@receiver(setting_changed, dispatch_uid="realtime.changes.settings")
def settings_changed(setting: str, **kwargs) -> None:
    if setting not in ("REALTIME", "CHANNEL_LAYERS", "SECRET_KEY", "SECRET_KEY_FALLBACKS"):
        return
    clear_caches()
    broker.reset()
    permissions.reset()
    tokens.reset()
    services.reset()
    handlers.reset()
    addresses.reset()


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


@receiver(post_save, sender=WebhookEndpoint, dispatch_uid="realtime.webhook.saved")
@receiver(post_delete, sender=WebhookEndpoint, dispatch_uid="realtime.webhook.deleted")
def endpoint_changed(sender, **kwargs) -> None:
    # Each process reloads its endpoints within REVALIDATE_INTERVAL; this one at once.
    transaction.on_commit(webhooks.cache.clear)
