"""Webhooks: realtime's events as signed HTTP POSTs, for backends that are not this project.

Endpoints are ``WebhookEndpoint`` rows, managed in the admin (the signing secret is shown
once, like a key's; see ``realtime.webhook_secrets``). Each takes some of these events,
named as Pusher names them where they mean the same:

======================  ==================================================================
``channel_occupied``    the first member joined a channel with presence
``channel_vacated``     the last member left it
``member_added``        a member (a user, or a connection without one) joined
``member_removed``      a member's last connection left
``client_event``        a client published on a channel with *client publications to webhooks*
======================  ==================================================================

The first four are cluster-wide: the process whose presence update made the change (the
Redis scripts report each change to exactly one caller) sends it, so each reaches each
endpoint once, not once per process. A ``client_event`` is sent by the process the client
published through.

Delivery, per process and endpoint: events wait in a queue of ``WEBHOOK_QUEUE_SIZE``
(when it is full the **oldest** are dropped, with a warning in the log: an endpoint that
is down for long loses the start of what happened, not the latest); one POST at a time
carries up to ``WEBHOOK_BATCH_SIZE`` of them, in order, as ``{"time_ms": ..., "events":
[...]}``, signed in ``X-Realtime-Signature: sha256=<HMAC-SHA256 of the body>``; a POST that
fails (no connection, ``WEBHOOK_TIMEOUT``, a 5xx, 408 or 429) is retried with the same body
and ``X-Realtime-Delivery`` id, up to ``WEBHOOK_MAX_ATTEMPTS`` times, waiting
``WEBHOOK_RETRY_DELAY`` seconds and doubling (with jitter) up to
``WEBHOOK_MAX_RETRY_DELAY``; other 4xx answers are not retried. A batch that runs out of
attempts is dropped and logged. Delivery is therefore at most once per event, and an
event reported by a process that dies before sending it is lost. Nothing here runs on
the fan-out path: events are handed over by ``realtime.events`` and sent by tasks.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import secrets
import time
import weakref
from collections import deque
from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async

from . import __version__, events, signals, webhook_secrets
from .cache import TTLCache
from .conf import settings

logger = logging.getLogger("realtime")

EVENT_NAMES = {
    signals.channel_occupied: "channel_occupied",
    signals.channel_vacated: "channel_vacated",
    signals.member_joined: "member_added",
    signals.member_left: "member_removed",
    signals.client_published: "client_event",
}
RETRIED_STATUSES = frozenset({408, 429})
_ENDPOINTS = "endpoints"

# The active endpoints, reloaded every REVALIDATE_INTERVAL and when they change.
cache = TTLCache(1)


@dataclass(frozen=True)
class Target:
    id: int
    name: str
    url: str
    events: frozenset[str]
    secret: str


def _load_endpoints() -> list[Target]:
    from django.db import close_old_connections

    from .models import WebhookEndpoint

    close_old_connections()
    targets = []
    for endpoint in WebhookEndpoint.objects.filter(is_active=True):
        secret = endpoint.secret()
        if secret is None:
            logger.error(
                "realtime: the secret of the webhook endpoint %r cannot be decrypted (SECRET_KEY changed "
                "without SECRET_KEY_FALLBACKS); regenerate it in the admin",
                endpoint.name,
            )
            continue
        targets.append(Target(endpoint.pk, endpoint.name, endpoint.url, frozenset(endpoint.events), secret))
    return targets


def _event(signal, arguments: dict[str, Any]) -> dict[str, Any] | None:
    name = EVENT_NAMES.get(signal)
    if name is None:
        return None
    channel = arguments["channel"]
    if signal is signals.client_published:
        if not arguments["row"].webhook_publications:
            return None
        principal = arguments["principal"]
        return {
            "name": name,
            "channel": channel,
            "event": arguments["event"],
            "data": arguments["data"],
            "user_id": principal.user_id if principal is not None else None,
            "client": arguments["client"],
        }
    event: dict[str, Any] = {"name": name, "channel": channel}
    member = arguments.get("member")
    if member is not None:
        user = member.get("user")
        event.update(user_id=user.get("id") if user else None, user=user, client=member.get("client"))
    return event


def sink(signal, arguments: dict[str, Any]) -> None:
    """``realtime.events`` hands every event here; those webhooks take are queued."""
    if signal not in EVENT_NAMES:
        return
    if cache.get(_ENDPOINTS) == []:
        return  # no endpoint: nothing to do (until the cache is reloaded)
    event = _event(signal, arguments)
    if event is not None:
        dispatcher_for(asyncio.get_running_loop()).accept(event)


def install() -> None:
    """Start taking events (``RealtimeConfig.ready`` calls it)."""
    events.add_sink(sink)


class _Outlet:
    """One endpoint's queue in this process, and the task that POSTs it."""

    def __init__(self, dispatcher: _Dispatcher, target: Target) -> None:
        self.dispatcher = dispatcher
        self.target = target
        self.queue: deque[dict] = deque(maxlen=settings.WEBHOOK_QUEUE_SIZE)
        self.wake = asyncio.Event()
        self.dropped = events.Drops()
        self.task = dispatcher.loop.create_task(self._run())

    def add(self, event: dict) -> None:
        if len(self.queue) == self.queue.maxlen:
            self.dropped.add(
                "realtime: the webhook queue of %r is full (WEBHOOK_QUEUE_SIZE=%s): "
                "%s oldest events dropped so far",
                self.target.name,
                self.queue.maxlen,
            )
        self.queue.append(event)
        self.wake.set()

    async def _run(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            while self.queue:
                size = min(len(self.queue), settings.WEBHOOK_BATCH_SIZE)
                batch = [self.queue.popleft() for _ in range(size)]
                try:
                    await self._deliver(batch)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    logger.exception("realtime: delivering to the webhook %r failed", self.target.name)

    async def _deliver(self, batch: list[dict]) -> None:
        import aiohttp

        target = self.target
        body = json.dumps(
            {"time_ms": int(time.time() * 1000), "events": batch}, separators=(",", ":"), ensure_ascii=False
        ).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"realtime-webhooks/{__version__}",
            webhook_secrets.SIGNATURE_HEADER: webhook_secrets.signature(target.secret, body),
            "X-Realtime-Webhook": target.name,
            "X-Realtime-Delivery": secrets.token_hex(16),
        }
        attempts = settings.WEBHOOK_MAX_ATTEMPTS
        for attempt in range(1, attempts + 1):
            headers["X-Realtime-Attempt"] = str(attempt)
            try:
                session = self.dispatcher.http()
                timeout = aiohttp.ClientTimeout(total=settings.WEBHOOK_TIMEOUT)
                async with session.post(
                    target.url, data=body, headers=headers, timeout=timeout, allow_redirects=False
                ) as response:
                    status = response.status
                if 200 <= status < 300:
                    return
                problem = f"answered {status}"
                if status < 500 and status not in RETRIED_STATUSES:
                    logger.error(
                        "realtime: the webhook %r %s; %s events dropped (4xx answers are not retried)",
                        target.name,
                        problem,
                        len(batch),
                    )
                    return
            except (aiohttp.ClientError, TimeoutError, OSError) as error:
                problem = f"failed: {type(error).__name__}: {error}"
            if attempt == attempts:
                logger.error(
                    "realtime: the webhook %r %s; %s events dropped after %s attempts",
                    target.name,
                    problem,
                    len(batch),
                    attempts,
                )
                return
            delay = min(settings.WEBHOOK_RETRY_DELAY * 2 ** (attempt - 1), settings.WEBHOOK_MAX_RETRY_DELAY)
            delay *= random.uniform(0.5, 1.0)
            logger.warning(
                "realtime: the webhook %r %s; attempt %s of %s again in %.1fs",
                target.name,
                problem,
                attempt + 1,
                attempts,
                delay,
            )
            await asyncio.sleep(delay)


