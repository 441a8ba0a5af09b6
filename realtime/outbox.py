"""Ordered, non-blocking sends to one WebSocket connection.

The fan-out loop hands the same encoded frame to every local subscriber. It must not
wait for any one of them: an ASGI server's ``send`` may suspend when a client reads
slowly (uvicorn waits for the socket buffer to drain), and one such client would
stall delivery to everybody behind it. It must not create a task per delivery either,
because that costs more than the send itself.

So :meth:`Outbox.push` runs the ``send`` coroutine one step, synchronously. Almost
always it completes in that step (the frame went into the transport buffer). When it
suspends instead, the rest of it continues in a writer task, and later frames for
that connection queue behind it, in order, up to ``limit``; past that the connection
is too slow to keep and ``on_overflow`` is called (soon, never from inside ``push``).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable

from . import stats

logger = logging.getLogger("realtime")


async def _finish(coro, waiting) -> None:
    """Drive a coroutine that has already run one step and suspended on ``waiting``."""
    try:
        while True:
            if waiting is None:
                await asyncio.sleep(0)
            else:
                # The coroutine yielded ``waiting`` to a task that was not there, so the
                # future is still flagged as handed over; clear the flag as a task
                # would, or asyncio's C futures refuse the await below.
                waiting._asyncio_future_blocking = False
                try:
                    await waiting
                except asyncio.CancelledError:
                    if not waiting.cancelled():
                        raise
                except Exception:
                    # The coroutine reads the outcome itself when resumed.
                    pass
            try:
                waiting = coro.send(None)
            except StopIteration:
                return
    except BaseException:
        coro.close()
        raise


class Outbox:
    __slots__ = ("_send", "_backlog", "_writer", "closed", "limit", "on_overflow")

    def __init__(
        self,
        send: Callable[[dict], Awaitable[None]],
        limit: int,
        on_overflow: Callable[[], None],
    ) -> None:
        self._send = send
        self._backlog: deque[dict] | None = None
        self._writer: asyncio.Task | None = None
        self.closed = False
        self.limit = limit
        self.on_overflow = on_overflow

    def push(self, frame: str) -> None:
        """Queue a text frame; never blocks, never raises."""
        if self._backlog is None and not self.closed:
            self._start({"type": "websocket.send", "text": frame})  # the usual case, first
        else:
            self.push_message({"type": "websocket.send", "text": frame})

    def push_message(self, message: dict) -> None:
        if self.closed:
            stats.counters.dropped += 1
            return
        if self._backlog is not None:
            if len(self._backlog) >= self.limit:
                stats.counters.dropped += len(self._backlog) + 1
                self.closed = True
                self._backlog.clear()
                # Called soon, not now: push() runs inside the hub's fan-out loop,
                # which must not see its subscriber sets change under it.
                asyncio.get_running_loop().call_soon(self.on_overflow)
                return
            self._backlog.append(message)
            return
        self._start(message)

    def _start(self, message: dict) -> None:
        """Step the send once; if it suspends, a writer task finishes it."""
        coro = self._send(message)
        try:
            waiting = coro.send(None)
        except StopIteration:
            return
        except Exception:
            # The server refused the send: the connection is gone.
            self.closed = True
            coro.close()
            return
        self._backlog = deque()
        self._writer = asyncio.get_running_loop().create_task(self._drain(coro, waiting))

    async def _drain(self, coro, waiting) -> None:
        try:
            await _finish(coro, waiting)
            while self._backlog:
                await self._send(self._backlog.popleft())
        except Exception:
            self.closed = True
        finally:
            self._backlog = None
            self._writer = None

    async def flush(self) -> None:
        """Wait until every queued frame has been handed to the server."""
        # asyncio.wait rather than awaiting the writer: a writer that was cancelled
        # (or never got to run) must not raise CancelledError into the caller.
        while self._writer is not None and not self._writer.done():
            await asyncio.wait([self._writer])

    def cancel(self) -> None:
        self.closed = True
        if self._writer is not None:
            self._writer.cancel()
