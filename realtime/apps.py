from __future__ import annotations

import logging

from django.apps import AppConfig
from django.core import checks

logger = logging.getLogger("realtime")


class RealtimeConfig(AppConfig):
    name = "realtime"
    verbose_name = "Realtime"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # signals connects the model receivers, changes the settings receiver.
        from . import broker, changes, signals  # noqa: F401
        from .checks import check_settings

        checks.register(check_settings)
        logger.info(broker.describe())
