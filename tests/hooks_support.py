"""Project code for the tests of docs/hooks.md, as a project would write it.

The server processes that those tests start import it: the policy and the publish
handlers by their dotted paths in ``REALTIME``, and the signal receivers and RPC methods
through :class:`HooksTestConfig` (added to ``INSTALLED_APPS`` by ``REALTIME_TEST_APPS``,
see ``tests/settings.py``). Receivers and the policy write what they saw to Redis
(the servers' ``REDIS_URL``), where the tests read it.
"""

from __future__ import annotations

import asyncio
import json
import os

import redis
import redis.asyncio
from django.apps import AppConfig

from realtime import rpc, signals
from realtime.errors import InvalidData, Rejected
from realtime.permissions import Policy

EVENTS = "hooks-test:events"
COUNTS = "hooks-test:counts"
APPS = ["tests.hooks_support.HooksTestConfig"]
RECORDED = (
    "connected",
    "authenticated",
    "disconnected",
    "subscribed",
    "unsubscribed",
    "client_published",
    "channel_occupied",
    "channel_vacated",
    "member_joined",
    "member_left",
)
NAMES = {getattr(signals, name): name for name in RECORDED}


def _url() -> str:
    return os.environ["REDIS_URL"]


async def _write(command: str, *args) -> None:
    client = redis.asyncio.Redis.from_url(_url())
    try:
        await getattr(client, command)(*args)
    finally:
        await client.aclose()


# Receivers ------------------------------------------------------------------------------


async def record(signal, sender, **arguments) -> None:
    principal = arguments.get("principal")
    entry = {
        "signal": NAMES[signal],
        "sender": sender.__name__,
        "pid": os.getpid(),
        "user_id": principal.user_id if principal is not None else None,
        "key_id": principal.key_id if principal is not None else None,
        **{
            name: arguments[name]
            for name in (
                "client",
                "protocol",
                "channel",
                "code",
                "reason",
                "member",
                "refreshed",
                "event",
                "data",
            )
            if name in arguments
        },
    }
    if "scope" in arguments:
        entry["path"] = arguments["scope"]["path"] if arguments["scope"] else None
    await _write("rpush", EVENTS, json.dumps(entry))


def record_sync(signal, sender, client, **arguments) -> None:
    """A plain receiver: Django runs it in its sync thread."""
    with redis.Redis.from_url(_url()) as client_:
        client_.rpush(EVENTS, json.dumps({"signal": "connected.sync", "client": client, "pid": os.getpid()}))


def explode(signal, sender, channel, **arguments) -> None:
    if channel.startswith("explode-"):
        raise RuntimeError(f"a receiver that fails, on {channel}")


async def dawdle(signal, sender, channel, **arguments) -> None:
    if channel.startswith("slow-"):
        await asyncio.sleep(30)  # longer than the servers' SIGNAL_TIMEOUT


# A policy that asks the database ---------------------------------------------------------


async def _count(what: str) -> None:
    await _write("hincrby", COUNTS, what, 1)


class DatabasePolicy(Policy):
    """Counts every question (in Redis). Channels under a row named ``teams-*`` may be read
    by members of the Django group named like the channel (``teams-x/red``); channels
    ending in ``/secret`` by no one; the rest as the default policy says."""

    async def may_subscribe(self, request):
        await _count(f"read:{request.channel}")
        if request.channel.endswith("/secret"):
            return False
        if request.row.name.startswith("teams-") and request.channel != request.row.name:
            user = await request.auser()
            return user is not None and await user.groups.filter(name=request.channel).aexists()
        return super().may_subscribe(request)

    async def may_publish(self, request):
        await _count(f"write:{request.channel}")
        return super().may_publish(request)


# Publish handlers --------------------------------------------------------------------------


async def wrap(publication) -> None:
    """An async handler: refuses, fails, dawdles or wraps the data, as the data asks."""
    data = publication.data
    if data == "reject":
        raise Rejected("this one is refused", code="not_this_one")
    if data == "invalid":
        raise InvalidData("the handler wants something else")
    if data == "boom":
        raise RuntimeError("a handler with a bug")
    if data == "slow":
        await asyncio.sleep(30)  # longer than HANDLER_TIMEOUT
    publication.data = {"wrapped": data, "by": publication.user_id, "client": publication.client}
    publication.event = f"{publication.event}.wrapped"


# RPC methods ---------------------------------------------------------------------------------


def whoami_from_database(request):
    """A plain method: runs in Django's sync thread and may use the ORM."""
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.get(pk=request.user_id)
    return {"username": user.username, "protocol": request.protocol, "data": request.data}


async def fail(request):
    raise RuntimeError("a method with a bug")


async def dawdle_rpc(request):
    await asyncio.sleep(30)


def big(request):
    return "x" * int(request.data)


def refuse(request):
    raise Rejected("not today", code="try_tomorrow")


def unencodable(request):
    return {"when": object()}


class HooksTestConfig(AppConfig):
    name = "tests"
    label = "hooks_tests"
    verbose_name = "hooks tests"

    def ready(self) -> None:
        for signal in NAMES:
            signal.connect(record, dispatch_uid=f"hooks-test-{NAMES[signal]}")
        signals.connected.connect(record_sync, dispatch_uid="hooks-test-connected-sync")
        signals.subscribed.connect(explode, dispatch_uid="hooks-test-explode")
        signals.subscribed.connect(dawdle, dispatch_uid="hooks-test-dawdle")
        rpc.register("tests.whoami", whoami_from_database)
        rpc.register("tests.fail", fail, anonymous=True)
        rpc.register("tests.slow", dawdle_rpc, anonymous=True)
        rpc.register("tests.big", big, anonymous=True)
        rpc.register("tests.refuse", refuse, anonymous=True)
        rpc.register("tests.unencodable", unencodable, anonymous=True)


# What the tests read ------------------------------------------------------------------------


class Recorded:
    """The test process's view of what the servers recorded, in Redis."""

    def __init__(self, url: str) -> None:
        self.redis = redis.Redis.from_url(url)

    def clear(self) -> None:
        self.redis.delete(EVENTS, COUNTS)

    def events(self, **match) -> list[dict]:
        found = [json.loads(raw) for raw in self.redis.lrange(EVENTS, 0, -1)]
        return [e for e in found if all(e.get(k) == v for k, v in match.items())]

    def wait_for(self, count: int = 1, timeout: float = 10.0, **match) -> list[dict]:
        import time

        deadline = time.monotonic() + timeout
        while True:
            found = self.events(**match)
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.05)

    def count(self, what: str) -> int:
        return int(self.redis.hget(COUNTS, what) or 0)
