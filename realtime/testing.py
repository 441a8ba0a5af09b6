"""A small synchronous client for realtime's native protocol, for tests and scripts.

Requires the ``websockets`` package. Replies are matched to requests by ``id``;
publications and notices that arrive meanwhile are kept, in order, for
:meth:`RealtimeClient.next_message`::

    with RealtimeClient("ws://127.0.0.1:8000/realtime/ws") as client:
        client.auth(secret)
        client.subscribe("news")
        print(client.next_message())
"""

from __future__ import annotations

import json
from collections import deque
from typing import Any


class RealtimeClient:
    def __init__(self, url: str, *, origin: str | None = None, timeout: float = 5.0, **options: Any) -> None:
        """``options`` go to ``websockets.sync.client.connect`` (``max_queue``, ...)."""
        from websockets.sync.client import connect

        self.timeout = timeout
        options = {"max_size": None, "compression": None, **options}
        self._connection = connect(url, origin=origin, open_timeout=timeout, **options)
        self.ws = self._connection.__enter__()
        self.pending: deque[dict] = deque()
        self._next_id = 0

    def __enter__(self) -> RealtimeClient:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # Raw frames --------------------------------------------------------------------

    def send_raw(self, frame: str | bytes) -> None:
        self.ws.send(frame)

    def send(self, frame: dict) -> None:
        self.ws.send(json.dumps(frame))

    def recv(self, timeout: float | None = None) -> dict:
        """The next frame from the server, whatever it is."""
        return json.loads(self.ws.recv(timeout=self.timeout if timeout is None else timeout))

    # Requests ----------------------------------------------------------------------

    def request(self, command: str, body: Any = True) -> dict:
        """Send one command with a fresh id and return its reply."""
        self._next_id += 1
        request_id = self._next_id
        self.send({command: body, "id": request_id})
        while True:
            frame = self.recv()
            if frame.get("id") == request_id and ("ok" in frame or "err" in frame):
                return frame
            self.pending.append(frame)

    def auth(self, secret: str, access: str | None = None) -> dict:
        body = {"secret": secret}
        if access is not None:
            body["access"] = access
        return self.request("auth", body)

    def subscribe(self, channel: str, since: dict | None = None) -> dict:
        """Subscribe; ``since={"offset": N, "epoch": E}`` recovers what came after N first."""
        body: dict[str, Any] = {"channel": channel}
        if since is not None:
            body["since"] = since
        return self.request("subscribe", body)

    def history(
        self, channel: str, since: int = 0, limit: int | None = None, epoch: str | None = None
    ) -> dict:
        body: dict[str, Any] = {"channel": channel, "since": since}
        if limit is not None:
            body["limit"] = limit
        if epoch is not None:
            body["epoch"] = epoch
        return self.request("history", body)

    def presence(self, channel: str) -> dict:
        return self.request("presence", {"channel": channel})

    def unsubscribe(self, channel: str) -> dict:
        return self.request("unsubscribe", {"channel": channel})

    def publish(self, channel: str, event: str, data: Any = None) -> dict:
        return self.request("publish", {"channel": channel, "event": event, "data": data})

    def logout(self) -> dict:
        return self.request("logout")

    def disconnect(self) -> dict:
        return self.request("disconnect")

    # Publications and notices ------------------------------------------------------

    def next_message(self, timeout: float | None = None) -> dict:
        """The next frame that is not a reply (a publication or a notice)."""
        if self.pending:
            return self.pending.popleft()
        while True:
            frame = self.recv(timeout)
            if "ok" not in frame and "err" not in frame:
                return frame

    def close(self) -> None:
        self._connection.__exit__(None, None, None)

    @property
    def close_code(self) -> int | None:
        return self.ws.close_code
