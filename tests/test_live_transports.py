"""CloudEvents, bubbling and the clock, against real server processes and Redis."""

import json
import time
import urllib.error
import urllib.request

import pytest
from cloudevents.core.bindings.http import HTTPMessage, from_structured, to_binary, to_structured
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from django.contrib.auth.models import User
from django.core.management import call_command

from realtime import tokens
from realtime.models import Channel
from tests.bayeux.wire import LongPolling
from tests.sse_client import EventStream

pytestmark = [pytest.mark.live, pytest.mark.usefixtures("redis_layer")]


def post(server, body: bytes, headers: dict, query: str = ""):
    request = urllib.request.Request(
        f"{server.http_url}/realtime/api/publish{query}", data=body, headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def parse(message: dict) -> CloudEvent:
    return from_structured(HTTPMessage({}, json.dumps(message).encode()), JSONFormat())


# The clock -------------------------------------------------------------------------------


def test_the_time_command_answers_the_servers_clock(servers, connect):
    client = connect(servers[0])
    before = time.time()
    reply = client.request("time")
    assert set(reply) == {"ok", "id", "time"} and isinstance(reply["time"], float)
    assert before - 1 < reply["time"] < time.time() + 1


def test_every_publication_carries_the_time_it_was_accepted_everywhere(
    servers, connect, make_key, make_channel, uid
):
    news = make_channel(f"news-{uid}", anonymous_read=True, history_size=5)
    socket_reader = connect(servers[0])
    socket_reader.subscribe(news.name)
    stream = EventStream(servers[1], [news.name])
    stream.next()
    bayeux = LongPolling(servers[1])
    bayeux.handshake(None)
    bayeux.subscribe(f"/{news.name}")
    writer = connect(servers[1])
    writer.auth(make_key())
    before = time.time()
    writer.publish(news.name, "e", 1)
    after = time.time()
    try:
        native = socket_reader.next_message()["message"]
        assert before - 0.01 <= native["time"] <= after + 0.01
        assert stream.next().json["time"] == native["time"]
        delivered = [m for m in bayeux.connect() if m.get("channel") == f"/{news.name}"]
        assert delivered[0]["ext"]["realtime"]["time"] == native["time"]
        with urllib.request.urlopen(f"{servers[0].http_url}/realtime/log/{news.name}", timeout=5) as response:
            logged = json.loads(response.read())["publications"]
        assert logged[0]["time"] == native["time"]
    finally:
        stream.close()


# Bubbling --------------------------------------------------------------------------------


def test_a_bubbling_channel_receives_its_sub_channels_once_across_processes(
    servers, connect, make_key, make_channel, uid
):
    tree = make_channel(f"tree-{uid}", include_subchannels=True, anonymous_read=True, bubble=True)
    flat = make_channel(f"flat-{uid}", include_subchannels=True, anonymous_read=True)
    parent = connect(servers[0])
    assert parent.subscribe(tree.name)["bubble"] is True
    both = connect(servers[0])
    both.subscribe(tree.name)
    both.subscribe(f"{tree.name}/**")
    middle = connect(servers[1])
    middle.subscribe(f"{tree.name}/a")  # covered by the bubbling row: bubbles too
    plain = connect(servers[0])
    assert "bubble" not in plain.subscribe(flat.name)
    writer = connect(servers[1])
    writer.auth(make_key())
    stream = EventStream(servers[1], [tree.name])
    stream.next()

    writer.publish(f"{tree.name}/a/b", "deep", 1)
    writer.publish(f"{flat.name}/x", "flat", 2)
    writer.publish(tree.name, "top", 3)
    try:
        for client in (parent, both):
            first, second = client.next_message(), client.next_message()
            assert first["message"]["channel"] == f"{tree.name}/a/b" and first["message"]["data"] == 1
            assert second["message"]["channel"] == tree.name
        assert middle.next_message()["message"]["channel"] == f"{tree.name}/a/b"
        assert [event.json["channel"] for event in stream.publications(2)] == [f"{tree.name}/a/b", tree.name]
        for client in (parent, both, middle, plain):
            with pytest.raises(TimeoutError):
                client.next_message(timeout=0.5)
    finally:
        stream.close()


def test_a_bubbling_parents_log_keeps_only_its_own_publications(
    servers, connect, make_key, make_channel, uid
):
    tree = make_channel(
        f"tree-{uid}", include_subchannels=True, anonymous_read=True, bubble=True, history_size=9
    )
    writer = connect(servers[0])
    writer.auth(make_key())
    writer.publish(f"{tree.name}/a", "e", 1)
    writer.publish(tree.name, "e", 2)
    with urllib.request.urlopen(f"{servers[0].http_url}/realtime/log/{tree.name}", timeout=5) as response:
        log = json.loads(response.read())
    assert [(p["channel"], p["data"], p["offset"]) for p in log["publications"]] == [(tree.name, 2, 1)]


# CloudEvents -----------------------------------------------------------------------------


@pytest.fixture
def events_channel(make_channel, uid):
    return make_channel(f"ce-{uid}", include_subchannels=True, anonymous_read=True, history_size=9,
                        cloudevents=True)  # fmt: skip


def test_a_cloudevents_channel_delivers_cloudevents_the_sdk_parses(
    servers, connect, make_key, events_channel, uid
):
    name = f"{events_channel.name}/7"
    reader = connect(servers[0])
    reader.subscribe(name)
    stream = EventStream(servers[0], [name])
    stream.next()
    staff = User.objects.create_user(f"ann-{uid}", is_staff=True)
    token, _ = tokens.issue_token(staff, "read-write")
    writer = connect(servers[1])
    writer.request("auth", {"token": token})
    writer.publish(name, "chat", {"text": "hi"})
    writer.publish(name, "chat", {"text": "again"})
    try:
        messages = [reader.next_message()["message"] for _ in range(2)]
        first, second = (parse(message) for message in messages)
        assert first.get_specversion() == "1.0" and first.get_type() == "chat"
        assert first.get_source() == f"/realtime/sse?channel={name}"
        assert first.get_datacontenttype() == "application/json"
        assert first.get_data() == {"text": "hi"}
        assert abs(first.get_time().timestamp() - time.time()) < 5
        assert first.get_extension("channel") == name and first.get_extension("offset") == 1
        assert first.get_extension("userid") == staff.pk and first.get_extension("username") == staff.username
        assert first.get_id() != second.get_id()
        assert parse(stream.next().json).get_id() == first.get_id()
    finally:
        stream.close()


def test_the_source_is_the_channels_own_when_configured(servers, connect, make_key, make_channel, uid):
    call_command("realtime_channel", "create", f"src-{uid}", "--anonymous-read", "--cloudevents",
                 "--cloudevents-source", "https://example.com/feeds/src")  # fmt: skip
    reader = connect(servers[0])
    reader.subscribe(f"src-{uid}")
    writer = connect(servers[1])
    writer.auth(make_key())
    writer.publish(f"src-{uid}", "e", None)
    assert parse(reader.next_message()["message"]).get_source() == "https://example.com/feeds/src"


@pytest.mark.parametrize("mode", ["structured", "binary"])
def test_the_publish_endpoint_takes_what_the_sdk_produces(servers, connect, make_key, events_channel, mode):
    name = f"{events_channel.name}/9"
    reader = connect(servers[0])
    reader.subscribe(name)
    event = CloudEvent(
        {
            "type": "com.example.order",
            "source": "https://shop.example/orders",
            "subject": "42",
            "region": "eu",
            "datacontenttype": "application/json",
        },
        {"total": 12},
    )
    message = (to_structured if mode == "structured" else to_binary)(event, JSONFormat())
    headers = {**message.headers, "Authorization": f"Bearer {make_key()}"}
    status, reply = post(servers[1], message.body, headers, f"?channel={name}")
    assert (status, reply["ok"], reply["offset"]) == (200, True, 1)
    delivered = parse(reader.next_message()["message"])
    assert (delivered.get_id(), delivered.get_source(), delivered.get_type()) == (
        event.get_id(), "https://shop.example/orders", "com.example.order",
    )  # fmt: skip
    assert delivered.get_subject() == "42" and delivered.get_extension("region") == "eu"
    assert delivered.get_data() == {"total": 12} and delivered.get_time() == event.get_time()
    assert delivered.get_extension("channel") == name and delivered.get_extension("offset") == 1


def test_the_publish_endpoint_refuses_cloudevents_that_break_the_spec(
    servers, make_key, events_channel, make_channel, uid
):  # noqa: E501
    key = make_key()
    structured = {"Authorization": f"Bearer {key}", "Content-Type": "application/cloudevents+json"}
    good = {"specversion": "1.0", "id": "1", "source": "/s", "type": "t", "channel": events_channel.name}
    for broken, detail in [
        ({**good, "id": None}, "id attribute"),
        ({**good, "specversion": "0.3"}, "specversion"),
        ({k: v for k, v in good.items() if k != "channel"}, "name the channel"),
    ]:
        status, reply = post(servers[0], json.dumps(broken).encode(), structured)
        assert (status, reply["err"]) == (400, "invalid_data") and detail in reply["detail"]
    plain = make_channel(f"plain-{uid}", anonymous_read=True)
    status, reply = post(servers[0], json.dumps({**good, "channel": plain.name}).encode(), structured)
    assert (status, reply["err"]) == (400, "invalid_data") and "CloudEvents option" in reply["detail"]
    batch = {**structured, "Content-Type": "application/cloudevents-batch+json"}
    assert post(servers[0], b"[]", batch)[0] == 400
    binary = {"Authorization": f"Bearer {key}", "ce-specversion": "1.0", "ce-id": "1", "ce-type": "t",
              "Content-Type": "application/json"}  # fmt: skip
    status, reply = post(servers[0], b"{}", binary, f"?channel={events_channel.name}")
    assert (status, reply["err"]) == (400, "invalid_data") and "source" in reply["detail"]
    assert Channel.objects.get(pk=events_channel.pk).cloudevents is True
