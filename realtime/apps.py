from __future__ import annotations

from django.apps import AppConfig
from django.core import checks
from django.core.handlers.asgi import ASGIHandler
from django.core.signals import request_started


def _served_over_asgi(sender, **kwargs) -> None:
    """The first request through an ASGI server: this process serves (and says how
    publications travel). Disconnected at once, so later requests pay nothing."""
    if isinstance(sender, type) and issubclass(sender, ASGIHandler):
        from .broker import mark_serving

        mark_serving()
        request_started.disconnect(dispatch_uid="realtime.served_over_asgi")


class RealtimeConfig(AppConfig):
    name = "realtime"
    verbose_name = "Realtime"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # changes connects the model and settings receivers; webhooks its event sink.
        from . import changes, webhooks  # noqa: F401
        from .checks import check_serving, check_settings, check_static, check_urls

        checks.register(check_settings)
        checks.register(check_serving)
        checks.register(check_static)
        checks.register(check_urls, checks.Tags.urls)
        webhooks.install()
        # Nothing is logged here: every manage.py command runs ready(), and the notice
        # about the layer matters only where publications are made or served.
        request_started.connect(_served_over_asgi, dispatch_uid="realtime.served_over_asgi")
