"""The server API from the shell: ``manage.py realtime <call> ...``.

One subcommand per call of ``realtime.api`` (docs/operations.md), with the same
arguments. Output is a table or a sentence; ``--json`` prints the reply as the HTTP
endpoint gives it, for scripts. When a server process did not answer in time, what
the others answered is printed, the missing ones are named on stderr, and the command
exits with status 2.

The command runs in a process of its own, so it reaches the servers only through a
multi-process channel layer (Redis); with the in-memory layer it refuses, as
``realtime_publish`` does.
"""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from realtime import api
from realtime.broker import get_broker
from realtime.errors import RealtimeError
from realtime.management.tables import format_table

PARTIAL = 2  # exit status when some process did not answer


def _json_argument(text: str):
    try:
        return json.loads(text)
    except ValueError as error:
        raise CommandError(f"the data is not valid JSON: {error}") from None


class Command(BaseCommand):
    help = "The realtime server API: act on every server process (see docs/operations.md)."

    def add_arguments(self, parser) -> None:
        sub = parser.add_subparsers(dest="call", required=True, metavar="CALL")

        def call(name: str, help: str, *, fanout: bool = False, aliases=()):
            parser = sub.add_parser(name, help=help, aliases=list(aliases))
            parser.add_argument("--json", action="store_true", help="Print the reply as JSON.")
            if fanout:
                parser.add_argument(
                    "--timeout", type=float, metavar="SECONDS", help="How long to wait for the processes."
                )
                parser.add_argument("--node", metavar="ID", help="Ask this process alone (an id from info).")
            return parser

        def whose(parser) -> None:
            parser.add_argument("--user", metavar="PK", help="The Django user's primary key.")
            parser.add_argument("--client", metavar="ID", help="One connection's client id.")

        call("info", "Every live server process, with its counts.", fanout=True)
        channels = call("channels", "The channels with subscribers now, busiest first.", fanout=True)
        channels.add_argument("prefix", nargs="?", default="", help="Only channels starting with this.")
        channels.add_argument("--limit", type=int, metavar="N", help="At most N channels.")
        disconnect = call("disconnect", "Close every connection of a user, or one client.", fanout=True)
        whose(disconnect)
        disconnect.add_argument(
            "--reconnect", action="store_true", help="Let the clients reconnect (close code 4100, not 4101)."
        )
        disconnect.add_argument("--reason", default="", help="Sent in the close frame, where the server can.")
        for name, text in (("subscribe", "Subscribe"), ("unsubscribe", "Unsubscribe")):
            parser = call(name, f"{text} a user's connections, or one client, server-side.", fanout=True)
            parser.add_argument("channel")
            whose(parser)
        broadcast = call("broadcast", "Publish one event on several channels.")
        broadcast.add_argument("channels", help="Channel names separated by commas: news,alerts.")
        broadcast.add_argument("event")
        broadcast.add_argument("data", metavar="JSON", help='The data, as JSON: \'{"text": "hi"}\', null.')
        call("presence", "Who is subscribed to a channel.").add_argument("channel")
        call(
            "presence_stats", "How many clients and users are subscribed.", aliases=["presence-stats"]
        ).add_argument("channel")
        history = call("history", "A channel's stored publications.")
        history.add_argument("channel")
        history.add_argument("--since", type=int, default=0, metavar="OFFSET")
        history.add_argument("--limit", type=int, default=100, metavar="N")
        history.add_argument("--epoch", metavar="EPOCH")
        call(
            "history_remove", "Forget a channel's stored publications.", aliases=["history-remove"]
        ).add_argument("channel")

    def handle(self, *args, call: str, **options) -> None:
        call = call.replace("-", "_")
        if not get_broker().multi_process:
            raise CommandError(
                "the channel layer is in-memory, so this command's process is no server and reaches "
                "none. Set REDIS_URL (CHANNEL_LAYERS), or use the HTTP API (/realtime/api/...)."
            )
        run, show = CALLS[call]
        try:
            reply = run(options)
        except RealtimeError as error:
            raise CommandError(f"{error.code.value}: {error.detail or error.code.value}") from None
        if options["json"]:
            self.stdout.write(json.dumps({"ok": True, **reply}, ensure_ascii=False, indent=2))
        else:
            show(self, reply)
        missing = reply.get("missing")
        if missing:
            names = ", ".join(
                f"{p['hostname']} pid {p['pid']} (id {p['id']}{', ' + p['err'] if 'err' in p else ''})"
                for p in missing
            )
            raise CommandError(
                f"{len(missing)} server process(es) did not answer in time: {names}", returncode=PARTIAL
            )

    # What each call prints -----------------------------------------------------------

    def show_info(self, reply: dict) -> None:
        headers = ["ID", "HOST", "PID", "VERSION", "UPTIME", "CONNECTIONS", "AUTHENTICATED", "SUBSCRIPTIONS"]
        rows = [
            [
                p["id"],
                p["hostname"],
                str(p["pid"]),
                p["version"],
                f"{p['uptime']:.0f}s",
                str(p["connections"]),
                str(p["authenticated"]),
                str(p["subscriptions"]),
            ]
            for p in reply["processes"]
        ]
        self.stdout.write(format_table(headers, rows) if rows else "No server process answered.")

    def show_channels(self, reply: dict) -> None:
        rows = [
            [row["channel"], str(row["subscribers"]), "-" if row["rate"] is None else f"{row['rate']:g}/s"]
            for row in reply["channels"]
        ]
        if not rows:
            self.stdout.write("No channel has subscribers.")
            return
        self.stdout.write(format_table(["CHANNEL", "SUBSCRIBERS", "PUBLICATIONS"], rows))
        if reply["total"] > len(rows):
            self.stdout.write(f"({reply['total'] - len(rows)} more)")

    def show_publications(self, reply: dict) -> None:
        for entry in reply["publications"]:
            if "err" in entry:
                self.stdout.write(f"{entry['channel']}: {entry['err']} {entry.get('detail', '')}".rstrip())
            else:
                offset = f" offset {entry['offset']}" if "offset" in entry else ""
                self.stdout.write(f"{entry['channel']}: published{offset}")

    def show_presence(self, reply: dict) -> None:
        rows = [
            [member["user"]["name"] if member["user"] else "-", ", ".join(member["clients"])]
            for member in reply["members"]
        ]
        self.stdout.write(format_table(["USER", "CLIENTS"], rows) if rows else "Nobody is subscribed.")

    def show_presence_stats(self, reply: dict) -> None:
        self.stdout.write(f"{reply['clients']} client(s), {reply['users']} user(s) on {reply['channel']!r}.")

    def show_history(self, reply: dict) -> None:
        state = "complete" if reply["complete"] else "incomplete"
        self.stdout.write(f"{reply['channel']}: epoch {reply['epoch']}, offset {reply['offset']}, {state}")
        for publication in reply["publications"]:
            self.stdout.write(json.dumps(publication, ensure_ascii=False))

    def show_removed(self, reply: dict) -> None:
        self.stdout.write(f"Removed the history of {reply['channel']!r}.")


