"""Bayeux messages: parse what clients send, build what the server answers.

Pure functions over text and plain objects, with no Django or Channels imports, like
``realtime.protocol`` for the native frames. ``docs/bayeux.md`` describes the same
messages for people.

Every payload is a JSON array of messages (a bare object is accepted on input). Bayeux
channel ``/rooms/42`` is realtime's channel ``rooms/42``: the leading slash is the only
difference, and the naming rules are the same (``realtime.names`` already allows only
what Bayeux allows in a segment). ``/meta/**`` and ``/service/**`` are Bayeux's own.

A publication reaches Bayeux subscribers as ``{"channel", "data", "ext"}`` where
``ext.realtime`` carries what Bayeux has no field for: the native ``event``, the
publishing ``user``, and the ``offset`` and ``epoch`` of channels with history.
"""

from __future__ import annotations

import json
from typing import Any

from .. import protocol
from ..errors import InvalidChannelName, RealtimeError
from ..names import validate_channel_name, validate_subscription_name

VERSION = "1.0"
CONNECTION_TYPES = ("websocket", "long-polling", "callback-polling")
# Most messages one request or frame may carry.
MAX_BATCH = 100
# The event a publication made over Bayeux has on the native side, unless the
# publisher names one in ext.realtime.event.
DEFAULT_EVENT = "message"

HANDSHAKE = "/meta/handshake"
CONNECT = "/meta/connect"
SUBSCRIBE = "/meta/subscribe"
UNSUBSCRIBE = "/meta/unsubscribe"
DISCONNECT = "/meta/disconnect"

MessageId = str | int | None

# The error texts of Bayeux's own. Refusals that the native protocol has a code for use
# that code (access_denied, invalid_channel, ...): docs/bayeux.md lists both.
ERRORS = (
    "session_unknown",  # no such clientId (never was, expired, ended): handshake again
    "handshake_denied",  # bad credentials, or anonymous where nothing is open to anonymous readers
    "connection_types_unsupported",  # the handshake offered no connection type of ours
    "channel_missing",  # a message without a channel
    "channel_invalid",  # a malformed channel, or publishing to a wildcard
    "subscription_missing",  # a subscribe or unsubscribe naming no channel
    "subscribe_failed",  # subscribing to /meta/**
    "unknown_channel",  # a /meta channel Bayeux does not have
    "too_many_messages",  # more than MAX_BATCH messages in one payload
    "origin_not_allowed",  # an HTTP request from a browser origin that may not connect
    "too_many_sessions",  # the address holds MAX_BAYEUX_SESSIONS_PER_ADDRESS sessions
)


class BayeuxError(Exception):
    """A refusal, as Bayeux writes errors: ``"<code>:<args>:<text>"``.

    ``text`` is realtime's documented error code where one applies (``access_denied``,
    ``invalid_channel``...), or the string CometD uses for the same case
    (``session_unknown``, ``handshake_denied``...). Clients act on ``advice``.
    """

    def __init__(self, code: int, text: str, args: Any = "", advice: dict | None = None) -> None:
        args = _printable(args)
        super().__init__(f"{code}:{args}:{text}")
        self.code = code
        self.text = text
        self.args_text = args
        self.advice = advice

    @property
    def string(self) -> str:
        return f"{self.code}:{self.args_text}:{self.text}"

    @classmethod
    def from_realtime(cls, error: RealtimeError, args: str = "") -> BayeuxError:
        if isinstance(error, InvalidChannelName):
            return cls(405, "channel_invalid", args)
        return cls(error.http_status, str(error.code), args)


def session_unknown() -> BayeuxError:
    return BayeuxError(402, "session_unknown", advice={"reconnect": "handshake", "interval": 0})


def invalid(detail: str = "") -> BayeuxError:
    return BayeuxError(400, "invalid_data", detail[:200])


# Parsing -----------------------------------------------------------------------------


def parse_payload(text: str | bytes, max_size: int) -> list[Any]:
    """The messages of one request body or WebSocket frame (not yet checked one by one)."""
    if len(text) > max_size:
        raise BayeuxError(413, "message_too_large", str(max_size))
    try:
        payload = protocol.decode(text)
    except protocol.NestingTooDeep as error:
        raise invalid(str(error)) from None
    except ValueError:
        raise invalid("payload is not valid JSON") from None
    if isinstance(payload, dict):
        return [payload]
    if not isinstance(payload, list) or not payload:
        raise invalid("payload must be a message or a non-empty array of messages")
    if len(payload) > MAX_BATCH:
        raise BayeuxError(413, "too_many_messages", str(MAX_BATCH))
    return payload


def message_id(message: Any) -> MessageId:
    """The ``id`` to echo, if the message has a usable one."""
    if not isinstance(message, dict):
        return None
    value = message.get("id")
    if isinstance(value, str) and len(value) <= protocol.MAX_ID_LENGTH and protocol.is_encodable(value):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) <= protocol.MAX_OFFSET:
        return value
    return None


