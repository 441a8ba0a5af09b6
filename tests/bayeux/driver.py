"""Python side of driver.mjs: run a real Bayeux client library (faye or cometd) step by step.

    drv = BayeuxDriver("cometd")
    drv.request("connect", url="http://127.0.0.1:8000/realtime/bayeux", transport="websocket", ext=None)
    drv.request("subscribe", channel="/rooms/1")
    event = drv.next_event("message", timeout=5)
    drv.close()

Stdlib only. Needs `npm ci` in this directory (node_modules) and `node` on PATH.
"""

from __future__ import annotations

import collections
import itertools
import json
import os
import subprocess
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))


class DriverError(RuntimeError):
    """The driver process died, or a reply/event did not come in time."""


class BayeuxDriver:
    """A `node driver.mjs <library>` process, spoken to in JSON lines.

    Replies are matched by id; every other line (``{"event": ...}``) is queued and read
    with :meth:`next_event`. The ``events`` attribute is that queue (a deque, oldest first).
    """

    def __init__(
        self,
        library: str,
        *,
        node: str = "node",
        env: dict | None = None,
        debug: bool = False,
        start_timeout: float = 15.0,
    ):
        if library not in ("faye", "cometd"):
            raise ValueError(f"unknown library {library!r}")
        self.library = library
        full_env = dict(os.environ, **(env or {}))
        if debug:
            full_env["BAYEUX_DRIVER_DEBUG"] = "1"
        self.proc = subprocess.Popen(
            [node, os.path.join(HERE, "driver.mjs"), library],
            cwd=HERE,
            env=full_env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            bufsize=1,
        )
        self.events: collections.deque[dict] = collections.deque()
        self.stderr_lines: collections.deque[str] = collections.deque(maxlen=2000)
        self._replies: dict[object, dict] = {}
        self._cond = threading.Condition()
        self._ids = itertools.count(1)
        self._eof = False
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()
        try:
            self.next_event("ready", timeout=start_timeout)
        except DriverError:
            self.close(timeout=2)
            raise

    # -- reader threads --------------------------------------------------------------------
    def _read_stdout(self) -> None:
        for line in self.proc.stdout:
            line = line.strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                obj = {"event": "garbage", "line": line}
            with self._cond:
                if "event" in obj or obj.get("id") is None:
                    self.events.append(obj)
                else:
                    self._replies[obj["id"]] = obj
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def _read_stderr(self) -> None:
        for line in self.proc.stderr:
            self.stderr_lines.append(line.rstrip("\n"))

    # -- API -------------------------------------------------------------------------------
    def send(self, cmd: str, **fields) -> int:
        """Send a command without waiting; returns its id (see :meth:`wait_reply`)."""
        msg_id = next(self._ids)
        line = json.dumps({"id": msg_id, "cmd": cmd, **fields})
        try:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError) as exc:
            raise DriverError(f"driver is gone: {self._stderr_tail()}") from exc
        return msg_id

    def wait_reply(self, msg_id: int, timeout: float = 20.0) -> dict:
        deadline = time.monotonic() + timeout
        with self._cond:
            while msg_id not in self._replies:
                remaining = deadline - time.monotonic()
                if self._eof:
                    raise DriverError(f"driver exited before replying to {msg_id}: {self._stderr_tail()}")
                if remaining <= 0:
                    raise DriverError(f"no reply to command {msg_id} within {timeout}s")
                self._cond.wait(remaining)
            return self._replies.pop(msg_id)

    def request(self, cmd: str, *, wait: float = 20.0, **fields) -> dict:
        """Send a command and return its reply (``{"id", "ok", ...}``); events are queued meanwhile.

        ``wait`` bounds this call; the driver's own wait for the server is the ``timeout``
        field (seconds, default 10), so keep ``wait`` larger.
        """
        return self.wait_reply(self.send(cmd, **fields), timeout=wait)

    def next_event(self, kind: str | None = "message", timeout: float = 5.0, predicate=None) -> dict:
        """Pop the oldest queued event of ``kind`` (None: any) that matches ``predicate``.

        Waits up to ``timeout`` seconds; raises :class:`DriverError` if none comes."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for event in self.events:
                    if (kind is None or event.get("event") == kind) and (
                        predicate is None or predicate(event)
                    ):
                        self.events.remove(event)
                        return event
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise DriverError(f"no {kind or 'any'} event within {timeout}s")
                if self._eof:
                    raise DriverError(f"driver exited while waiting for {kind}: {self._stderr_tail()}")
                self._cond.wait(remaining)

    def drain_events(self, kind: str | None = None) -> list[dict]:
        """Remove and return every queued event of ``kind`` (None: all)."""
        with self._cond:
            taken = [e for e in self.events if kind is None or e.get("event") == kind]
            for event in taken:
                self.events.remove(event)
            return taken

    def close(self, timeout: float = 8.0) -> int | None:
        """Close stdin (the driver disconnects and exits); kill it if it does not. Returns the exit code."""
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except (BrokenPipeError, OSError):
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def _stderr_tail(self, n: int = 20) -> str:
        return "\n".join(list(self.stderr_lines)[-n:])

    def __enter__(self) -> BayeuxDriver:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
