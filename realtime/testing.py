"""Clients for realtime's native protocol, for tests and scripts.

:class:`RealtimeClient` is synchronous and talks to a running server over a real socket
(it requires the ``websockets`` package). :class:`RealtimeCommunicator` is async and runs
the consumer in the test's own process and event loop, with no server and no Redis, for
fast tests of your project's channels, keys and policy (``docs/testing.md``). Both match
replies to requests by ``id`` and keep publications and notices that arrive meanwhile,
in order, for ``next_message``::

    with RealtimeClient("ws://127.0.0.1:8000/realtime/ws") as client:
        client.auth(secret)
        client.subscribe("news")
        print(client.next_message())

    async with RealtimeCommunicator() as client:
        await client.auth(secret)
        await client.subscribe("news")
        print(await client.next_message())
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Iterable
from typing import Any


def _given(**fields: Any) -> dict[str, Any]:
    """The optional fields of a command's body that were given (not None)."""
    return {name: value for name, value in fields.items() if value is not None}


def _is_reply(frame: dict, request_id: int) -> bool:
    return frame.get("id") == request_id and ("ok" in frame or "err" in frame)


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
            if _is_reply(frame, request_id):
                return frame
            self.pending.append(frame)

    def auth(self, secret: str, access: str | None = None) -> dict:
        return self.request("auth", {"secret": secret, **_given(access=access)})

    def subscribe(self, channel: str, since: dict | None = None) -> dict:
        """Subscribe; ``since={"offset": N, "epoch": E}`` recovers what came after N first."""
        return self.request("subscribe", {"channel": channel, **_given(since=since)})

    def history(
        self, channel: str, since: int = 0, limit: int | None = None, epoch: str | None = None
    ) -> dict:
        return self.request(
            "history", {"channel": channel, "since": since, **_given(limit=limit, epoch=epoch)}
        )

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


class ConnectionClosed(Exception):
    """The server closed the connection; ``code`` is its close code (1000, 4001, ...)."""

    def __init__(self, code: int | None) -> None:
        super().__init__(f"the connection was closed with code {code}")
        self.code = code


