"""The server API: act on every server process's connections and channels.

Public. Each call has an async function (``await realtime.api.achannels()``) and a
synchronous twin (``realtime.api.channels()``) for views, tasks and the shell; the HTTP
endpoints (``/realtime/api/<call>``) and ``manage.py realtime <call>`` call the same
functions and return the same replies, documented in ``docs/operations.md``::

    from realtime import api

    api.disconnect(user=request.user)                 # every tab of a user, on every process
    api.unsubscribe("rooms/lobby", client="3f2a...")  # one connection, from one channel
    busiest = (await api.achannels(prefix="rooms/"))["channels"]

Calls that ask the server processes (``info``, ``channels``, ``disconnect``,
``subscribe``, ``unsubscribe``) go to every process through the broker (Redis) and
wait at most ``timeout`` seconds (``REALTIME["API_TIMEOUT"]`` by default). Their reply
lists the processes that ``answered`` and those ``missing``: listed in the registry but
silent (or answering an error, given as ``err``). A missing process carries out the
command only if it gets it before the deadline, and never after. With the in-memory
layer the calls act on this process's own hubs. The other calls (``broadcast``,
``presence``, ``presence_stats``, ``history``, ``history_remove``) read or write
Redis directly.

Bad arguments raise :class:`~realtime.errors.RealtimeError` subclasses (the HTTP
endpoints answer them in the socket's error format); a broker that cannot be reached
raises :class:`~realtime.errors.Unavailable`.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Iterable
from typing import Any

from asgiref.sync import async_to_sync

from . import protocol, registry
from .broker import get_broker
from .conf import settings
from .errors import (
    CloseCode,
    HistoryDisabled,
    InvalidChannel,
    InvalidData,
    PresenceDisabled,
    RealtimeError,
    Unavailable,
)
from .names import is_pattern, validate_channel_name, validate_subscription_name
from .publishing import send_publication, validate_event

# The longest timeout a caller may ask for, in seconds.
MAX_TIMEOUT = 60.0
# WebSocket close reasons are at most 123 bytes of UTF-8.
MAX_REASON_BYTES = 123
MAX_CLIENT_ID_LENGTH = 64

__all__ = [
    "abroadcast",
    "achannels",
    "adisconnect",
    "ahistory",
    "ahistory_remove",
    "ainfo",
    "apresence",
    "apresence_stats",
    "asubscribe",
    "aunsubscribe",
    "broadcast",
    "channels",
    "disconnect",
    "history",
    "history_remove",
    "info",
    "presence",
    "presence_stats",
    "subscribe",
    "unsubscribe",
]


# Arguments ---------------------------------------------------------------------------


def _timeout(timeout: float | None) -> float:
    if timeout is None:
        return settings.API_TIMEOUT
    numeric = isinstance(timeout, (int, float)) and not isinstance(timeout, bool)
    if not numeric or not math.isfinite(timeout) or not 0 < timeout <= MAX_TIMEOUT:
        raise InvalidData(f"timeout must be a number of seconds greater than 0, at most {MAX_TIMEOUT:g}")
    return float(timeout)


def _node(node: str | None) -> str | None:
    if node is not None and (not isinstance(node, str) or not node or len(node) > 64):
        raise InvalidData("node must be a process id, as info lists it")
    return node


def _user(user: Any) -> str | None:
    """A Django user, or its primary key, as the string connections are matched with."""
    if user is None:
        return None
    pk = getattr(user, "pk", user)
    if isinstance(pk, bool) or pk is None or (isinstance(pk, str) and not pk.strip()):
        raise InvalidData("user must be a Django user or its primary key")
    if not isinstance(pk, (int, str, uuid.UUID)):
        raise InvalidData("user must be a Django user or its primary key")
    return str(pk)


def _whose(user: Any, client: Any) -> dict:
    if user is None and client is None:
        raise InvalidData("say whose connections: user, client, or both")
    if client is not None and (
        not isinstance(client, str) or not client or len(client) > MAX_CLIENT_ID_LENGTH
    ):
        raise InvalidData("client must be a client id (as presence and subscribe replies show it)")
    return {"user": _user(user), "client": client}


async def _channel(channel: Any) -> tuple[str, registry.ChannelInfo]:
    name = validate_channel_name(channel)
    info = await registry.aresolve(name)
    if info is None:
        raise InvalidChannel(f"no active channel covers {name!r}")
    return name, info


# Asking every process ------------------------------------------------------------------


async def _ask(command: dict, timeout: float | None, node: str | None) -> tuple[list, dict]:
    """Send ``command`` to the hubs: ``([(node identity, result), ...], envelope)``.

    The envelope is what every fan-out reply carries: ``answered`` and ``missing``.
    """
    replies = await get_broker().request(command, _timeout(timeout), _node(node))
    results, answered, missing = [], [], list(replies.missing)
    for answer in replies.answers:
        identity = answer["node"]
        if "error" in answer:
            code, detail = answer["error"]
            missing.append({**identity, "err": code, **({"detail": detail} if detail else {})})
        else:
            results.append((identity, answer["result"]))
            answered.append(identity)
    order = lambda item: (item["hostname"], item["pid"], item["id"])  # noqa: E731
    return results, {"answered": sorted(answered, key=order), "missing": sorted(missing, key=order)}


async def ainfo(*, timeout: float | None = None, node: str | None = None) -> dict:
    """Every live server process: its identity, version, uptime and counts."""
    results, envelope = await _ask({"call": "info"}, timeout, node)
    processes = []
    for identity, result in results:
        processes.append(
            {
                **identity,
                "version": result["version"],
                "uptime": result["uptime"],
                "connections": sum(result["connections"].values()),
                "authenticated": sum(result["authenticated"].values()),
                "subscriptions": result["subscriptions"],
                "channels": result["channels"],
                "protocols": result["connections"],
            }
        )
    processes.sort(key=lambda item: (item["hostname"], item["pid"], item["id"]))
    totals = {
        key: sum(process[key] for process in processes)
        for key in ("connections", "authenticated", "subscriptions")
    }
    return {"processes": processes, "totals": totals, **envelope}


async def achannels(
    prefix: str = "", *, limit: int | None = None, timeout: float | None = None, node: str | None = None
) -> dict:
    """The channels that have subscribers now, busiest first, with their subscriber
    counts summed over the processes and their publication rates."""
    if not isinstance(prefix, str) or len(prefix) > 200:
        raise InvalidData("prefix must be a string of at most 200 characters")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise InvalidData("limit must be an integer of at least 1")
    results, envelope = await _ask({"call": "channels", "prefix": prefix}, timeout, node)
    found: dict[str, list] = {}
    for _, result in results:
        for name, subscribers, rate in result["channels"]:
            entry = found.setdefault(name, [0, None])
            entry[0] += subscribers
            if rate is not None:
                # Each process with subscribers receives every publication once: the
                # channel's rate is what any of them saw, not their sum.
                entry[1] = max(entry[1] or 0.0, rate)
    rows = [
        {"channel": name, "subscribers": subscribers, "rate": rate}
        for name, (subscribers, rate) in found.items()
    ]
    rows.sort(key=lambda row: (-row["subscribers"], row["channel"]))
    return {"channels": rows[:limit] if limit else rows, "total": len(rows), **envelope}


async def adisconnect(
    *,
    user: Any = None,
    client: str | None = None,
    reconnect: bool = False,
    reason: str = "",
    timeout: float | None = None,
    node: str | None = None,
) -> dict:
    """Close every connection of ``user`` (a Django user or its pk), or the one whose
    client id is ``client``, on every process.

    The close code tells the client what to do: 4101 (``DISCONNECTED_FOR_GOOD``, the
    default) not to reconnect, 4100 (``DISCONNECTED``, with ``reconnect=True``) to
    reconnect after a back-off. ``reason`` goes into the close frame (uvicorn sends it).
    """
    whose = _whose(user, client)
    if not isinstance(reconnect, bool):
        raise InvalidData("reconnect must be true or false")
    if not isinstance(reason, str) or not protocol.is_encodable(reason):
        raise InvalidData("reason must be a string")
    if len(reason.encode()) > MAX_REASON_BYTES:
        raise InvalidData(f"reason must be at most {MAX_REASON_BYTES} bytes of UTF-8")
    code = CloseCode.DISCONNECTED if reconnect else CloseCode.DISCONNECTED_FOR_GOOD
    command = {"call": "disconnect", **whose, "code": int(code), "reason": reason}
    results, envelope = await _ask(command, timeout, node)
    clients = sorted(client for _, result in results for client in result["clients"])
    return {"disconnected": clients, "code": int(code), **envelope}


async def _subscription(channel: Any) -> str:
    name = validate_subscription_name(channel)
    if not is_pattern(name):
        await _channel(name)
    return name


async def asubscribe(
    channel: str,
    *,
    user: Any = None,
    client: str | None = None,
    timeout: float | None = None,
    node: str | None = None,
) -> dict:
    """Subscribe the connections of ``user`` (or the client ``client``) to ``channel``,
    as if each had asked: the same access checks apply, and each is told with a
    ``subscribed`` notice. The subscription lasts as long as the connection."""
    whose = _whose(user, client)
    name = await _subscription(channel)
    results, envelope = await _ask({"call": "subscribe", "channel": name, **whose}, timeout, node)
    subscribed, already, refused = [], [], []
    for _, result in results:
        subscribed += result["clients"]
        already += result["already"]
        for client_id, code, detail in result["refused"]:
            refused.append({"client": client_id, "err": code, **({"detail": detail} if detail else {})})
    return {
        "channel": name,
        "subscribed": sorted(subscribed),
        "already": sorted(already),
        "refused": sorted(refused, key=lambda item: item["client"]),
        **envelope,
    }


async def aunsubscribe(
    channel: str,
    *,
    user: Any = None,
    client: str | None = None,
    timeout: float | None = None,
    node: str | None = None,
) -> dict:
    """End the subscription to ``channel`` (a channel or a pattern) of the connections
    of ``user`` (or the client ``client``); each gets an ``unsubscribed`` notice with
    reason ``server``."""
    whose = _whose(user, client)
    name = validate_subscription_name(channel)
    results, envelope = await _ask({"call": "unsubscribe", "channel": name, **whose}, timeout, node)
    clients = sorted(client for _, result in results for client in result["clients"])
    return {"channel": name, "unsubscribed": clients, **envelope}


# Publishing, presence and history --------------------------------------------------


async def abroadcast(channels: Iterable[str], event: str, data: Any = None) -> dict:
    """Publish the same ``event`` and ``data`` on each of ``channels``, in order.

    Each channel succeeds or fails on its own: the reply lists, per channel, its offset
    and epoch (on channels with history) or its error.
    """
    if isinstance(channels, (str, bytes)) or not isinstance(channels, Iterable):
        raise InvalidData("channels must be a list of channel names")
    names = list(channels)
    if not names:
        raise InvalidData("channels must name at least one channel")
    validate_event(event)
    publications = []
    for name in names:
        try:
            name, info = await _channel(name)
            publication = await send_publication(name, event, data, info=info)
        except RealtimeError as error:
            entry = {"channel": name, "err": error.code.value}
            if error.detail:
                entry["detail"] = error.detail
        else:
            entry = {"channel": name, "ok": True}
            if publication.offset is not None:
                entry.update(offset=publication.offset, epoch=publication.epoch)
        publications.append(entry)
    return {"publications": publications}


async def _presence_of(channel: Any) -> tuple[str, list[dict]]:
    name, info = await _channel(channel)
    if not info.presence:
        raise PresenceDisabled(f"{name!r} has no presence")
    broker = get_broker()
    if broker.presence is None:
        raise Unavailable("presence needs a Redis channel layer (channels_redis)")
    members, left = await broker.presence.members(name)
    if info.join_leave:
        for member in left:
            await broker.notice(name, protocol.leave_frame(name, member))
    return name, members


async def apresence(channel: str) -> dict:
    """Who is subscribed to ``channel`` now, on every process: the same members a
    client's ``presence`` gets (a user with all their client ids)."""
    name, members = await _presence_of(channel)
    return {"channel": name, "members": members}


