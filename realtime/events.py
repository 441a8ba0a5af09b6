"""Sending realtime's lifecycle signals (``realtime.signals``) off the hot path.

Internal. :func:`emit` is called where something happens (a socket opened, a member
joined) and returns at once: it never awaits and never runs a receiver. The event goes
into a bounded queue of the running event loop, and one task per loop sends the queued
events, in order, with ``Signal.asend_robust``: async receivers run on the loop, plain
ones in Django's sync thread (``sync_to_async``), exceptions are logged by Django's
dispatcher and never reach realtime. Each event may take at most ``SIGNAL_TIMEOUT``
seconds (async receivers still running then are cancelled); a queue that holds
``SIGNAL_QUEUE_SIZE`` events drops new ones, and says so in the log, rather than grow.

*Sinks* see every event as it is emitted, synchronously, before any queue: the
webhooks (``realtime.webhooks``) are one. A sink must only queue work; it may not
block or raise.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Callable
from typing import Any

from django.dispatch import Signal

from . import signals as public_signals
from .conf import settings

logger = logging.getLogger("realtime")

Sink = Callable[[Signal, dict[str, Any]], None]
_sinks: list[Sink] = []
DROP_LOG_INTERVAL = 10.0


class Drops:
    """Events a full queue had to drop: counted, and told in a warning at most every
    ``DROP_LOG_INTERVAL`` seconds (a flood would otherwise flood the log too)."""

    __slots__ = ("count", "_logged_at")

    def __init__(self) -> None:
        self.count = 0
        self._logged_at = 0.0

    def add(self, message: str, *args: Any) -> None:
        """Count one; ``message % (*args, count so far)`` is the warning."""
        self.count += 1
        now = time.monotonic()
        if now - self._logged_at > DROP_LOG_INTERVAL:
            self._logged_at = now
            logger.warning(message, *args, self.count)


def add_sink(sink: Sink) -> None:
    """Have ``sink(signal, arguments)`` called for every event (once per sink)."""
    if sink not in _sinks:
        _sinks.append(sink)


def remove_sink(sink: Sink) -> None:
    if sink in _sinks:
        _sinks.remove(sink)


class _Dispatcher:
    """The queue of one event loop, and the task that sends its events."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue = asyncio.Queue(maxsize=max(1, settings.SIGNAL_QUEUE_SIZE))
        self.task = loop.create_task(self._run())
        self.dropped = Drops()

    def put(self, signal: Signal, sender: Any, arguments: dict[str, Any]) -> None:
        try:
            self.queue.put_nowait((signal, sender, arguments))
        except asyncio.QueueFull:
            self.dropped.add(
                "realtime: the signal queue is full (SIGNAL_QUEUE_SIZE=%s): %s events dropped so far; "
                "a receiver is too slow",
                self.queue.maxsize,
            )

    async def _run(self) -> None:
        while True:
            signal, sender, arguments = await self.queue.get()
            try:
                await asyncio.wait_for(signal.asend_robust(sender, **arguments), settings.SIGNAL_TIMEOUT)
            except TimeoutError:
                logger.warning(
                    "realtime: receivers of %s took more than SIGNAL_TIMEOUT (%ss); moving on",
                    _name(signal),
                    settings.SIGNAL_TIMEOUT,
                )
            except Exception:  # asend_robust catches receivers' errors; this would be ours
                logger.exception("realtime: sending %s failed", _name(signal))


_dispatchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Dispatcher] = weakref.WeakKeyDictionary()


def _name(signal: Signal) -> str:
    for name, value in vars(public_signals).items():
        if value is signal:
            return f"realtime.signals.{name}"
    return repr(signal)


def emit(signal: Signal, sender: Any, **arguments: Any) -> None:
    """Queue ``signal`` for its receivers and hand it to the sinks; never blocks.

    Must be called on a running event loop. Costs nothing more than a check when the
    signal has no receivers and no sink wants it.
    """
    for sink in _sinks:
        try:
            sink(signal, arguments)
        except Exception:
            logger.exception("realtime: an event sink failed")
    if not signal.receivers:
        return
    loop = asyncio.get_running_loop()
    dispatcher = _dispatchers.get(loop)
    if dispatcher is None or dispatcher.task.done():
        dispatcher = _dispatchers[loop] = _Dispatcher(loop)
    dispatcher.put(signal, sender, arguments)


def connection_event(signal: Signal, conn, **arguments: Any) -> None:
    """:func:`emit` a per-connection signal about ``conn`` (a ``hub.Subscriber``)."""
    if not signal.receivers and not _sinks:
        return
    emit(
        signal,
        type(conn),
        client=conn.client_id,
        protocol=getattr(conn, "protocol_name", ""),
        principal=conn.principal,
        **arguments,
    )
