"""Ordered, non-blocking sends to one WebSocket connection.

Internal. The fan-out loop hands the same encoded frame to every local subscriber. It
must not wait for any one of them: an ASGI server's ``send`` may suspend when a client
reads slowly (uvicorn waits for the socket buffer to drain), and one such client would
stall delivery to everybody behind it. It must not create a task per delivery either,
because that costs more than the send itself.

The ASGI spec promises that ``send`` returns an awaitable, not a coroutine, so there are
three ways to drive one:

* A coroutine (uvicorn, daphne, hypercorn): :meth:`Outbox.push` runs it one step,
  synchronously. Almost always it completes in that step (the frame went into the
  transport buffer). When it suspends instead, the rest of it continues in a writer
  task, and later frames for that connection queue behind it, in order.
* A future (granian's ``send`` returns one, already carrying the frame, that resolves a
  little later from the server's own thread): later frames queue behind it, and its
  done-callback sends the next one. No task either.
* Any other awaitable: a writer task awaits it, then the frames queued behind it.

Under a server that offers a direct frame writer (realtime's uvicorn protocol class:
``realtime.servers.uvicorn``), a text frame for an idle connection skips ``send``: it is
framed once per publication (:func:`framed`: the hub hands every subscriber the same
string) and written straight to the socket. Whenever the writer declines (the socket
buffer is full, the connection is closing), the frame goes through ``send`` as above,
and the frames after it queue behind it.

Whichever way, at most ``limit`` frames wait; past that the connection is too slow to
keep and ``on_overflow`` is called (soon, never from inside ``push``).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable

from . import stats

logger = logging.getLogger("realtime")


def step(coro) -> tuple[bool, object]:
    """Run ``coro`` until it first suspends: ``(True, its result)`` if it finished in
    that step, else ``(False, a task that finishes it)``. What the first step raises is
    raised here. For callers that must start something in order, now, without a task
    when it does not wait (the consumer's pipelined publishes)."""
    try:
        waiting = coro.send(None)
    except StopIteration as stop:
        return True, stop.value
    return False, asyncio.get_running_loop().create_task(_finish(coro, waiting))


async def _finish(coro, waiting):
    """Drive a coroutine that has already run one step and suspended on ``waiting``;
    returns its result."""
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
            except StopIteration as stop:
                return stop.value
    except BaseException:
        coro.close()
        raise


def _is_future(awaitable) -> bool:
    """Whether ``awaitable`` follows asyncio's future protocol (callbacks, ``done()``)."""
    return getattr(awaitable, "_asyncio_future_blocking", None) is not None and hasattr(
        awaitable, "add_done_callback"
    )


def _failed(future) -> bool:
    return future.cancelled() or future.exception() is not None


def frame_bytes(text: str) -> bytes:
    """``text`` as one complete server frame: FIN, text opcode, unmasked, uncompressed."""
    data = text.encode()
    size = len(data)
    if size < 126:
        return bytes((0x81, size)) + data
    if size < 65536:
        return b"\x81\x7e" + size.to_bytes(2, "big") + data
    return b"\x81\x7f" + size.to_bytes(8, "big") + data


# The last text framed and its frame: the fan-out pushes one string to every subscriber
# in turn, so it is framed once. (A tuple, replaced whole: a reader never sees half.)
_last: tuple[str | None, bytes] = (None, b"")


def framed(text: str) -> bytes:
    """:func:`frame_bytes`, once per string object in a row."""
    global _last
    last = _last
    if last[0] is text:
        return last[1]
    data = frame_bytes(text)
    _last = (text, data)
    return data


def frame_writer(scope: dict):
    """The server's direct frame writer for this connection (``write(bytes) -> bool``),
    or None when the server offers none."""
    extension = (scope.get("extensions") or {}).get(FRAMES_EXTENSION)
    return extension.get("write") if extension else None


# The scope extension realtime's uvicorn protocol class offers (realtime.servers.uvicorn).
FRAMES_EXTENSION = "realtime.websocket.frames"


class Outbox:
    __slots__ = (
        "_send",
        "_write",
        "_backlog",
        "_writer",
        "_in_flight",
        "_idle",
        "closed",
        "limit",
        "on_overflow",
    )

    def __init__(
        self,
        send: Callable[[dict], Awaitable[None]],
        limit: int,
        on_overflow: Callable[[], None],
        write: Callable[[bytes], bool] | None = None,
    ) -> None:
        self._send = send
        # The server's direct frame writer (see frame_writer), if it offers one.
        self._write = write
        # Not None while a send is unfinished: the frames waiting behind it.
        self._backlog: deque[dict] | None = None
        self._writer: asyncio.Task | None = None
        self._in_flight = None  # the future of an unfinished send, when send returns futures
        self._idle: asyncio.Future | None = None  # what flush() waits on meanwhile
        self.closed = False
        self.limit = limit
        self.on_overflow = on_overflow

    def push(self, frame: str) -> None:
        """Queue a text frame; never blocks, never raises."""
        if self._backlog is None and not self.closed:
            write = self._write
            if write is not None and write(framed(frame)):
                return  # the usual case under realtime's uvicorn class, first
            self._start({"type": "websocket.send", "text": frame})  # the usual case elsewhere
        else:
            self.push_message({"type": "websocket.send", "text": frame})

    def push_many(self, frames: list[str]) -> None:
        """Queue several text frames, in order: in one write where the server offers it."""
        write = self._write
        if write is not None and len(frames) > 1 and self._backlog is None and not self.closed:
            if write(b"".join(frame_bytes(frame) for frame in frames)):
                return
        for frame in frames:
            self.push(frame)

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
        """Step the send once; if it suspends, a writer task or a callback finishes it."""
        try:
            sent = self._send(message)
        except Exception:
            self.closed = True  # the server refused the send: the connection is gone
            return
        try:
            step = sent.send
        except AttributeError:
            self._start_awaitable(sent)
            return
        try:
            waiting = step(None)
        except StopIteration:
            return
        except Exception:
            # The server refused the send: the connection is gone.
            self.closed = True
            sent.close()
            return
        self._backlog = deque()
        self._writer = asyncio.get_running_loop().create_task(self._drain(sent, waiting))

    def _start_awaitable(self, sent) -> None:
        """A send that returned an awaitable that is no coroutine (nothing is queued)."""
        if _is_future(sent):
            if not sent.done():
                self._backlog = deque()
                self._in_flight = sent
                sent.add_done_callback(self._sent)
            elif _failed(sent):
                self.closed = True
            return
        self._backlog = deque()
        self._writer = asyncio.get_running_loop().create_task(self._drain_awaitable(sent))

    def _sent(self, future) -> None:
        """A send's future is done: send the next queued frame, if any."""
        self._in_flight = None
        try:
            if self.closed or _failed(future):
                self._stop()
                return
            backlog = self._backlog
            while backlog:
                try:
                    sent = self._send(backlog.popleft())
                except Exception:
                    self._stop()
                    return
                if not _is_future(sent):
                    self._writer = asyncio.get_running_loop().create_task(self._drain_awaitable(sent))
                    return
                if not sent.done():
                    self._in_flight = sent
                    sent.add_done_callback(self._sent)
                    return
                if _failed(sent):
                    self._stop()
                    return
            self._backlog = None
        finally:
            self._wake()

    def _stop(self) -> None:
        self.closed = True
        self._backlog = None

    def _wake(self) -> None:
        idle, self._idle = self._idle, None
        if idle is not None and not idle.done():
            idle.set_result(None)

    async def _drain(self, coro, waiting) -> None:
        """Finish a send coroutine that suspended (``_finish`` made here, once the task
        runs), then the frames queued behind it."""
        await self._drain_awaitable(_finish(coro, waiting))

    async def _drain_awaitable(self, sent) -> None:
        """Await a send that did not complete at once, then send the frames queued behind it."""
        try:
            await sent
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
        while True:
            if self._writer is not None and not self._writer.done():
                await asyncio.wait([self._writer])
            elif self._in_flight is not None:
                if self._idle is None:
                    self._idle = asyncio.get_running_loop().create_future()
                await asyncio.wait([self._idle])
            else:
                return

    def cancel(self) -> None:
        self.closed = True
        if self._writer is not None:
            self._writer.cancel()
        if self._in_flight is not None:
            # The server has the frame already; its outcome no longer matters.
            self._in_flight = None
            self._backlog = None
            self._wake()
