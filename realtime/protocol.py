"""The native wire protocol: client frames in, server frames out.

Pure functions over text and plain objects, with no Django or Channels imports, so the
parser can be tested (and fuzzed) without a server. ``docs/protocol.md`` describes the
same frames for people.

Client frames are JSON objects with exactly one command key, plus an optional ``id``
that is echoed in the reply::

    {"auth": {"secret": "rt_...", "access": "read-write"}, "id": 1}
    {"auth": {"token": "eyJ..."}}
    {"subscribe": {"channel": "rooms/lobby"}}
    {"publish": {"channel": "rooms/lobby", "event": "chat", "data": {"text": "hi"}}}

    {"rpc": {"method": "chat.recent", "data": {"room": "lobby"}}, "id": 2}
    {"refresh": {"token": "eyJ..."}}

Server frames are replies (``{"ok": true}`` / ``{"err": "code"}``), publications
(``{"message": {...}}``) and notices (``{"unsubscribed": {...}}``, ``{"missed": {...}}``,
``{"logout": {...}}``).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from .errors import InvalidData, MessageTooLarge, RealtimeError
from .positions import Position

PROTOCOL_VERSION = 1
ACCESS_LEVELS = ("read-only", "read-write")
MAX_ID_LENGTH = 64
MAX_EVENT_LENGTH = 128
MAX_SECRET_LENGTH = 512
MAX_TOKEN_LENGTH = 4096
MAX_EPOCH_LENGTH = 64
MAX_IDEMPOTENCY_KEY_LENGTH = 128
MAX_OFFSET = 2**53 - 1
HISTORY_DEFAULT_LIMIT = 100
HISTORY_MAX_LIMIT = 1000
MAX_METHOD_LENGTH = 128
# RPC method names: segments of letters, digits, "_", "-" and ".", joined by "/", so that
# the method "chat/recent" is also the Bayeux service channel /service/chat/recent.
METHOD_NAME = re.compile(r"[A-Za-z0-9_.-]+(?:/[A-Za-z0-9_.-]+)*")
# Deepest nesting of arrays and objects in client JSON, counting the frame's (or the
# body's) own object as 1: a native publish's data may nest MAX_DEPTH - 2 deep. Deeper
# input is refused at parse time, far below where encoding it again would fail.
MAX_DEPTH = 128

RequestId = str | int | None


@dataclass(frozen=True, slots=True)
class Auth:
    """Authenticate with an access key's ``secret`` or a signed browser ``token``."""

    id: RequestId
    secret: str | None = None
    access: str | None = None
    token: str | None = None


@dataclass(frozen=True, slots=True)
class Subscribe:
    id: RequestId
    channel: str
    # Recover what was published after this position (the last publication the
    # client saw) before going live.
    since: Position | None = None


@dataclass(frozen=True, slots=True)
class History:
    id: RequestId
    channel: str
    since: int = 0
    limit: int = HISTORY_DEFAULT_LIMIT
    epoch: str | None = None


@dataclass(frozen=True, slots=True)
class Presence:
    id: RequestId
    channel: str


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    id: RequestId
    channel: str


@dataclass(frozen=True, slots=True)
class Publish:
    id: RequestId
    channel: str
    event: str
    data: Any
    # A retry with the same key on the same channel (within IDEMPOTENCY_WINDOW) gets the
    # first publication's outcome and publishes nothing.
    idempotency_key: str | None = None


@dataclass(frozen=True, slots=True)
class Logout:
    id: RequestId


@dataclass(frozen=True, slots=True)
class Disconnect:
    id: RequestId


@dataclass(frozen=True, slots=True)
class Ping:
    """A heartbeat: lets a client (a browser cannot send WebSocket pings) notice a dead link."""

    id: RequestId


@dataclass(frozen=True, slots=True)
class Rpc:
    """Call a method registered in Django code (``realtime.rpc``); the reply carries its result."""

    id: RequestId
    method: str
    data: Any = None


@dataclass(frozen=True, slots=True)
class Refresh:
    """Renew a token-authenticated connection with a fresh token, keeping its subscriptions."""

    id: RequestId
    token: str
    access: str | None = None


@dataclass(frozen=True, slots=True)
class Time:
    """The server's clock (ivy's time command): replied as Unix seconds, a float."""

    id: RequestId


