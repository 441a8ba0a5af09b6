"""A small blocking SSE reader for the live tests (stdlib ``http.client``).

It parses the stream as the HTML standard says an ``EventSource`` does: fields
``event``, ``data`` (joined by newlines), ``id`` (kept across events, as
``lastEventId``), ``retry``, and comment lines, which it counts.
"""

from __future__ import annotations

import http.client
import json
import time
from dataclasses import dataclass
from urllib.parse import urlencode


@dataclass
class Event:
    event: str
    data: str
    id: str | None

    @property
    def json(self):
        return json.loads(self.data)


class EventStream:
    def __init__(self, server, channels, *, headers=None, timeout=5.0, **query) -> None:
        params = [("channel", name) for name in channels] + list(query.items())
        self.connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)
        self.connection.request("GET", f"/realtime/sse?{urlencode(params)}", headers=headers or {})
        self.response = self.connection.getresponse()
        self.status = self.response.status
        self.headers = self.response.headers
        self.last_event_id: str | None = None
        self.retry: int | None = None
        self.comments = 0
        self.ended = False

    def json(self):
        return json.loads(self.response.read())

    def next(self, timeout: float = 5.0) -> Event:
        """The next event, skipping comments and field-only blocks; TimeoutError if none."""
        deadline = time.monotonic() + timeout
        fields: dict[str, list[str]] = {}
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no event")
            self.connection.sock.settimeout(remaining)
            try:
                raw = self.response.readline()
            except TimeoutError:
                raise TimeoutError("no event") from None
            if not raw:
                self.ended = True
                raise EOFError("the stream ended")
            line = raw.decode().rstrip("\r\n")
            if line.startswith(":"):
                self.comments += 1
                continue
            if line:
                name, _, value = line.partition(":")
                fields.setdefault(name, []).append(value[1:] if value.startswith(" ") else value)
                continue
            if "id" in fields:
                self.last_event_id = fields["id"][-1]
            if "retry" in fields:
                self.retry = int(fields["retry"][-1])
            if "data" in fields:
                return Event(
                    fields.get("event", ["message"])[-1], "\n".join(fields["data"]), self.last_event_id
                )
            fields = {}

    def events_until(self, predicate, timeout: float = 5.0) -> list[Event]:
        found = []
        while True:
            event = self.next(timeout)
            found.append(event)
            if predicate(event):
                return found

    def publications(self, count: int, timeout: float = 5.0) -> list[Event]:
        found = []
        while len(found) < count:
            event = self.next(timeout)
            if not event.event.startswith("realtime:"):
                found.append(event)
        return found

    def close(self) -> None:
        self.connection.close()
