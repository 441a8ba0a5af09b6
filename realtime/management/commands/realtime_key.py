"""Create, list, revoke and regenerate access keys from the shell.

``create`` and ``regenerate`` print the secret alone on the last line of stdout, so a
script can take it with ``| tail -n 1``; it is shown only then, as in the admin.
Changes go through ``Model.save()`` so the model signals tell live servers at once.
"""

from __future__ import annotations

from datetime import timedelta

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils import timezone

from realtime.management.tables import format_table
from realtime.models import AccessKey, Channel


def format_time(value) -> str:
    return timezone.localtime(value).strftime("%Y-%m-%d %H:%M") if value else "never"


def scope(key: AccessKey) -> str:
    return key.scope_summary()


class Command(BaseCommand):
    help = "Manage realtime access keys: create, list, revoke, regenerate."

    def add_arguments(self, parser) -> None:
        sub = parser.add_subparsers(
            dest="subcommand", required=True, metavar="{create,list,revoke,regenerate}"
        )

        create = sub.add_parser("create", help="Create a key and print its secret (shown only once).")
        create.add_argument(
            "--name", required=True, help="A unique name, e.g. the service that uses the key."
        )
        create.add_argument(
            "--access", required=True, choices=[AccessKey.READ_ONLY, AccessKey.READ_WRITE, AccessKey.ADMIN]
        )
        create.add_argument(
            "--channel",
            action="append",
            default=[],
            dest="channels",
            metavar="CHANNEL",
            help="A channel the key is valid on (repeat for several).",
        )
        create.add_argument(
            "--all-channels", action="store_true", help="Make the key valid on every channel."
        )
        create.add_argument(
            "--expires-in-days", type=int, metavar="N", help="Expire the key N days from now."
        )

        sub.add_parser("list", help="List keys (never their secrets).")
        revoke = sub.add_parser("revoke", help="Revoke a key: it stops working at once.")
        revoke.add_argument("name")
        regenerate = sub.add_parser("regenerate", help="Give a key a new secret; the old one stops working.")
        regenerate.add_argument("name")

    def handle(self, *args, subcommand: str, **options) -> None:
        handlers = {
            "create": self.create,
            "list": self.list,
            "revoke": self.revoke,
            "regenerate": self.regenerate,
        }
        handlers[subcommand](**options)

    def create(self, *, name, access, channels, all_channels, expires_in_days, **options) -> None:
        if not channels and not all_channels:
            raise CommandError(
                "say where the key is valid: --channel NAME (repeat for several) or --all-channels"
            )
        if channels and all_channels:
            raise CommandError("give either --channel or --all-channels, not both")
        if expires_in_days is not None and expires_in_days < 1:
            raise CommandError("--expires-in-days must be at least 1")
        if AccessKey.objects.filter(name=name).exists():
            raise CommandError(f"an access key named {name!r} already exists")
        found = list(Channel.objects.filter(name__in=channels))
        missing = sorted(set(channels) - {channel.name for channel in found})
        if missing:
            raise CommandError(
                f"unknown channel(s): {', '.join(missing)} "
                "(create them with: manage.py realtime_channel create NAME)"
            )
        expires_at = timezone.now() + timedelta(days=expires_in_days) if expires_in_days else None
        try:
            with transaction.atomic():
                key, secret = AccessKey.objects.create_key(
                    name=name, access=access, channels=found, all_channels=all_channels, expires_at=expires_at
                )
        except ValidationError as error:
            raise CommandError("; ".join(error.messages)) from None
        expiry = f"expires {format_time(expires_at)}" if expires_at else "never expires"
        self.stdout.write(f"Created access key {name!r}: {access} on {scope(key)}, {expiry}.")
        self._write_secret(secret)

    def list(self, **options) -> None:
        found = AccessKey.objects.prefetch_related("channels")
        if not found:
            self.stdout.write("No access keys.")
            return
        headers = ["NAME", "ACCESS", "SCOPE", "ACTIVE", "EXPIRES", "LAST USED", "PREFIX"]
        rows = [
            [
                key.name,
                key.access,
                scope(key),
                "yes" if key.is_active else "revoked",
                format_time(key.expires_at) + (" (expired)" if key.is_expired else ""),
                format_time(key.last_used_at),
                f"{key.secret_prefix}…",
            ]
            for key in found
        ]
        self.stdout.write(format_table(headers, rows))

    def revoke(self, *, name, **options) -> None:
        key = self._get(name)
        if not key.is_active:
            self.stdout.write(f"Access key {name!r} was already revoked.")
            return
        key.is_active = False
        key.save(update_fields=["is_active"])
        self.stdout.write(f"Revoked access key {name!r}; it stops working at once.")

    def regenerate(self, *, name, **options) -> None:
        key = self._get(name)
        secret = key.set_new_secret()
        key.save(update_fields=["secret_hash", "secret_prefix"])
        if not key.is_usable:
            self.stderr.write(
                f"Note: {name!r} is revoked or expired; the new secret works only once it is reactivated."
            )
        self.stdout.write(f"New secret for access key {name!r}; the old one no longer authenticates.")
        self._write_secret(secret)

    def _get(self, name: str) -> AccessKey:
        try:
            return AccessKey.objects.get(name=name)
        except AccessKey.DoesNotExist:
            raise CommandError(f"no access key named {name!r} (see: manage.py realtime_key list)") from None

    def _write_secret(self, secret: str) -> None:
        self.stdout.write("Copy the secret now, it will not be shown again (only its hash is stored):")
        self.stdout.write(secret)