Command = (
    Auth
    | Subscribe
    | Unsubscribe
    | Publish
    | History
    | Presence
    | Logout
    | Disconnect
    | Ping
    | Rpc
    | Refresh
    | Time
)


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    # 1e400 parses to inf, which could not be encoded for subscribers as JSON.
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of range")
    return value


class NestingTooDeep(ValueError):
    """Client JSON nested deeper than ``MAX_DEPTH``."""

    def __init__(self) -> None:
        super().__init__(f"JSON may nest arrays and objects at most {MAX_DEPTH} deep")


def decode(text: str | bytes):
    """``json.loads`` for client input: no NaN, Infinity or out-of-range floats, which
    could not be encoded again for subscribers, and no nesting deeper than ``MAX_DEPTH``.
    Raises ValueError (:class:`NestingTooDeep` for nesting)."""
    try:
        value = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except RecursionError:
        raise NestingTooDeep() from None
    # Fewer brackets than the limit cannot nest past it: the walk is for the rare rest.
    if isinstance(text, str):
        brackets = text.count("[") + text.count("{")
    else:
        brackets = text.count(b"[") + text.count(b"{")
    if brackets > MAX_DEPTH and isinstance(value, (dict, list)) and _nests_deeper(value, MAX_DEPTH):
        raise NestingTooDeep()
    return value


def _nests_deeper(value: Any, limit: int) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        for child in item.values() if isinstance(item, dict) else item:
            if isinstance(child, (dict, list)):
                stack.append((child, depth + 1))
    return False