def check_message(message: Any) -> str:
    """Check a message's shape; returns its channel."""
    if not isinstance(message, dict):
        raise invalid("each message must be an object")
    if "id" in message and message_id(message) is None:
        raise invalid(f"id must be a string of at most {protocol.MAX_ID_LENGTH} characters or an integer")
    channel = message.get("channel")
    if channel is None:
        raise BayeuxError(400, "channel_missing")
    if not isinstance(channel, str) or not channel.startswith("/") or not protocol.is_encodable(channel):
        raise BayeuxError(405, "channel_invalid", channel)
    return channel


def client_id(message: dict) -> str:
    value = message.get("clientId")
    if not isinstance(value, str) or not value:
        raise session_unknown()
    return value


def ext(message: dict) -> dict:
    value = message.get("ext")
    return value if isinstance(value, dict) else {}


def realtime_ext(message: dict) -> dict:
    value = ext(message).get("realtime")
    return value if isinstance(value, dict) else {}


def connect_timeout(message: dict, server_timeout: float) -> float:
    """Seconds to hold this /meta/connect: the client's ``advice.timeout`` (ms) if lower."""
    advice = message.get("advice")
    if isinstance(advice, dict):
        value = advice.get("timeout")
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
            return min(value / 1000, server_timeout)
    return server_timeout


def subscriptions(message: dict) -> list[str]:
    """The channels a subscribe or unsubscribe names (a string, or an array of them)."""
    value = message.get("subscription")
    if value is None or value == []:
        raise BayeuxError(403, "subscription_missing")
    items = value if isinstance(value, list) else [value]
    if len(items) > MAX_BATCH or not all(isinstance(item, str) for item in items):
        raise invalid("subscription must be a channel or an array of channels")
    return items


def is_meta(channel: str) -> bool:
    return channel == "/meta" or channel.startswith("/meta/")


def is_service(channel: str) -> bool:
    return channel == "/service" or channel.startswith("/service/")


def subscription_name(channel: str) -> str:
    """``/rooms/*`` -> ``rooms/*``: the native name of a channel or pattern to subscribe to."""
    try:
        return validate_subscription_name(channel[1:])
    except InvalidChannelName:
        raise BayeuxError(405, "channel_invalid", channel) from None


def publish_name(channel: str) -> str:
    """``/rooms/42`` -> ``rooms/42``; patterns are refused."""
    try:
        return validate_channel_name(channel[1:])
    except InvalidChannelName:
        raise BayeuxError(405, "channel_invalid", channel) from None


def _printable(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)[:100]
    # The args part is colon- and comma-separated: keep it readable and unambiguous.
    return text[:200].replace(":", "%3A").replace(",", "%2C")


# Building ----------------------------------------------------------------------------


def encode(message: dict) -> str:
    return protocol.encode(message)


def reply(message: Any, channel: str, successful: bool = True, **fields: Any) -> dict:
    """A reply to ``message``, echoing its id."""
    answer: dict[str, Any] = {"channel": channel, "successful": successful}
    request_id = message_id(message)
    if request_id is not None:
        answer["id"] = request_id
    answer.update(fields)
    return answer


def error_reply(message: Any, error: BayeuxError) -> dict:
    channel = message.get("channel") if isinstance(message, dict) else None
    if not isinstance(channel, str) or not protocol.is_encodable(channel):
        channel = "/meta/unknown"
    fields: dict[str, Any] = {"error": error.string}
    if error.advice is not None:
        fields["advice"] = error.advice
    if isinstance(message, dict) and "subscription" in message:
        fields["subscription"] = message["subscription"]
    return reply(message, channel[:256], False, **fields)


def batch(parts: list[str]) -> str:
    """Encoded messages as one payload."""
    return "[" + ",".join(parts) + "]"


# Deliveries --------------------------------------------------------------------------

_last: tuple[str, tuple[str, str] | None] | None = None


def delivery(frame: str) -> tuple[str, str] | None:
    """A native publication frame as a Bayeux message: ``(message, "[message]")``.

    None for the native notices Bayeux has no message for (join, leave, missed...).
    The hub hands the same frame object to every subscriber of a publication, so the
    conversion is remembered for the last frame: one decode and one encode per
    publication per process, however many Bayeux subscribers it has.
    """
    global _last
    last = _last
    if last is not None and last[0] is frame:
        return last[1]
    result = None
    if frame.startswith('{"message":'):
        native = json.loads(frame)["message"]
        extra = {key: native[key] for key in ("event", "user", "time", "offset", "epoch") if key in native}
        # On a CloudEvents channel the message object is the CloudEvent: Bayeux carries it whole.
        data = native if "specversion" in native else native["data"]
        message = encode({"channel": "/" + native["channel"], "data": data, "ext": {"realtime": extra}})
        result = (message, f"[{message}]")
    _last = (frame, result)
    return result