class RealtimeCommunicator:
    """An async client for the native protocol that runs the consumer in this process.

    For fast tests of what the consumer does with frames (replies, error codes, counters,
    close codes) without a server process or Redis: with Channels' in-memory layer
    (``CHANNEL_LAYERS``), publications travel through this process's hub, so two
    communicators in one test (one event loop) reach each other. It is built on
    ``channels.testing.WebsocketCommunicator`` and mirrors :class:`RealtimeClient`,
    awaited::

        async with RealtimeCommunicator() as client:
            await client.auth(secret)
            await client.subscribe("news")
            print(await client.next_message())

    ``application`` is any ASGI application (the project's ``URLRouter``, say; by
    default ``RealtimeConsumer`` alone), served ``path``, with an ``Origin`` header if
    ``origin`` is given and ``headers`` as more ``(name, value)`` pairs. The consumer
    reads the database in another thread, so a pytest-django test that uses it needs
    ``transactional_db`` (the rows it creates must be committed to be seen).

    Unlike a socket, nothing here is ever lost or delayed by a network, and a close
    from either side is followed by the ``websocket.disconnect`` an ASGI server would
    send, so the consumer cleans up (presence leaves, the hub forgets it) as it would.
    """

    def __init__(
        self,
        application: Any = None,
        path: str = "/realtime/ws",
        *,
        origin: str | None = None,
        headers: Iterable[tuple[str | bytes, str | bytes]] = (),
        timeout: float = 5.0,
    ) -> None:
        # Imported here: channels.testing imports daphne, which a project that only
        # uses RealtimeClient against a running server need not load.
        from channels.testing import WebsocketCommunicator

        if application is None:
            from .consumers import RealtimeConsumer

            application = RealtimeConsumer.as_asgi()
        scope_headers = [(_latin1(name).lower(), _latin1(value)) for name, value in headers]
        if origin is not None:
            scope_headers.append((b"origin", _latin1(origin)))
        self.communicator = WebsocketCommunicator(application, path, headers=scope_headers)
        self.timeout = timeout
        self.pending: deque[dict] = deque()
        self.accepted = False
        self.close_code: int | None = None
        self._next_id = 0
        self._started = False
        self._finished = False

    async def __aenter__(self) -> RealtimeCommunicator:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.close()

    async def connect(self) -> bool:
        """Open the connection; True if the application accepted it.

        realtime's consumer always accepts, then closes at once (4003) if the Origin
        may not connect: see :meth:`closed`. An application that refuses outright
        (Channels' origin validators do) leaves ``accepted`` False and ``close_code`` set.
        """
        self._started = True
        self.accepted, detail = await self.communicator.connect(self.timeout)
        if not self.accepted:
            self.close_code = detail
            await self._finish()
        return self.accepted

    @property
    def connected(self) -> bool:
        """Accepted and not closed yet by either side."""
        return self.accepted and self.close_code is None

    # Raw frames --------------------------------------------------------------------

    async def send_raw(self, frame: str | bytes) -> None:
        """Send one text (str) or binary (bytes) frame as it is, even an empty one."""
        if not self.connected:
            raise ConnectionClosed(self.close_code)
        # send_input, not WebsocketCommunicator.send_to, which refuses empty frames.
        key = "bytes" if isinstance(frame, bytes) else "text"
        await self.communicator.send_input({"type": "websocket.receive", key: frame})

    async def send(self, frame: dict) -> None:
        """Send ``frame`` as JSON the way a browser's ``JSON.stringify`` writes it (compact,
        UTF-8 kept as it is), so that sizes are measured as a browser's frames would be."""
        await self.send_raw(json.dumps(frame, ensure_ascii=False, separators=(",", ":")))

    async def recv(self, timeout: float | None = None) -> dict:
        """The next frame from the server, whatever it is.

        Raises TimeoutError if none comes in time (the connection stays open), and
        :class:`ConnectionClosed` once the server has closed it.
        """
        while True:
            if self.close_code is not None:
                raise ConnectionClosed(self.close_code)
            message = await self._output(self.timeout if timeout is None else timeout)
            if message["type"] == "websocket.send":
                return json.loads(message["text"] if message.get("text") is not None else message["bytes"])
            if message["type"] == "websocket.close":
                self.close_code = message.get("code", 1000)
                # What an ASGI server does once it has closed the socket.
                await self._finish()

    async def _output(self, timeout: float) -> dict:
        """The application's next ASGI message.

        Not ``receive_output``: on a timeout that cancels the application, and a test
        that checks nothing more arrives wants to go on using the connection after.
        """
        application = self.communicator.future
        getter = asyncio.ensure_future(self.communicator.output_queue.get())
        done, _ = await asyncio.wait(
            {getter, application}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if getter in done:
            return getter.result()
        getter.cancel()
        if application.done():
            application.result()  # raises what the application raised
            self.close_code = 1006 if self.close_code is None else self.close_code
            raise ConnectionClosed(self.close_code)
        raise TimeoutError(f"nothing from the server within {timeout} s")

    # Requests ----------------------------------------------------------------------

    async def request(self, command: str, body: Any = True) -> dict:
        """Send one command with a fresh id and return its reply; frames that arrive
        before it are kept, in order, for :meth:`next_message`."""
        self._next_id += 1
        request_id = self._next_id
        await self.send({command: body, "id": request_id})
        while True:
            frame = await self.recv()
            if _is_reply(frame, request_id):
                return frame
            self.pending.append(frame)

    async def auth(
        self, secret: str | None = None, token: str | None = None, access: str | None = None
    ) -> dict:
        """Authenticate with an access key's ``secret`` or a signed browser ``token``."""
        credentials = {"secret": secret} if token is None else {"token": token}
        return await self.request("auth", {**credentials, **_given(access=access)})

    async def subscribe(self, channel: str, since: dict | None = None) -> dict:
        """Subscribe; ``since={"offset": N, "epoch": E}`` recovers what came after N first."""
        return await self.request("subscribe", {"channel": channel, **_given(since=since)})

    async def history(
        self, channel: str, since: int = 0, limit: int | None = None, epoch: str | None = None
    ) -> dict:
        body = {"channel": channel, "since": since, **_given(limit=limit, epoch=epoch)}
        return await self.request("history", body)

    async def presence(self, channel: str) -> dict:
        return await self.request("presence", {"channel": channel})

    async def unsubscribe(self, channel: str) -> dict:
        return await self.request("unsubscribe", {"channel": channel})

    async def publish(self, channel: str, event: str, data: Any = None) -> dict:
        return await self.request("publish", {"channel": channel, "event": event, "data": data})

    async def ping(self) -> dict:
        return await self.request("ping")

    async def logout(self) -> dict:
        return await self.request("logout")

    async def disconnect(self) -> dict:
        """The protocol's ``disconnect``: the server replies, then closes with 1000."""
        return await self.request("disconnect")

    # Publications, notices, closing ------------------------------------------------

    async def next_message(self, timeout: float | None = None) -> dict:
        """The next frame that is not a reply (a publication or a notice)."""
        if self.pending:
            return self.pending.popleft()
        while True:
            frame = await self.recv(timeout)
            if "ok" not in frame and "err" not in frame:
                return frame

    async def closed(self, timeout: float | None = None) -> int:
        """Wait for the server to close the connection and return its close code.

        Frames that arrive first are kept for :meth:`next_message`.
        """
        while self.close_code is None:
            try:
                self.pending.append(await self.recv(timeout))
            except ConnectionClosed:
                break
        return self.close_code

    async def close(self, code: int = 1000) -> None:
        """Close from the client's side (as a browser tab would) and let the consumer finish."""
        if self.accepted and self.close_code is None:
            self.close_code = code
        await self._finish(code)

    async def _finish(self, code: int | None = None) -> None:
        """Tell the application the socket is gone, and wait for it to return."""
        if self._finished or not self._started:
            return
        self._finished = True
        application = self.communicator.future
        if not application.done():
            code = self.close_code if code is None else code
            await self.communicator.send_input({"type": "websocket.disconnect", "code": code or 1000})
        await self.communicator.wait(self.timeout)


def _latin1(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("latin-1")
