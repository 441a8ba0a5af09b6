"""Publish this machine's CPU and memory use on ``metrics`` once a second, for the dashboard.

This runs in a process of its own, so its publications reach the servers only through
Redis: set ``REDIS_URL`` for it and for the servers. Without Redis, ``make run`` needs no
command at all: the dashboard starts a publisher thread inside the server.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from realtime.broker import get_broker

from ...metrics import run_publisher


class Command(BaseCommand):
    help = "Publish CPU and memory samples on the metrics channel every second (needs REDIS_URL)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--count", type=int, default=None, help="Stop after N samples (default: never).")
        parser.add_argument("--interval", type=float, default=1.0, help="Seconds between samples.")

    def handle(self, *args, count: int | None, interval: float, verbosity: int, **options) -> None:
        if count is not None and count < 1:
            raise CommandError("--count must be at least 1")
        if interval <= 0:
            raise CommandError("--interval must be positive")
        if not get_broker().multi_process:
            raise CommandError(
                "The in-memory channel layer keeps publications inside this process, so no server "
                "would see them. Set REDIS_URL (for the servers too), or just open the dashboard: "
                "without Redis it publishes from inside the server."
            )

        def report(data: dict) -> None:
            if verbosity > 1:
                self.stdout.write(f"cpu {data['cpu']:5.1f}%  memory {data['memory']:5.1f}%")

        try:
            published = run_publisher(interval=interval, count=count, on_sample=report)
        except KeyboardInterrupt:
            return
        self.stdout.write(f"Published {published} samples on metrics.")