def _show_clients(what: str):
    """How disconnect, subscribe and unsubscribe print: the client ids they acted on."""

    def show(command: Command, reply: dict) -> None:
        clients = reply[what]
        where = f" on {reply['channel']!r}" if "channel" in reply else ""
        command.stdout.write(f"{what.capitalize()} {len(clients)} connection(s){where}.")
        for client in clients:
            command.stdout.write(f"  {client}")
        for refused in reply.get("refused", ()):
            command.stdout.write(f"  refused {refused['client']}: {refused['err']}")

    return show


def _fanout(options: dict) -> dict:
    return {"timeout": options["timeout"], "node": options["node"]}


def _whose(options: dict) -> dict:
    return {"user": options["user"], "client": options["client"], **_fanout(options)}


CALLS = {
    "info": (lambda o: api.info(**_fanout(o)), Command.show_info),
    "channels": (lambda o: api.channels(o["prefix"], limit=o["limit"], **_fanout(o)), Command.show_channels),
    "disconnect": (
        lambda o: api.disconnect(reconnect=o["reconnect"], reason=o["reason"], **_whose(o)),
        _show_clients("disconnected"),
    ),
    "subscribe": (lambda o: api.subscribe(o["channel"], **_whose(o)), _show_clients("subscribed")),
    "unsubscribe": (
        lambda o: api.unsubscribe(o["channel"], **_whose(o)),
        _show_clients("unsubscribed"),
    ),
    "broadcast": (
        lambda o: api.broadcast(
            [name for name in o["channels"].split(",") if name], o["event"], _json_argument(o["data"])
        ),
        Command.show_publications,
    ),
    "presence": (lambda o: api.presence(o["channel"]), Command.show_presence),
    "presence_stats": (lambda o: api.presence_stats(o["channel"]), Command.show_presence_stats),
    "history": (
        lambda o: api.history(o["channel"], since=o["since"], limit=o["limit"], epoch=o["epoch"]),
        Command.show_history,
    ),
    "history_remove": (lambda o: api.history_remove(o["channel"]), Command.show_removed),
}
