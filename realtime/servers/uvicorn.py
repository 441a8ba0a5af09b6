"""realtime's protocol classes for uvicorn: bounds on what one client can make the
server hold.

Use both (docs/deployment.md#hardening)::

    uvicorn myproject.asgi:application \\
        --http realtime.servers.uvicorn:HttpProtocol \\
        --ws realtime.servers.uvicorn:WebSocketProtocol

They are uvicorn's own classes (h11, and the sans-I/O ``websockets`` implementation)
with small overrides, each saying why; everything else (flow control, the close
handshake, keepalive pings, ``--ws-max-size``...) is uvicorn's, unchanged:

- :class:`WebSocketProtocol` stops reading from a client while the server's write
  buffer to it is full, and answers only the most recent of the pings read at once.
  uvicorn answers every PING with a PONG as it reads it, whether or not the client
  reads them: a client that sends pings and never reads made the server queue pongs
  without bound (about 20 MiB a second per connection). It also caps incoming
  messages at twice ``MAX_MESSAGE_SIZE`` (frames over ``MAX_MESSAGE_SIZE`` get
  ``message_too_large`` from realtime; far larger ones are closed with 1009 before
  they are buffered), and closes invalid UTF-8 text with 1007 and one log line,
  where uvicorn logs a traceback for each.
- :class:`WebSocketProtocol` also offers the ASGI extension ``realtime.websocket.frames``
  (see :data:`FRAMES_EXTENSION`): a synchronous ``write`` that takes a complete,
  unmasked WebSocket frame (or several) and writes it straight to the socket, or
  answers False when it cannot (the write buffer is full, the connection is closing,
  compression was negotiated) so that the application sends through ASGI ``send``
  instead. realtime's fan-out frames each publication once for every subscriber
  (``realtime.outbox``): a delivery is then one ``transport.write``, with no ``send``
  coroutine, no per-connection framing and no copy of the text per subscriber.
- :class:`WebSocketProtocol` keeps less per connection than uvicorn's: the queue of
  ASGI events and the "writable" flag are small objects of its own (asyncio's ``Queue``
  and ``Event`` hold four deques, about 2.5 KiB, for one item and one waiter at most),
  and the handshake's response is let go once it is sent.
- :class:`HttpProtocol` closes a connection whose request head (an HTTP request or a
  WebSocket upgrade) is not complete ``HANDSHAKE_TIMEOUT`` seconds after the
  connection opened or the previous response ended. uvicorn has no such deadline: a
  client that sends half a request holds a file descriptor for ever.

Internal to deployments: nothing in realtime imports this module.
"""

from __future__ import annotations

import asyncio

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import State

from ..conf import settings

# The scope extension (ASGI ``scope["extensions"]``) this protocol class offers:
# ``{"write": callable(bytes) -> bool}``, see write_frames.
from ..outbox import FRAMES_EXTENSION

# The first byte of a PONG frame as a server writes it (FIN set, opcode 0xA, unmasked,
# never fragmented).
PONG_BYTE = b"\x8a"


class _Inbox:
    """The ASGI events waiting for the application: what uvicorn uses of
    ``asyncio.Queue`` (``put_nowait``, ``get``, ``empty``, ``qsize``), for the one
    ``receive()`` an ASGI application has waiting at a time."""

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: list = []
        self._waiter: asyncio.Future | None = None

    def put_nowait(self, item) -> None:
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self):
        while not self._items:
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                if self._waiter is waiter:
                    self._waiter = None
        return self._items.pop(0)

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items)


class _Flag:
    """What uvicorn uses of ``asyncio.Event`` for "the socket is writable"."""

    __slots__ = ("_value", "_waiters")

    def __init__(self) -> None:
        self._value = True
        self._waiters: list[asyncio.Future] | None = None

    def is_set(self) -> bool:
        return self._value

    def set(self) -> None:
        self._value = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._value = False

    async def wait(self) -> bool:
        if self._value:
            return True
        waiter = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            if self._waiters is not None and waiter in self._waiters:
                self._waiters.remove(waiter)
        return True


class WebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's ``websockets-sansio`` protocol, bounded against clients that do not read."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.queue = _Inbox()
        self.writable = _Flag()
        # Reading is paused for two reasons, which end separately: uvicorn's own (a
        # message waits for the application: read_paused) and ours (the client does not
        # read what we write: write_paused).
        self.write_paused = False
        # Frames over MAX_MESSAGE_SIZE are refused by realtime with message_too_large;
        # the cap only keeps far larger ones from being buffered whole first.
        cap = 2 * settings.MAX_MESSAGE_SIZE
        limit = self.conn.max_message_size
        self.conn.max_message_size = cap if limit is None else min(limit, cap)

    # Pre-framed writes ------------------------------------------------------------

    def handle_connect(self, event) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        # Frames made once for every subscriber are only right without compression.
        if scope is not None and not self.conn.extensions:
            scope["extensions"][FRAMES_EXTENSION] = {"write": self.write_frames}

    async def send(self, message) -> None:
        await super().send(message)
        if message["type"] == "websocket.accept":
            self.response = None  # sent: nothing reads it again

    def write_frames(self, data: bytes) -> bool:
        """Write complete server frames (unmasked, uncompressed, text or binary) to the
        socket now; False, writing nothing, where ASGI ``send`` must be used instead:
        before the handshake is done, once the connection is closing, and while the
        write buffer is over its high-water mark (``send`` waits for it to drain, and
        frames after it must queue behind it)."""
        if (
            self.writable.is_set()
            and self.handshake_complete
            and not self.close_sent
            and not self.disconnected
            and self.initial_response is None
            and self.conn.state is State.OPEN
            and not self.transport.is_closing()
        ):
            self.transport.write(data)
            return True
        return False

    # Write back-pressure becomes read back-pressure --------------------------------

    def pause_writing(self) -> None:
        """The write buffer is over its high-water mark: stop reading from the client.

        Whatever the client sends next (pings, frames that would get replies) could
        only add to what it is not reading. TCP then pushes back on the client. A
        client that never reads again is closed by the keepalive ping's timeout
        (``--ws-ping-interval``, ``--ws-ping-timeout``), whose pong cannot arrive.
        """
        super().pause_writing()
        self.write_paused = True
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        super().resume_writing()
        self.write_paused = False
        if not self.read_paused:
            self.transport.resume_reading()

    async def receive(self):
        """uvicorn's ``receive``, but reading resumes only if the client also reads."""
        message = await self.queue.get()
        if self.read_paused and self.queue.empty():
            self.read_paused = False
            if not self.write_paused:
                self.transport.resume_reading()
        return message

    # Pings ------------------------------------------------------------------------

    def handle_ping(self) -> None:
        """Answer only the most recent of the pings read in one go (RFC 6455 5.5.3
        allows it), keeping any other frame (a close reply) in order."""
        output = self.conn.data_to_send()
        pongs = [index for index, data in enumerate(output) if data[:1] == PONG_BYTE]
        if len(pongs) > 1:
            drop = set(pongs[:-1])
            output = [data for index, data in enumerate(output) if index not in drop]
        self.transport.write(b"".join(output))

    # Invalid text -----------------------------------------------------------------

    def send_receive_event_to_app(self) -> None:
        """uvicorn's, for text: invalid UTF-8 is closed with 1007 and logged in one line
        (uvicorn logs a traceback, which a client could repeat at will)."""
        if self.curr_msg_data_type != "text" or self.close_sent:
            super().send_receive_event_to_app()
            return
        data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
        self.frames = []
        try:
            text = data.decode()
        except UnicodeDecodeError:
            self.logger.info("%s - WebSocket closed (1007): a text frame was not UTF-8", _peer(self.client))
            self.conn.send_close(1007, "invalid UTF-8")
            self.handle_parser_exception()
            return
        self.queue.put_nowait({"type": "websocket.receive", "text": text})
        if not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()


class HttpProtocol(H11Protocol):
    """uvicorn's h11 protocol, with a deadline for each request head."""

    head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._await_head()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.head_timer is not None and self.conn.their_state is not h11.IDLE:
            self._head_done()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # Idle between requests is --timeout-keep-alive's; a next request begun and
        # never finished is ours again.
        self._await_head()

    def handle_websocket_upgrade(self, event) -> None:
        self._head_done()
        super().handle_websocket_upgrade(event)

    def connection_lost(self, exc) -> None:
        self._head_done()
        super().connection_lost(exc)

    def _await_head(self) -> None:
        self._head_done()
        if not self.transport.is_closing():
            self.head_timer = self.loop.call_later(settings.HANDSHAKE_TIMEOUT, self._head_late)

    def _head_done(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None

    def _head_late(self) -> None:
        self.head_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.logger.debug("%s - closed: no complete request head in time", _peer(self.client))
            self.transport.close()


def _peer(client) -> str:
    return f"{client[0]}:{client[1]}" if client else "-"
