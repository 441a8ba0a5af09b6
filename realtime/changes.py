"""What happens when keys, channels or settings change: forget what was cached, and
tell every server process to re-check its live connections.

Model changes arrive through ``realtime.signals`` (after the transaction commits);
admin actions and bulk updates call :func:`notify_changed` themselves. Settings changes
(``override_settings`` in tests) reset every process-level cache, as Channels resets
its layers.
"""

from __future__ import annotations

from django.core.signals import setting_changed
from django.dispatch import receiver

from . import addresses, auth, broker, permissions, registry, tokens
from .bayeux import services


def clear_caches() -> None:
    """Drop the keys, channels and token users cached in this process."""
    auth.cache.clear()
    registry.cache.clear()
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
    addresses.reset()
