"""Publish one message from the shell: ``manage.py realtime_publish CHANNEL EVENT JSON``.

The command runs in a process of its own, so it reaches subscribers only through a
multi-process channel layer (Redis). With the in-memory layer the publication would
stay inside this process and reach no server, so the command refuses rather than
report a success that delivered nothing.
"""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from realtime.broker import get_broker
from realtime.errors import RealtimeError
from realtime.publishing import publish


class Command(BaseCommand):
    help = "Publish an event with JSON data on a channel, to every subscriber on every server process."

    def add_arguments(self, parser) -> None:
        parser.add_argument("channel", help="For example news or rooms/lobby.")
        parser.add_argument("event", help="The event name subscribers receive.")
        parser.add_argument(
            "data", metavar="JSON", help='The data, as JSON: \'{"text": "hello"}\', 42, null.'
        )

    def handle(self, *args, channel: str, event: str, data: str, **options) -> None:
        try:
            value = json.loads(data)
        except ValueError as error:
            raise CommandError(f"the data is not valid JSON: {error}") from None
        if not get_broker().multi_process:
            raise CommandError(
                "the channel layer is in-memory, so a publication from this command would reach no "
                "server process. Set REDIS_URL (CHANNEL_LAYERS) to publish from commands, or use the "
                "HTTP API (POST /realtime/api/publish)."
            )
        try:
            publish(channel, event, value)
        except RealtimeError as error:
            raise CommandError(f"{error.code.value}: {error.detail or error.code.value}") from None
        self.stdout.write("published")
