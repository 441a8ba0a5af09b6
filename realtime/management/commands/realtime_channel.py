"""Create, list, activate and deactivate channels from the shell.

Changes go through ``Model.save()`` so the model signals tell live servers at once:
deactivating a channel drops its subscribers on every process.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.utils.text import Truncator

from realtime.errors import InvalidChannelName
from realtime.management.tables import format_table
from realtime.models import Channel
from realtime.names import validate_channel_name

# The model's messages name its fields; the command's user typed flags.
FLAGS = {
    "A durable history needs a history size.": "--durable needs --history N.",
    "Join and leave events need presence.": "--join-leave needs --presence.",
}


def _flags(messages: list[str]) -> list[str]:
    return [FLAGS.get(message, message) for message in messages]


def history_summary(channel: Channel) -> str:
    if not channel.history_size:
        return "no"
    ttl = f", {channel.history_ttl}s" if channel.history_ttl else ""
    return f"{channel.history_size}{ttl}" + (", durable" if channel.history_durable else "")


def traits(channel: Channel) -> str:
    found = [
        "covers sub-channels" if channel.include_subchannels else None,
        "anonymous read" if channel.anonymous_read else None,
        f"history {history_summary(channel)}" if channel.history_size else None,
        ("presence with join/leave" if channel.join_leave else "presence") if channel.presence else None,
        "bubbling" if channel.bubble else None,
        "CloudEvents" if channel.cloudevents else None,
    ]
    return ", ".join(trait for trait in found if trait)


class Command(BaseCommand):
    help = "Manage realtime channels: create, list, activate, deactivate."

    def add_arguments(self, parser) -> None:
        sub = parser.add_subparsers(
            dest="subcommand", required=True, metavar="{create,list,activate,deactivate}"
        )

        create = sub.add_parser("create", help="Create a channel.")
        create.add_argument("name", help="For example news or rooms/lobby.")
        create.add_argument(
            "--subchannels",
            action="store_true",
            help="Also cover every channel below it (rooms covers rooms/42).",
        )
        create.add_argument(
            "--anonymous-read", action="store_true", help="Anyone may subscribe without a key."
        )
        create.add_argument("--description", default="", metavar="TEXT")
        create.add_argument(
            "--history",
            type=int,
            default=0,
            metavar="N",
            dest="history_size",
            help="Keep the last N publications, for recovery after a reconnect and the HTTP event log "
            "(per sub-channel with --subchannels; default 0: no history).",
        )
        create.add_argument(
            "--history-ttl",
            type=int,
            default=None,
            metavar="SECONDS",
            dest="history_ttl",
            help="How long a kept publication lives (default 86400; 0: as long as --history allows).",
        )
        create.add_argument(
            "--durable",
            action="store_true",
            dest="history_durable",
            help="Also keep the history in the database, so it survives Redis being flushed.",
        )
        create.add_argument(
            "--presence", action="store_true", help="Subscribers may ask who else is subscribed."
        )
        create.add_argument(
            "--join-leave",
            action="store_true",
            help="Tell subscribers when a member joins or leaves (needs --presence).",
        )
        create.add_argument(
            "--bubble",
            action="store_true",
            help="Subscribers also receive the publications on every channel below this one.",
        )
        create.add_argument(
            "--cloudevents", action="store_true", help="Deliver publications as CloudEvents 1.0."
        )
        create.add_argument(
            "--cloudevents-source",
            default="",
            metavar="URI",
            help="The CloudEvents source attribute (default: the channel's SSE URL).",
        )

        sub.add_parser("list", help="List channels.")
        activate = sub.add_parser("activate", help="Accept subscriptions and publications again.")
        activate.add_argument("name")
        deactivate = sub.add_parser(
            "deactivate", help="Refuse subscriptions and publications; drop subscribers."
        )
        deactivate.add_argument("name")

    def handle(self, *args, subcommand: str, **options) -> None:
        handlers = {
            "create": self.create,
            "list": self.list,
            "activate": self.activate,
            "deactivate": self.deactivate,
        }
        handlers[subcommand](**options)

    def create(
        self,
        *,
        name,
        subchannels,
        anonymous_read,
        description,
        history_size,
        history_ttl,
        history_durable,
        presence,
        join_leave,
        bubble,
        cloudevents,
        cloudevents_source,
        **options,
    ) -> None:
        try:
            validate_channel_name(name)
        except InvalidChannelName as error:
            raise CommandError(f"invalid channel name {name!r}: {error.detail}") from None
        if Channel.objects.filter(name=name).exists():
            raise CommandError(f"a channel named {name!r} already exists")
        if history_size < 0 or (history_ttl is not None and history_ttl < 0):
            raise CommandError("--history and --history-ttl must be 0 or more")
        if history_ttl is not None and not history_size:
            raise CommandError("--history-ttl needs --history N")
        fields = {"history_ttl": history_ttl} if history_ttl is not None else {}
        channel = Channel(
            name=name,
            include_subchannels=subchannels,
            anonymous_read=anonymous_read,
            description=description,
            history_size=history_size,
            history_durable=history_durable,
            presence=presence,
            join_leave=join_leave,
            bubble=bubble,
            cloudevents=cloudevents,
            cloudevents_source=cloudevents_source,
            **fields,
        )
        try:
            channel.full_clean()
        except ValidationError as error:
            raise CommandError("; ".join(_flags(error.messages))) from None
        channel.save()
        self.stdout.write(
            f"Created channel {name!r}" + (f" ({details})." if (details := traits(channel)) else ".")
        )

    def list(self, **options) -> None:
        found = list(Channel.objects.all())
        if not found:
            self.stdout.write("No channels.")
            return
        headers = ["NAME", "ACTIVE", "SUB-CHANNELS", "ANONYMOUS READ", "HISTORY", "PRESENCE", "DESCRIPTION"]
        rows = [
            [
                channel.name,
                "yes" if channel.is_active else "no",
                "yes" if channel.include_subchannels else "no",
                "yes" if channel.anonymous_read else "no",
                history_summary(channel),
                ("with join/leave" if channel.join_leave else "yes") if channel.presence else "no",
                Truncator(" ".join(channel.description.split())).chars(50),
            ]
            for channel in found
        ]
        self.stdout.write(format_table(headers, rows))

    def activate(self, *, name, **options) -> None:
        self._set_active(name, True)

    def deactivate(self, *, name, **options) -> None:
        self._set_active(name, False)

    def _set_active(self, name: str, active: bool) -> None:
        try:
            channel = Channel.objects.get(name=name)
        except Channel.DoesNotExist:
            raise CommandError(f"no channel named {name!r} (see: manage.py realtime_channel list)") from None
        state = "active" if active else "inactive"
        if channel.is_active == active:
            self.stdout.write(f"Channel {name!r} was already {state}.")
            return
        channel.is_active = active
        channel.save(update_fields=["is_active", "updated_at"])
        self.stdout.write(f"Channel {name!r} is now {state}.")
