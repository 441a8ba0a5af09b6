"""Demo data for ``make run``: a few channels, a superuser, a chat user and two keys. Safe to rerun.

Nothing that exists is changed, so edits made in the admin survive ``make run``. Key
secrets are stored only as hashes, so they are printed once, when the keys are
created; later runs say how to get a new one instead.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from realtime.models import AccessKey, Channel

CHANNELS = [
    {
        "name": "news",
        "anonymous_read": True,
        "description": "Public headlines: anyone may subscribe, publishing needs a read-write key.",
    },
    {
        "name": "rooms",
        "include_subchannels": True,
        "description": "Chat rooms: rooms/lobby, rooms/42 … each a channel of its own, without a row each.",
    },
    {
        "name": "metrics",
        "anonymous_read": True,
        "description": "Public live metrics.",
    },
    {
        "name": "users",
        "include_subchannels": True,
        "personal": True,
        "description": "Personal channels: users/<id> is readable by that user only (mentions in the chat).",
    },
]
KEYS = [("demo-publisher", AccessKey.READ_WRITE), ("demo-reader", AccessKey.READ_ONLY)]
ADMIN_USERNAME = "admin"
ADMIN_PASSWORD = "admin"
# A user who is not staff, to chat as (and to see what a non-staff token may do).
DEMO_USERNAME = "demo"
DEMO_PASSWORD = "demo"


class Command(BaseCommand):
    help = (
        "Create the demo channels, a demo superuser (admin/admin), a demo user (demo/demo) "
        "and two demo access keys, if absent."
    )

    @transaction.atomic
    def handle(self, *args, **options) -> None:
        for fields in CHANNELS:
            fields = dict(fields)
            name = fields.pop("name")
            _, created = Channel.objects.get_or_create(name=name, defaults=fields)
            self.stdout.write(f"Channel {name}: {'created' if created else 'exists'}.")
        self.seed_superuser()
        self.seed_demo_user()
        self.seed_keys()

    def seed_superuser(self) -> None:
        User = get_user_model()
        if User.objects.filter(is_superuser=True).exists():
            self.stdout.write("Superuser: one exists, none created.")
            return
        if User.objects.filter(**{User.USERNAME_FIELD: ADMIN_USERNAME}).exists():
            self.stdout.write(f"Superuser: a user named {ADMIN_USERNAME!r} exists, none created.")
            return
        if not settings.DEBUG:
            # A well-known password must never reach a deployed site by accident.
            self.stdout.write("Superuser: not created because DEBUG is off; use manage.py createsuperuser.")
            return
        User.objects.create_superuser(
            **{User.USERNAME_FIELD: ADMIN_USERNAME}, email="", password=ADMIN_PASSWORD
        )
        self.stdout.write(
            self.style.WARNING(
                f"Superuser: created {ADMIN_USERNAME} / {ADMIN_PASSWORD} for the demo only; "
                "change or delete it before this site is reachable by anyone else."
            )
        )

    def seed_demo_user(self) -> None:
        User = get_user_model()
        if User.objects.filter(**{User.USERNAME_FIELD: DEMO_USERNAME}).exists():
            self.stdout.write(f"Demo user {DEMO_USERNAME}: exists.")
            return
        if not settings.DEBUG:
            self.stdout.write(f"Demo user {DEMO_USERNAME}: not created because DEBUG is off.")
            return
        User.objects.create_user(**{User.USERNAME_FIELD: DEMO_USERNAME}, email="", password=DEMO_PASSWORD)
        self.stdout.write(
            self.style.WARNING(
                f"Demo user: created {DEMO_USERNAME} / {DEMO_PASSWORD} (not staff) for the chat; "
                "delete it before this site is reachable by anyone else."
            )
        )

    def seed_keys(self) -> None:
        created = []
        for name, access in KEYS:
            if AccessKey.objects.filter(name=name).exists():
                self.stdout.write(
                    f"Access key {name}: exists; its secret is not stored. For a new one: "
                    f"python manage.py realtime_key regenerate {name}"
                )
                continue
            _, secret = AccessKey.objects.create_key(name=name, access=access, all_channels=True)
            created.append((name, access, secret))
        if created:
            self.stdout.write(
                "Demo access keys (all channels). Copy the secrets now, they will not be shown again:"
            )
            for name, access, secret in created:
                self.stdout.write(f"  {name} ({access}): {secret}")