class _Dispatcher:
    """The webhooks of one event loop: routes events to the endpoints that take them."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.intake: deque[dict] = deque()
        self.wake = asyncio.Event()
        self.outlets: dict[int, _Outlet] = {}
        self._session = None
        self.dropped = 0
        self.task = loop.create_task(self._route())

    def accept(self, event: dict) -> None:
        if len(self.intake) >= settings.WEBHOOK_QUEUE_SIZE:
            self.dropped += 1
            if self.dropped % 1000 == 1:
                logger.warning(
                    "realtime: webhook events arrive faster than they are routed; %s dropped", self.dropped
                )
            return
        self.intake.append(event)
        self.wake.set()

    def http(self):
        import aiohttp

        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        return self._session

    async def _route(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            try:
                targets = await cache.load(_ENDPOINTS, sync_to_async(_load_endpoints))
            except Exception as error:
                # Without the endpoints nothing can be routed; the next event tries again.
                logger.warning(
                    "realtime: could not load the webhook endpoints (%s); %s events dropped",
                    error,
                    len(self.intake),
                )
                self.intake.clear()
                continue
            self._retarget(targets)
            while self.intake:
                event = self.intake.popleft()
                for target in targets:
                    if event["name"] in target.events:
                        self.outlets[target.id].add(event)

    def _retarget(self, targets: list[Target]) -> None:
        wanted = {target.id: target for target in targets}
        for endpoint_id in list(self.outlets):
            if endpoint_id not in wanted:
                self.outlets.pop(endpoint_id).task.cancel()
        for endpoint_id, target in wanted.items():
            outlet = self.outlets.get(endpoint_id)
            if outlet is None:
                self.outlets[endpoint_id] = _Outlet(self, target)
            else:
                outlet.target = target  # a new URL, secret or events from the next batch on


_dispatchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Dispatcher] = weakref.WeakKeyDictionary()


def dispatcher_for(loop: asyncio.AbstractEventLoop) -> _Dispatcher:
    dispatcher = _dispatchers.get(loop)
    if dispatcher is None or dispatcher.task.done():
        dispatcher = _dispatchers[loop] = _Dispatcher(loop)
    return dispatcher
