"""Closing WebSockets properly when the process is told to stop and its server would not.

Internal. uvicorn handles SIGTERM itself: it sends every WebSocket a close frame (1012)
before it exits. daphne leaves SIGTERM to Twisted, which stops the reactor and drops
every connection with no close frame, so clients see 1006, which they cannot tell
from a network failure. When realtime's first WebSocket opens in a process where
SIGTERM has its default action or Twisted's handler, :func:`watch` installs a handler
in front: it closes realtime's open WebSockets with 4009 (``SHUTTING_DOWN``), gives the
frames ``GRACE`` seconds to go out, then does what would have been done (Twisted's
handler, or the default action): the process still stops, a moment later, and
clients are told why.

Other servers' handlers (uvicorn, hypercorn, granian) are left alone.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import weakref

from .errors import CloseCode

logger = logging.getLogger("realtime")

GRACE = 0.5

_open: weakref.WeakSet = weakref.WeakSet()
_watched: set[int] = set()


def watch(consumer) -> None:
    """Track an open consumer (``realtime.asgi.Consumer``) and, the first time, SIGTERM."""
    _open.add(consumer)
    loop = asyncio.get_running_loop()
    if id(loop) in _watched:
        return
    _watched.add(id(loop))
    if threading.current_thread() is not threading.main_thread():
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous not in (signal.SIG_DFL, None) and not _is_twisted(previous):
        return  # the server closes its connections itself

    def handler(signum, frame) -> None:
        signal.signal(signal.SIGTERM, previous if callable(previous) else signal.SIG_DFL)
        try:
            loop.call_soon_threadsafe(_stopping, loop, previous)
        except RuntimeError:  # that loop has closed: there is nothing left to close properly
            _stop_now(previous)

    signal.signal(signal.SIGTERM, handler)


def forget(consumer) -> None:
    _open.discard(consumer)


def _is_twisted(handler) -> bool:
    owner = getattr(handler, "__self__", None)
    return type(owner).__module__.startswith("twisted.")


def _stopping(loop: asyncio.AbstractEventLoop, previous) -> None:
    consumers = list(_open)
    logger.info("realtime: SIGTERM: closing %d WebSockets (4009) before stopping", len(consumers))
    for consumer in consumers:
        try:
            consumer.close_soon(CloseCode.SHUTTING_DOWN)
        except Exception:  # pragma: no cover - one broken socket must not keep the rest open
            logger.exception("realtime: could not close a WebSocket on SIGTERM")
    loop.call_later(GRACE, _stop_now, previous)


def _stop_now(previous) -> None:
    if callable(previous):
        previous(signal.SIGTERM, None)
    else:
        os.kill(os.getpid(), signal.SIGTERM)  # the default action is back: stop
