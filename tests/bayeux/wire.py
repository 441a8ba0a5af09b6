"""Bayeux at the wire level, for tests that check exact messages: no client library
between the test and the server, so every field the server sends can be asserted."""

from __future__ import annotations

import itertools
import json
import urllib.error
import urllib.request
from collections import deque
from typing import Any

CONNECTION_TYPES = ["websocket", "long-polling", "callback-polling"]


def bayeux_url(server, suffix: str = "") -> str:
    return f"{server.http_url}/realtime/bayeux{suffix}"


def post(url: str, body: bytes | str, headers: dict | None = None, timeout: float = 15) -> tuple[int, Any]:
    """POST and return (status, decoded JSON body)."""
    data = body.encode() if isinstance(body, str) else body
    request = urllib.request.Request(url, data=data, method="POST")
    request.add_header("Content-Type", "application/json")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def request(url: str, method: str = "GET", headers: dict | None = None, data: bytes | None = None):
    """Any request; returns (status, headers, body bytes)."""
    req = urllib.request.Request(url, data=data, method=method)
    for name, value in (headers or {}).items():
        req.add_header(name, value)
    try:
        with urllib.request.urlopen(req, timeout=15) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


class LongPolling:
    """A Bayeux client over HTTP long-polling, one request at a time."""

    def __init__(self, server, suffix: str = "") -> None:
        self.url = bayeux_url(server, suffix)
        self.client_id: str | None = None
        self._ids = itertools.count(1)

    def send(self, *messages: dict, timeout: float = 15) -> list[dict]:
        """Send messages (ids and clientId added) and return the reply array (status 200)."""
        batch = [self._fill(message) for message in messages]
        status, replies = post(self.url, json.dumps(batch), timeout=timeout)
        assert status == 200, replies
        return replies

    def _fill(self, message: dict) -> dict:
        if not isinstance(message, dict):
            return message  # garbage, sent as it is
        message = {"id": str(next(self._ids)), **message}
        if self.client_id is not None and message["channel"] != "/meta/handshake":
            message.setdefault("clientId", self.client_id)
        return message

    def handshake(self, auth: dict | None = None, **fields) -> dict:
        message = {
            "channel": "/meta/handshake",
            "version": "1.0",
            "supportedConnectionTypes": ["long-polling"],
        }
        if auth is not None:
            message["ext"] = {"auth": auth}
        [reply] = self.send({**message, **fields})
        if reply["successful"]:
            self.client_id = reply["clientId"]
        return reply

    def connect(self, timeout_ms: int | None = None, **kwargs) -> list[dict]:
        message = {"channel": "/meta/connect", "connectionType": "long-polling"}
        if timeout_ms is not None:
            message["advice"] = {"timeout": timeout_ms}
        return self.send(message, **kwargs)

    def subscribe(self, subscription, **fields) -> dict:
        [reply] = self.send({"channel": "/meta/subscribe", "subscription": subscription, **fields})
        return reply

    def unsubscribe(self, subscription) -> dict:
        [reply] = self.send({"channel": "/meta/unsubscribe", "subscription": subscription})
        return reply

    def publish(self, channel: str, data: Any, **fields) -> dict:
        [reply] = self.send({"channel": channel, "data": data, **fields})
        return reply

    def disconnect(self) -> dict:
        [reply] = self.send({"channel": "/meta/disconnect"})
        return reply


class WebSocket:
    """A Bayeux client over WebSocket: replies matched by id, deliveries kept in order."""

    def __init__(self, server, origin: str | None = None, **options) -> None:
        """``options`` go to ``websockets.sync.client.connect`` (``max_queue``, ...)."""
        from websockets.sync.client import connect

        url = bayeux_url(server).replace("http", "ws", 1)
        options = {"max_size": None, "compression": None, **options}
        self._connection = connect(url, origin=origin, open_timeout=5, **options)
        self.ws = self._connection.__enter__()
        self.client_id: str | None = None
        self.pending: deque[dict] = deque()
        self._ids = itertools.count(1)

    def close(self) -> None:
        self._connection.__exit__(None, None, None)

    def send_raw(self, frame: str | bytes) -> None:
        self.ws.send(frame)

    def recv(self, timeout: float = 5) -> list[dict]:
        return json.loads(self.ws.recv(timeout=timeout))

    def send(self, *messages: dict) -> list[str]:
        batch = []
        for message in messages:
            message = {"id": str(next(self._ids)), **message}
            if self.client_id is not None and message["channel"] != "/meta/handshake":
                message.setdefault("clientId", self.client_id)
            batch.append(message)
        self.ws.send(json.dumps(batch))
        return [message["id"] for message in batch]

    def reply(self, request_id: str, timeout: float = 5) -> dict:
        """The reply with this id; other messages that arrive meanwhile are kept."""
        kept = [m for m in self.pending if m.get("id") == request_id and "successful" in m]
        if kept:
            self.pending.remove(kept[0])
            return kept[0]
        while True:
            found = None
            for message in self.recv(timeout):
                if found is None and message.get("id") == request_id and "successful" in message:
                    found = message
                else:
                    self.pending.append(message)
            if found is not None:
                return found

    def call(self, message: dict, timeout: float = 5) -> dict:
        [request_id] = self.send(message)
        return self.reply(request_id, timeout)

    def handshake(self, auth: dict | None = None) -> dict:
        message = {"channel": "/meta/handshake", "version": "1.0", "supportedConnectionTypes": ["websocket"]}
        if auth is not None:
            message["ext"] = {"auth": auth}
        reply = self.call(message)
        if reply["successful"]:
            self.client_id = reply["clientId"]
            # The first connect is answered at once; the next is held (the heartbeat).
            self.call({"channel": "/meta/connect", "connectionType": "websocket"})
            self.send({"channel": "/meta/connect", "connectionType": "websocket"})
        return reply

    def subscribe(self, subscription, **fields) -> dict:
        return self.call({"channel": "/meta/subscribe", "subscription": subscription, **fields})

    def unsubscribe(self, subscription) -> dict:
        return self.call({"channel": "/meta/unsubscribe", "subscription": subscription})

    def publish(self, channel: str, data: Any, **fields) -> dict:
        return self.call({"channel": channel, "data": data, **fields})

    def next_delivery(self, timeout: float = 5) -> dict:
        """The next message that is not a reply to a request."""
        while True:
            while self.pending:
                message = self.pending.popleft()
                if "successful" not in message:
                    return message
            self.pending.extend(self.recv(timeout))
