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
        # changes connects the model and settings receivers; webhooks its event sink.
        from . import broker, changes, webhooks  # noqa: F401
        from .checks import check_settings

        checks.register(check_settings)
        webhooks.install()
        logger.info(broker.describe())