async def apresence_stats(channel: str) -> dict:
    """How many connections (``clients``) and distinct users are subscribed to ``channel``."""
    name, members = await _presence_of(channel)
    return {
        "channel": name,
        "clients": sum(len(member["clients"]) for member in members),
        "users": sum(1 for member in members if member["user"] is not None),
    }


async def _history_channel(channel: Any) -> tuple[str, registry.ChannelInfo]:
    name, info = await _channel(channel)
    if not info.has_history:
        raise HistoryDisabled(f"{name!r} keeps no history")
    return name, info


def _int(value: Any, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidData(f"{what} must be an integer from {low} to {high}")
    return value


def _history_store():
    store = get_broker().history
    if store is None:
        raise Unavailable("history needs a Redis channel layer (channels_redis)")
    return store


async def ahistory(
    channel: str, *, since: int = 0, limit: int = protocol.HISTORY_DEFAULT_LIMIT, epoch: str | None = None
) -> dict:
    """``channel``'s stored publications after ``since``: what the HTTP event log returns."""
    since = _int(since, "since", 0, protocol.MAX_OFFSET)
    limit = _int(limit, "limit", 1, protocol.HISTORY_MAX_LIMIT)
    if epoch is not None and (
        not isinstance(epoch, str)
        or len(epoch) > protocol.MAX_EPOCH_LENGTH
        or not protocol.is_encodable(epoch)
    ):
        raise InvalidData("epoch is not one this server issued")
    name, info = await _history_channel(channel)
    page = await _history_store().read(name, info, since, limit, epoch or None)
    return json.loads(protocol.history_reply(None, name, page))["history"]


async def ahistory_remove(channel: str) -> dict:
    """Forget ``channel``'s stored publications (and its database copy, if durable).

    The next publication starts a new epoch at offset 1, so a client that recovers
    with an old position is told ``recovered: false``.
    """
    name, info = await _history_channel(channel)
    await _history_store().remove(name, info)
    return {"channel": name, "removed": True}


# Synchronous twins --------------------------------------------------------------------


def info(**kwargs: Any) -> dict:
    """Synchronous :func:`ainfo`."""
    return async_to_sync(ainfo)(**kwargs)


def channels(prefix: str = "", **kwargs: Any) -> dict:
    """Synchronous :func:`achannels`."""
    return async_to_sync(achannels)(prefix, **kwargs)


def disconnect(**kwargs: Any) -> dict:
    """Synchronous :func:`adisconnect`."""
    return async_to_sync(adisconnect)(**kwargs)


def subscribe(channel: str, **kwargs: Any) -> dict:
    """Synchronous :func:`asubscribe`."""
    return async_to_sync(asubscribe)(channel, **kwargs)


def unsubscribe(channel: str, **kwargs: Any) -> dict:
    """Synchronous :func:`aunsubscribe`."""
    return async_to_sync(aunsubscribe)(channel, **kwargs)


def broadcast(channels: Iterable[str], event: str, data: Any = None) -> dict:
    """Synchronous :func:`abroadcast`."""
    return async_to_sync(abroadcast)(channels, event, data)


def presence(channel: str) -> dict:
    """Synchronous :func:`apresence`."""
    return async_to_sync(apresence)(channel)


def presence_stats(channel: str) -> dict:
    """Synchronous :func:`apresence_stats`."""
    return async_to_sync(apresence_stats)(channel)


def history(channel: str, **kwargs: Any) -> dict:
    """Synchronous :func:`ahistory`."""
    return async_to_sync(ahistory)(channel, **kwargs)


def history_remove(channel: str) -> dict:
    """Synchronous :func:`ahistory_remove`."""
    return async_to_sync(ahistory_remove)(channel)
