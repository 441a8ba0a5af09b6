"""Bayeux over WebSocket: socket I/O only, the messages are ``BayeuxServer``'s.

Frames hold arrays of messages both ways. Replies to one frame go out together, in
one frame; a delivery goes out at once, after any reply it must follow. The reply to
``/meta/connect`` is held up to ``BAYEUX_TIMEOUT`` (it is the client's heartbeat),
while everything else flows past it.

As for the native consumer, there is no per-connection channel-layer channel, no task
and no thread hop per frame (see ``realtime.asgi``).
"""

from __future__ import annotations

import logging

from ..asgi import Consumer
from ..conf import settings
from ..errors import CloseCode, Unavailable
from . import protocol as bayeux
from .protocol import BayeuxError
from .sessions import get_server

logger = logging.getLogger("realtime")


class BayeuxConsumer(Consumer):
    """Serves Bayeux (``docs/bayeux.md``) on one WebSocket, for any number of sessions."""

    server = None
    protocol_name = "bayeux"
    # A handshake here may carry a key's secret (the frame is not logged, unlike a URL).
    secrets_allowed = True

    # ASGI events -------------------------------------------------------------------

    async def websocket_connect(self, message: dict) -> None:
        self.sessions: set = set()
        self.replies: list[str] = []
        self.handling = False
        if not await self.open():
            return
        try:
            self.server = await get_server()
        except Unavailable:
            await self.close(CloseCode.UNAVAILABLE)

    async def websocket_receive(self, message: dict) -> None:
        if self.closing:
            return
        text = message.get("text")
        try:
            if text is None:
                raise bayeux.invalid("binary frames are not supported; send JSON text")
            messages = bayeux.parse_payload(text, settings.MAX_MESSAGE_SIZE)
        except BayeuxError as error:
            self.send_reply(bayeux.error_reply(None, error))
            self.frame_was_malformed()
            return
        self.frame_was_valid()
        self.handling = True
        try:
            connect = await self.server.handle(messages, self)
            if connect is not None:
                request, session = connect
                now, timeout = self.server.connect_now(session, request, batched=len(messages) > 1)
                if now:
                    self.send_reply(self.server.connect_reply(session, request))
                else:
                    session.hold_reply(self, request, timeout)
        finally:
            self.handling = False
            self._flush()

    # What sessions and the server call ---------------------------------------------

    def send_reply(self, reply: dict) -> None:
        self.replies.append(bayeux.encode(reply))
        if not self.handling:
            self._flush()

    def deliver(self, payload: str) -> None:
        """An encoded one-message batch for one of this socket's sessions."""
        if self.replies:
            self._flush()  # replies first: a client ignores messages for a subscription not yet confirmed
        self.outbox.push(payload)

    def use(self, session, connect: bool) -> None:
        session.attach(self)

    def handshake_failed(self) -> None:
        self.authentication_failed()

    def is_stale(self) -> bool:
        return not self.sessions

    # Helpers -----------------------------------------------------------------------

    def _flush(self) -> None:
        if self.replies:
            self.outbox.push(bayeux.batch(self.replies))
            self.replies = []

    def let_go(self, reason: str) -> None:
        self._flush()
        for session in list(self.sessions):
            if reason == "too_slow":
                # Messages were lost: the session ends, and its client handshakes again.
                self.server.end(session, "too_slow")
            else:
                # Sessions outlive their socket for BAYEUX_MAX_INTERVAL: a client may come back.
                session.detach(self)
        self.sessions.clear()
