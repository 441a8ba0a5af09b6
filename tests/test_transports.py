"""SSE, CloudEvents, bubbling and the clock: pure units and the in-process hub."""

import asyncio
import json
import time

import pytest
from cloudevents.core.bindings.http import HTTPMessage, from_structured, to_binary, to_structured
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from realtime import cloudevents, protocol
from realtime.bayeux import protocol as bayeux
from realtime.errors import InvalidData
from realtime.positions import Position
from realtime.protocol import Time, parse_frame
from realtime.publishing import send_publication
from realtime.registry import ChannelInfo
from realtime.runtime import get_hub
from realtime.sse import protocol as sse
from realtime.sse.stream import Stream
from tests.test_fanout import Connection, Counting


@pytest.fixture
def in_memory_layer(settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


# The clock -------------------------------------------------------------------------------


def test_the_time_command_parses():
    assert parse_frame('{"time": true, "id": 1}', 1024) == Time(1)
    assert parse_frame('{"time": {}}', 1024) == Time(None)
    with pytest.raises(InvalidData):
        parse_frame('{"time": 1}', 1024)


def test_a_publication_carries_its_time_and_stamping_keeps_it():
    frame = protocol.message_frame("c", "e", 1, None, 1764600000.1234567)
    assert frame == '{"message":{"channel":"c","event":"e","data":1,"time":1764600000.123457}}'
    stamped = protocol.stamp(frame, 3, "e" * 16)
    assert json.loads(stamped)["message"] == {
        "channel": "c", "event": "e", "data": 1, "time": 1764600000.123457, "offset": 3, "epoch": "e" * 16,
    }  # fmt: skip


def test_bayeux_carries_the_time_in_ext():
    frame = protocol.stamp(protocol.message_frame("c", "e", 1, None, 1764600000.5), 2, "e" * 16)
    message = json.loads(bayeux.delivery(frame)[0])
    assert message["ext"]["realtime"] == {"event": "e", "time": 1764600000.5, "offset": 2, "epoch": "e" * 16}


# SSE wire --------------------------------------------------------------------------------


def test_a_publication_becomes_one_event_whose_data_is_the_message_object():
    frame = protocol.stamp(protocol.message_frame("news", "a\nb", {"t": "x\ny"}, None, 1.5), 7, "f" * 16)
    named, unnamed, channel, offset, epoch = sse.delivery(frame)
    assert named == b'event: a b\ndata: {"channel":"news","event":"a\\nb","data":{"t":"x\\ny"},' + (
        b'"time":1.5,"offset":7,"epoch":"ffffffffffffffff"}\n'
    )
    assert unnamed == named.split(b"\n", 1)[1]
    assert (channel, offset, epoch) == ("news", 7, "f" * 16)
    assert sse.delivery(frame) is sse.delivery(frame)  # remembered for the same frame


def test_notices_become_realtime_events_and_replies_none():
    named, *_ = sse.delivery(protocol.unsubscribed_frame("news", "access_revoked"))
    assert named == b'event: realtime:unsubscribed\ndata: {"channel":"news","reason":"access_revoked"}\n'
    assert sse.delivery(protocol.ok_frame(1)) is None


def test_ids_name_positions_and_read_back():
    assert sse.format_id({"news": ("e1", 4)}) == "e1:4"
    assert sse.format_id({"news": None}) is None
    both = sse.format_id({"a": ("e1", 4), "b/c": ("e2", 0), "d": None})
    assert both == "a=e1:4,b/c=e2:0"
    assert sse.parse_id(both, ["a", "b/c", "d"]) == {"a": Position(4, "e1"), "b/c": Position(0, "e2")}
    assert sse.parse_id("e1:4", ["news"]) == {"news": Position(4, "e1")}
    assert sse.parse_id("e1:4", ["a", "b"]) == {}
    assert sse.parse_id("garbage", ["news"]) == {}
    assert sse.parse_id("a=e1:x,zz=e:1", ["a"]) == {}


class Sent:
    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def __call__(self, message: dict) -> None:
        if message["type"] == "http.response.body":
            self.bodies.append(message["body"])


@pytest.mark.asyncio
@pytest.mark.usefixtures("in_memory_layer")
async def test_streams_convert_each_publication_once_however_many_they_are(monkeypatch):
    hub = await get_hub()
    outputs = [Sent() for _ in range(30)]
    streams = [Stream(sent, None, 100) for sent in outputs]
    for stream in streams:
        stream.hub = hub
        hub.add(stream)
        await hub.subscribe(stream, "sse-fanout")
        stream.start([])
    assert set(streams) <= hub.connections  # they count as connections, like sockets
    info = ChannelInfo(1, "sse-fanout", False, True, history_size=5)
    loads = Counting(json.loads)
    monkeypatch.setattr(json, "loads", loads)
    try:
        await send_publication("sse-fanout", "chat", {"n": 1}, info=info)
        await send_publication("sse-fanout", "chat", {"n": 2}, info=info)
    finally:
        for stream in streams:
            stream.cancel()
        hub.stop()
    assert loads.calls == 2  # one decode per publication, not per stream
    for sent in outputs:
        events = [body for body in sent.bodies if body.startswith(b"event: chat")]
        assert [json.loads(event.split(b"data: ")[1])["data"] for event in events] == [{"n": 1}, {"n": 2}]
    assert outputs[0].bodies[1] == outputs[-1].bodies[1]


# Bubbling --------------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.usefixtures("in_memory_layer")
async def test_a_bubbling_channel_gets_what_is_published_below_it_once_each():
    hub = await get_hub()
    parent, pattern, both, exact, other = (Connection(n) for n in range(5))
    for conn in (parent, pattern, both, exact, other):
        hub.add(conn)
    await hub.subscribe(parent, "tree", bubble=True)
    await hub.subscribe(pattern, "tree/**")
    await hub.subscribe(both, "tree", bubble=True)
    await hub.subscribe(both, "tree/**")
    await hub.subscribe(both, "**")
    await hub.subscribe(exact, "tree/a/b")
    await hub.subscribe(exact, "tree", bubble=True)
    await hub.subscribe(other, "treetop")
    info = ChannelInfo(1, "tree", True, True)
    try:
        await send_publication("tree/a/b", "e", 1, info=info)
        await send_publication("tree", "e", 2, info=info)
        await send_publication("treetop/x", "e", 3, info=info)
        # What a pattern or a bubbling channel delivers waits for the policy's first
        # decision on each channel (asked in a task of its own), then goes out in order.
        await asyncio.sleep(0.2)
        hub.unsubscribe(parent, "tree")
        hub.unsubscribe(both, "tree")
        hub.unsubscribe(exact, "tree")
        assert "tree" not in hub.bubbling
    finally:
        for conn in (parent, pattern, both, exact, other):
            hub.remove(conn)
        hub.stop()

    def received(conn):
        return [(m["message"]["channel"], m["message"]["data"]) for m in map(json.loads, conn.sent)]

    assert received(parent) == [("tree/a/b", 1), ("tree", 2)]
    assert received(pattern) == [("tree/a/b", 1)]
    assert received(both) == [("tree/a/b", 1), ("tree", 2), ("treetop/x", 3)]
    assert received(exact) == [("tree/a/b", 1), ("tree", 2)]
    assert received(other) == []


# CloudEvents -----------------------------------------------------------------------------


def test_a_cloudevents_frame_is_a_cloudevent_the_sdk_reads_even_once_stamped():
    frame = cloudevents.event_frame(
        "rooms/1", "chat", {"t": "hi"}, source="/realtime/sse?channel=rooms/1", time=1764600000.25,
        user={"id": 3, "name": "ann"},
    )  # fmt: skip
    stamped = protocol.stamp(frame, 9, "e" * 16)
    message = stamped[len('{"message":') : -1]
    event = JSONFormat().read(CloudEvent, message)
    assert event.get_specversion() == "1.0" and event.get_type() == "chat"
    assert event.get_source() == "/realtime/sse?channel=rooms/1"
    assert event.get_time().timestamp() == 1764600000.25
    assert event.get_datacontenttype() == "application/json"
    assert event.get_data() == {"t": "hi"}
    assert [event.get_extension(name) for name in ("channel", "event", "offset", "epoch", "userid")] == [
        "rooms/1", "chat", 9, "e" * 16, 3,
    ]  # fmt: skip
    other = cloudevents.event_frame("rooms/1", "chat", 1, source="s", time=1.0)
    assert json.loads(other)["message"]["id"] != event.get_id()


def test_what_the_sdk_produces_is_accepted_in_both_modes():
    event = CloudEvent(
        {
            "type": "com.example.chat",
            "source": "https://example.com/app",
            "channel": "rooms/1",
            "subject": "s1",
        },
        {"text": "hi"},
    )
    structured = to_structured(event, JSONFormat())
    incoming = cloudevents.parse_structured(structured.body)
    assert (incoming.channel, incoming.type, incoming.data) == ("rooms/1", "com.example.chat", {"text": "hi"})
    binary = to_binary(event, JSONFormat())
    headers = {k[3:]: v for k, v in binary.headers.items() if k.lower().startswith("ce-")}
    again = cloudevents.parse_binary(headers, binary.headers.get("content-type"), binary.body)
    assert again.attributes == incoming.attributes
    assert again.data == {"text": "hi"}
    frame = cloudevents.event_frame("rooms/1", again.type, again.data, source="x", time=1.0, incoming=again)
    parsed = from_structured(HTTPMessage({}, frame[len('{"message":') : -1].encode()), JSONFormat())
    assert (parsed.get_id(), parsed.get_source(), parsed.get_subject()) == (
        event.get_id(), "https://example.com/app", "s1",
    )  # fmt: skip


def test_binary_mode_data_by_content_type():
    base = {"specversion": "1.0", "id": "1", "source": "/s", "type": "t"}
    text = cloudevents.parse_binary(base, "text/plain; charset=utf-8", "héllo".encode())
    assert text.data == "héllo" and text.data_base64 is None
    raw = cloudevents.parse_binary(base, "application/octet-stream", b"\x00\xff")
    assert raw.data_base64 == "AP8="
    frame = cloudevents.event_frame("c", "t", None, source="/s", time=1.0, incoming=raw)
    assert (
        json.loads(frame)["message"]["data_base64"] == "AP8=" and "data" not in json.loads(frame)["message"]
    )
    assert cloudevents.parse_binary(base, None, b"").has_data is False


@pytest.mark.parametrize(
    ("change", "detail"),
    [
        ({"id": None}, "needs the id attribute"),
        ({"specversion": "0.3"}, "specversion must be"),
        ({"source": "has space"}, "URI reference"),
        ({"type": ""}, "type must be a non-empty string"),
        ({"type": "t" * 129}, "at most 128"),
        ({"time": "yesterday"}, "RFC 3339"),
        ({"time": "2026-13-01T00:00:00Z"}, "RFC 3339"),
        ({"Bad-Name": "x"}, "a-z and 0-9"),
        ({"offset": 3}, "realtime's to set"),
        ({"big": 2**31}, "Integer range"),
        ({"nested": {"a": 1}}, "string, an integer or a boolean"),
        ({"data": 1, "data_base64": "AA=="}, "not both"),
        ({"data_base64": "!!"}, "not base64"),
    ],
)
def test_cloudevents_that_break_the_spec_are_refused(change, detail):
    event = {"specversion": "1.0", "id": "1", "source": "/s", "type": "t", "time": "2026-12-01T10:00:00Z"}
    event.update(change)
    with pytest.raises(InvalidData, match=detail):
        cloudevents.parse_structured(json.dumps(event).encode())


def test_timestamps_are_rfc3339_utc():
    assert cloudevents.timestamp(0.5) == "1970-01-01T00:00:00.500000Z"
    assert abs(time.time() - 1) > 0


# Channel options: the model, the admin, the command ---------------------------------------


@pytest.mark.django_db
def test_realtime_channel_create_sets_the_new_options():
    from io import StringIO

    from django.core.management import CommandError, call_command

    from realtime.models import Channel

    out = StringIO()
    call_command("realtime_channel", "create", "tree", "--subchannels", "--bubble", "--cloudevents",
                 "--cloudevents-source", "urn:example:tree", stdout=out)  # fmt: skip
    assert out.getvalue().strip() == ("Created channel 'tree' (covers sub-channels, bubbling, CloudEvents).")
    tree = Channel.objects.get(name="tree")
    assert (tree.bubble, tree.cloudevents, tree.cloudevents_source) == (True, True, "urn:example:tree")
    with pytest.raises(CommandError, match="needs the CloudEvents option"):
        call_command(
            "realtime_channel", "create", "plain", "--cloudevents-source", "urn:x", stdout=StringIO()
        )
    with pytest.raises(CommandError, match="URI reference"):
        call_command("realtime_channel", "create", "spaced", "--cloudevents", "--cloudevents-source", "a b",
                     stdout=StringIO())  # fmt: skip


@pytest.mark.django_db
def test_the_admin_edits_the_new_options(admin_client):
    from django.urls import reverse

    from realtime.models import Channel
    from realtime.registry import resolve

    channel = Channel.objects.create(name="feed")
    page = admin_client.get(reverse("admin:realtime_channel_change", args=[channel.pk])).content.decode()
    for field in ("bubble", "cloudevents", "cloudevents_source"):
        assert f'name="{field}"' in page
    form = {"name": "feed", "is_active": "on", "history_size": 0, "history_ttl": 60, "bubble": "on",
            "cloudevents": "on", "cloudevents_source": "https://example.com/feed"}  # fmt: skip
    response = admin_client.post(reverse("admin:realtime_channel_change", args=[channel.pk]), form)
    assert response.status_code == 302
    info = resolve("feed")
    assert (info.bubble, info.cloudevents, info.cloudevents_source) == (
        True,
        True,
        "https://example.com/feed",
    )


# The SSE app's refusals, in process ---------------------------------------------------------


async def call_sse(method="GET", query=b"", headers=()):
    from channels.testing import ApplicationCommunicator

    from realtime.sse.stream import app

    scope = {"type": "http", "method": method, "path": "/realtime/sse", "query_string": query,
             "headers": list(headers)}  # fmt: skip
    communicator = ApplicationCommunicator(app, scope)
    await communicator.send_input({"type": "http.request", "body": b""})
    start = await communicator.receive_output(2)
    body = await communicator.receive_output(2)
    await communicator.wait(2)
    return start["status"], dict(start["headers"]), body["body"]


@pytest.mark.asyncio
async def test_the_event_stream_answers_other_methods_405_and_preflights_204(settings):
    settings.REALTIME = {"ALLOWED_ORIGINS": ["http://localhost"]}
    status, headers, body = await call_sse("POST", b"channel=news")
    assert (status, headers[b"allow"], json.loads(body)["err"]) == (405, b"GET, OPTIONS", "invalid_data")
    status, headers, _ = await call_sse("OPTIONS", headers=[(b"origin", b"http://localhost")])
    assert status == 204 and headers[b"access-control-allow-origin"] == b"http://localhost"
    assert b"Last-Event-ID" in headers[b"access-control-allow-headers"]
    status, _, body = await call_sse("OPTIONS", headers=[(b"origin", b"https://evil.example")])
    assert (status, json.loads(body)["err"]) == (403, "access_denied")


@pytest.mark.asyncio
async def test_the_event_stream_refuses_what_it_cannot_read_before_it_starts():
    status, _, body = await call_sse(query=b"")
    assert (status, json.loads(body)["err"]) == (400, "invalid_data")
    status, _, body = await call_sse(query=b"channel=a//b")
    assert (status, json.loads(body)["err"]) == (400, "invalid_channel_name")
    status, headers, body = await call_sse(query=b"channel=news", headers=[(b"authorization", b"Basic x")])
    assert (status, json.loads(body)["err"]) == (401, "invalid_credentials")
    assert headers[b"www-authenticate"] == b'Bearer realm="realtime"'
    many = b"&".join(b"channel=c%d" % n for n in range(1001))
    status, _, body = await call_sse(query=many)
    assert status == 400
