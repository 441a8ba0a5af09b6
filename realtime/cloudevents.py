"""CloudEvents 1.0: the envelope of publications on channels with the CloudEvents option.

Pure functions over text and plain objects, like ``realtime.protocol`` (no Django, no
Channels), so they can be tested without a server. ``docs/protocol.md`` describes the
same envelopes for people.

On such a channel the ``message`` object of a publication frame *is* a CloudEvent in
the JSON event format: the required attributes (``specversion``, ``id``, ``source``,
``type``), ``time``, ``datacontenttype``, ``data`` (or ``data_base64``), and realtime's
extension attributes ``channel``, ``event`` (the same as ``type``), ``userid`` and
``username`` (who published, for a logged-in user) and, on a channel with history,
``offset`` and ``epoch``, which the stores splice in like on any other frame. So
native clients still find ``channel``, ``event`` and ``data`` where they always are.

Publishers may also send CloudEvents (``POST /realtime/api/publish`` in structured mode,
``application/cloudevents+json``, or binary mode, ``ce-*`` headers): :func:`parse_structured`
and :func:`parse_binary` check them against the spec's rules and return an
:class:`Incoming`, whose attributes are kept on delivery.
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

from .errors import InvalidData
from .protocol import MAX_EVENT_LENGTH, decode, encode, is_encodable

SPECVERSION = "1.0"
STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
JSON = "application/json"
REQUIRED = ("specversion", "id", "source", "type")
OPTIONAL = ("datacontenttype", "dataschema", "subject", "time")
# Extension attributes realtime sets itself; a publisher may name the channel only.
SERVER_EXTENSIONS = ("channel", "event", "userid", "username", "offset", "epoch")
RESERVED = frozenset(SERVER_EXTENSIONS) - {"channel"}
EXTENSION_NAME = re.compile(r"[a-z0-9]+\Z")
MAX_ATTRIBUTE_LENGTH = 1024
# RFC 3339 (a profile of ISO 8601): a date, "T", a time, an offset or "Z".
TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})\Z")
JSON_TYPE = re.compile(r"(application|text)/([a-z0-9!#$&^_.+-]+\+)?json(\s*;.*)?\Z", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Incoming:
    """A CloudEvent a publisher sent, checked: its attributes (extensions included,
    ``data`` excluded) and its data, either a JSON value or base64 text."""

    attributes: dict[str, Any]
    data: Any = None
    data_base64: str | None = None
    has_data: bool = False
    channel: str | None = field(default=None)

    @property
    def type(self) -> str:
        return self.attributes["type"]


def timestamp(seconds: float) -> str:
    """Unix seconds as an RFC 3339 timestamp in UTC, to the microsecond."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def default_source(sse_path: str, channel: str) -> str:
    """A channel's URL: where its server-sent events are read (a URI reference)."""
    return f"{sse_path}?channel={channel}"


def event_frame(
    channel: str,
    event: str,
    data: Any,
    *,
    source: str,
    time: float,
    user: dict | None = None,
    incoming: Incoming | None = None,
) -> str:
    """The publication frame on a CloudEvents channel, encoded once: ``{"message": <CloudEvent>}``.

    A plain publication (``event``, ``data``) gets a fresh ``id``, the channel's
    ``source`` and the server's ``time``. An ``incoming`` CloudEvent keeps the
    attributes its publisher gave (``id``, ``source``, ``time``, ``subject``, extensions...)
    and gets what it lacks.
    """
    message: dict[str, Any] = {
        "specversion": SPECVERSION,
        "id": str(uuid.uuid4()),
        "source": source,
        "type": event,
        "time": timestamp(time),
        "datacontenttype": JSON,
    }
    if incoming is not None:
        if "datacontenttype" not in incoming.attributes and incoming.data_base64 is not None:
            del message["datacontenttype"]
        message.update(incoming.attributes)
        message.pop("channel", None)
    message["channel"] = channel
    message["event"] = event
    if user is not None:
        message["userid"] = user["id"]
        message["username"] = user["name"]
    if incoming is not None and incoming.data_base64 is not None:
        message["data_base64"] = incoming.data_base64
    elif incoming is None or incoming.has_data:
        message["data"] = data
    return encode({"message": message})


# Incoming CloudEvents -----------------------------------------------------------------


def _string(attributes: dict, name: str, required: bool) -> None:
    value = attributes.get(name)
    if value is None:
        if required:
            raise InvalidData(f"a CloudEvent needs the {name} attribute")
        return
    if not isinstance(value, str) or not value:
        raise InvalidData(f"the CloudEvent attribute {name} must be a non-empty string")
    if len(value) > MAX_ATTRIBUTE_LENGTH or not is_encodable(value):
        raise InvalidData(f"the CloudEvent attribute {name} is too long or not valid Unicode")