def is_encodable(text: str) -> bool:
    """False for strings holding lone surrogates (from JSON escapes such as "\\ud800"),
    which cannot be sent as UTF-8 and so must never reach a reply or a subscriber."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _fail(error: RealtimeError, request_id: RequestId) -> RealtimeError:
    error.request_id = request_id  # type: ignore[attr-defined]
    return error


def _request_id(frame: dict) -> RequestId:
    if "id" not in frame:
        return None
    value = frame["id"]
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InvalidData("id must be a string or an integer")
    if isinstance(value, str):
        if len(value) > MAX_ID_LENGTH:
            raise InvalidData(f"id must be at most {MAX_ID_LENGTH} characters")
        if not is_encodable(value):
            raise InvalidData("id must be valid Unicode (no lone surrogates)")
    if isinstance(value, int) and not -(2**53 - 1) <= value <= 2**53 - 1:
        raise InvalidData("id must be a safe integer")
    return value


def _body(value: Any, command: str) -> dict:
    if not isinstance(value, dict):
        raise InvalidData(f"{command} must be an object")
    return value


def _string(body: dict, field: str, command: str, max_length: int) -> str:
    value = body.get(field)
    if not isinstance(value, str) or not value:
        raise InvalidData(f"{command}.{field} must be a non-empty string")
    if len(value) > max_length:
        raise InvalidData(f"{command}.{field} must be at most {max_length} characters")
    if not is_encodable(value):
        raise InvalidData(f"{command}.{field} must be valid Unicode (no lone surrogates)")
    return value


def _channel(body: dict, command: str) -> str:
    # Only the type is checked here: naming rules are ``realtime.names``'s job, and
    # break them and the client gets invalid_channel_name rather than invalid_data.
    value = body.get("channel")
    if not isinstance(value, str):
        raise InvalidData(f"{command}.channel must be a string")
    return value


def _flag(value: Any, command: str) -> None:
    if value is not True and value != {}:
        raise InvalidData(f"{command} must be true")


def parse_auth(request_id: RequestId, value: Any) -> Auth:
    """The body of an ``auth`` command (the Bayeux handshake's ``ext.auth`` too)."""
    body = _body(value, "auth")
    access = body.get("access")
    if access is not None and access not in ACCESS_LEVELS:
        raise InvalidData('auth.access must be "read-only" or "read-write"')
    if "token" in body:
        if "secret" in body:
            raise InvalidData("auth takes a secret or a token, not both")
        return Auth(request_id, access=access, token=_string(body, "token", "auth", MAX_TOKEN_LENGTH))
    return Auth(request_id, _string(body, "secret", "auth", MAX_SECRET_LENGTH), access)


def _offset(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_OFFSET:
        raise InvalidData(f"{field} must be an integer from 0 to {MAX_OFFSET}")
    return value


def _epoch(body: dict, command: str) -> str:
    return _string(body, "epoch", command, MAX_EPOCH_LENGTH)


def _parse_subscribe(request_id: RequestId, value: Any) -> Subscribe:
    body = _body(value, "subscribe")
    channel = _channel(body, "subscribe")
    if body.get("since") is None:
        return Subscribe(request_id, channel)
    return Subscribe(request_id, channel, parse_since(body["since"], "subscribe.since"))


def parse_since(value: Any, field: str) -> Position:
    """A position ``{"offset": N, "epoch": E}`` (also Bayeux's ``ext.realtime.since``)."""
    since = _body(value, field)
    return Position(_offset(since.get("offset"), f"{field}.offset"), _epoch(since, field))


def _parse_history(request_id: RequestId, value: Any) -> History:
    body = _body(value, "history")
    channel = _channel(body, "history")
    since = _offset(body.get("since", 0), "history.since")
    limit = body.get("limit", HISTORY_DEFAULT_LIMIT)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= HISTORY_MAX_LIMIT:
        raise InvalidData(f"history.limit must be an integer from 1 to {HISTORY_MAX_LIMIT}")
    epoch = _epoch(body, "history") if body.get("epoch") is not None else None
    return History(request_id, channel, since, limit, epoch)


def _parse_presence(request_id: RequestId, value: Any) -> Presence:
    return Presence(request_id, _channel(_body(value, "presence"), "presence"))


def _parse_unsubscribe(request_id: RequestId, value: Any) -> Unsubscribe:
    return Unsubscribe(request_id, _channel(_body(value, "unsubscribe"), "unsubscribe"))


def _parse_publish(request_id: RequestId, value: Any) -> Publish:
    body = _body(value, "publish")
    channel = _channel(body, "publish")
    event = _string(body, "event", "publish", MAX_EVENT_LENGTH)
    if "data" not in body:
        raise InvalidData("publish.data is required (it may be null)")
    key = None
    if body.get("idempotency_key") is not None:
        key = _string(body, "idempotency_key", "publish", MAX_IDEMPOTENCY_KEY_LENGTH)
    return Publish(request_id, channel, event, body["data"], key)


def _parse_logout(request_id: RequestId, value: Any) -> Logout:
    _flag(value, "logout")
    return Logout(request_id)


def _parse_disconnect(request_id: RequestId, value: Any) -> Disconnect:
    _flag(value, "disconnect")
    return Disconnect(request_id)


def _parse_ping(request_id: RequestId, value: Any) -> Ping:
    _flag(value, "ping")
    return Ping(request_id)


def is_method_name(value: Any) -> bool:
    return isinstance(value, str) and len(value) <= MAX_METHOD_LENGTH and bool(METHOD_NAME.fullmatch(value))


def _parse_rpc(request_id: RequestId, value: Any) -> Rpc:
    body = _body(value, "rpc")
    method = body.get("method")
    if not is_method_name(method):
        raise InvalidData(
            f"rpc.method must be a method name of at most {MAX_METHOD_LENGTH} characters "
            "(segments of A-Z a-z 0-9 _ - . joined by /)"
        )
    return Rpc(request_id, method, body.get("data"))


def _parse_refresh(request_id: RequestId, value: Any) -> Refresh:
    body = _body(value, "refresh")
    access = body.get("access")
    if access is not None and access not in ACCESS_LEVELS:
        raise InvalidData('refresh.access must be "read-only" or "read-write"')
    return Refresh(request_id, _string(body, "token", "refresh", MAX_TOKEN_LENGTH), access)


def _parse_time(request_id: RequestId, value: Any) -> Time:
    _flag(value, "time")
    return Time(request_id)


PARSERS = {
    "auth": parse_auth,
    "subscribe": _parse_subscribe,
    "unsubscribe": _parse_unsubscribe,
    "publish": _parse_publish,
    "history": _parse_history,
    "presence": _parse_presence,
    "logout": _parse_logout,
    "disconnect": _parse_disconnect,
    "ping": _parse_ping,
    "rpc": _parse_rpc,
    "refresh": _parse_refresh,
    "time": _parse_time,
}


def parse_frame(text: str, max_size: int) -> Command:
    """Parse one client text frame into a command.

    Raises :class:`InvalidData` or :class:`MessageTooLarge`; the exception carries
    ``request_id`` when the frame got far enough to have a readable ``id``.
    """
    # A str of n characters encodes to between n and 4n UTF-8 bytes: only encode
    # when the cheap bounds cannot decide.
    # surrogatepass: a str from Python (not from a socket) may hold lone surrogates.
    if len(text) > max_size or (
        len(text) * 4 > max_size and len(text.encode(errors="surrogatepass")) > max_size
    ):
        raise _fail(MessageTooLarge(f"frames are limited to {max_size} bytes"), None)
    try:
        frame = decode(text)
    except NestingTooDeep as error:
        raise _fail(InvalidData(str(error)), None) from None
    except ValueError:
        raise _fail(InvalidData("frame is not valid JSON"), None) from None
    if not isinstance(frame, dict):
        raise _fail(InvalidData("frame must be a JSON object"), None)
    try:
        request_id = _request_id(frame)
    except InvalidData as error:
        raise _fail(error, None) from None
    commands = [key for key in frame if key != "id"]
    if len(commands) != 1:
        raise _fail(InvalidData("frame must hold exactly one command"), request_id)
    parser = PARSERS.get(commands[0])
    if parser is None:
        raise _fail(InvalidData(f"unknown command {commands[0][:32]!r}"), request_id)
    try:
        return parser(request_id, frame[commands[0]])
    except InvalidData as error:
        raise _fail(error, request_id) from None


def encode(frame: dict) -> str:
    """Serialise a server frame: compact, UTF-8 kept as is, never NaN or Infinity."""
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def ok_frame(request_id: RequestId = None, **extra: Any) -> str:
    frame: dict[str, Any] = {"ok": True, **extra}
    if request_id is not None:
        frame["id"] = request_id
    return encode(frame)


def error_frame(code: str, request_id: RequestId = None, detail: str = "") -> str:
    frame: dict[str, Any] = {"err": code}
    if detail and detail != code:
        frame["detail"] = detail
    if request_id is not None:
        frame["id"] = request_id
    return encode(frame)


def message_frame(
    channel: str, event: str, data: Any, user: dict | None = None, time: float | None = None
) -> str:
    """The frame every subscriber receives for one publication, encoded once.

    ``user`` is who published, when a logged-in user did (set by the server); ``time``
    is when the server accepted the publication (Unix seconds, to the microsecond).
    """
    message: dict[str, Any] = {"channel": channel, "event": event, "data": data}
    if user is not None:
        message["user"] = user
    if time is not None:
        message["time"] = round(time, 6)
    return encode({"message": message})


def stamp(frame: str, offset: int, epoch: str) -> str:
    """Add a publication's place in its stream to its encoded frame (no re-encoding).

    ``frame`` is a :func:`message_frame`, which ends in ``}}``. The Lua script in
    ``realtime.history`` does the same splice inside Redis.
    """
    return f'{frame[:-2]},"offset":{offset},"epoch":"{epoch}"}}}}'


def _reply_head(request_id: RequestId) -> str:
    return encode({"ok": True, "id": request_id} if request_id is not None else {"ok": True})[:-1]


def history_reply(request_id: RequestId, channel: str, page) -> str:
    """The reply to ``history``: stored frames are spliced in, not decoded and encoded again."""
    about = encode(
        {
            "channel": channel,
            "offset": page.position.offset,
            "epoch": page.position.epoch,
            "complete": page.complete,
            "next": page.next,
        }
    )
    # Each stored frame is {"message":{...}}: keep the inner object.
    publications = ",".join(frame[11:-1] for frame in page.frames)
    return f'{_reply_head(request_id)},"history":{about[:-1]},"publications":[{publications}]}}}}'


def presence_reply(request_id: RequestId, channel: str, members: list[dict]) -> str:
    return ok_frame(request_id, presence={"channel": channel, "members": members})


def join_frame(channel: str, member: dict) -> str:
    return encode({"join": {"channel": channel, **member}})


def leave_frame(channel: str, member: dict) -> str:
    return encode({"leave": {"channel": channel, **member}})


def unsubscribed_frame(channel: str, reason: str) -> str:
    return encode({"unsubscribed": {"channel": channel, "reason": reason}})


def subscribed_frame(channel: str, fields: dict) -> str:
    """The server subscribed this connection (the server API); ``fields`` are those a
    ``subscribe`` reply would carry (offset, epoch, client)."""
    return encode({"subscribed": {"channel": channel, **fields}})


def missed_frame(channel: str, reason: str) -> str:
    """The subscription is still there, but publications on it may have been lost."""
    return encode({"missed": {"channel": channel, "reason": reason}})


def logout_frame(reason: str) -> str:
    return encode({"logout": {"reason": reason}})
