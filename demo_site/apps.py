from django.apps import AppConfig


class DemoSiteConfig(AppConfig):
    name = "demo_site"
    verbose_name = "Demo site"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Registers the demo's RPC methods (echo, whoami, chat.recent).
        from . import rpc  # noqa: F401