def _uri_reference(attributes: dict, name: str) -> None:
    value = attributes.get(name)
    if value is not None and any(c.isspace() or ord(c) < 32 for c in value):
        raise InvalidData(f"the CloudEvent attribute {name} must be a URI reference")


def check_attributes(attributes: dict[str, Any]) -> dict[str, Any]:
    """The context attributes of a CloudEvent 1.0, checked as the spec asks; nulls dropped."""
    attributes = {name: value for name, value in attributes.items() if value is not None}
    for name in REQUIRED:
        _string(attributes, name, required=True)
    if attributes["specversion"] != SPECVERSION:
        raise InvalidData(f"specversion must be {SPECVERSION!r} (CloudEvents 1.0)")
    _uri_reference(attributes, "source")
    if len(attributes["type"]) > MAX_EVENT_LENGTH:
        raise InvalidData(f"type becomes the event, at most {MAX_EVENT_LENGTH} characters")
    for name in OPTIONAL:
        _string(attributes, name, required=False)
    _uri_reference(attributes, "dataschema")
    if "time" in attributes:
        value = attributes["time"]
        try:
            if not TIMESTAMP.match(value):
                raise ValueError
            datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
        except ValueError:
            raise InvalidData("the CloudEvent attribute time must be an RFC 3339 timestamp") from None
    for name, value in attributes.items():
        if name in REQUIRED or name in OPTIONAL:
            continue
        if not EXTENSION_NAME.match(name):
            raise InvalidData(f"extension attribute names use a-z and 0-9 only, not {name[:40]!r}")
        if name in RESERVED:
            raise InvalidData(f"the extension attribute {name} is realtime's to set")
        if isinstance(value, bool):
            continue
        if isinstance(value, int):
            if not -(2**31) <= value < 2**31:
                raise InvalidData(f"the extension attribute {name} is out of the Integer range")
            continue
        if not isinstance(value, str) or len(value) > MAX_ATTRIBUTE_LENGTH or not is_encodable(value):
            raise InvalidData(f"the extension attribute {name} must be a string, an integer or a boolean")
    return attributes


def _base64(text: Any) -> str:
    if not isinstance(text, str):
        raise InvalidData("data_base64 must be a string")
    try:
        base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidData("data_base64 is not base64") from None
    return text


def _channel_of(attributes: dict) -> str | None:
    channel = attributes.pop("channel", None)
    if channel is not None and not isinstance(channel, str):
        raise InvalidData("the channel extension attribute must be a string")
    return channel


def parse_structured(body: bytes) -> Incoming:
    """A CloudEvent in the JSON event format (structured mode)."""
    try:
        event = decode(body)
    except (ValueError, RecursionError):
        raise InvalidData("body is not valid JSON") from None
    if not isinstance(event, dict):
        raise InvalidData("a structured CloudEvent is a JSON object (batches are not accepted)")
    has_data = "data" in event
    data = event.pop("data", None)
    data_base64 = event.pop("data_base64", None)
    if has_data and data_base64 is not None:
        raise InvalidData("a CloudEvent has data or data_base64, not both")
    attributes = check_attributes(event)
    channel = _channel_of(attributes)
    if data_base64 is not None:
        return Incoming(attributes, None, _base64(data_base64), True, channel)
    return Incoming(attributes, data, None, has_data, channel)


def parse_binary(headers: dict[str, str], content_type: str | None, body: bytes) -> Incoming:
    """A CloudEvent in binary mode: attributes in ``ce-*`` headers (``headers`` holds them,
    lower-cased, without the prefix, still percent-encoded), data in the body."""
    attributes: dict[str, Any] = {name: unquote(value) for name, value in headers.items()}
    if content_type:
        attributes["datacontenttype"] = content_type
    attributes = check_attributes(attributes)
    channel = _channel_of(attributes)
    if not body:
        return Incoming(attributes, None, None, False, channel)
    kind = attributes.get("datacontenttype", JSON)
    if JSON_TYPE.match(kind):
        try:
            return Incoming(attributes, decode(body), None, True, channel)
        except (ValueError, RecursionError):
            raise InvalidData("the body is not valid JSON, as its Content-Type says") from None
    if kind.lower().startswith("text/"):
        try:
            return Incoming(attributes, body.decode(), None, True, channel)
        except UnicodeDecodeError:
            raise InvalidData("the body is not UTF-8 text, as its Content-Type says") from None
    return Incoming(attributes, None, base64.b64encode(body).decode(), True, channel)
