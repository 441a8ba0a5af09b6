"""The server API, metrics and live view in one process (in-memory layer), and their pure parts."""

from __future__ import annotations

import asyncio
import json

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.management import CommandError, call_command
from django.test import override_settings
from django.urls import reverse
from prometheus_client.parser import text_string_to_metric_families

from realtime import api, stats
from realtime.auth import Principal
from realtime.checks import check_settings
from realtime.errors import CloseCode, InvalidCredentials, InvalidData
from realtime.metrics import RealtimeCollector, address_allowed
from realtime.runtime import get_hub


def principal(access="read-write", all_channels=True, key_id=1):
    return Principal(key_id=key_id, name="k", access=access, all_channels=all_channels)


# Access ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("access", "all_channels", "key_id", "may"),
    [
        ("admin", False, 1, True),
        ("read-write", True, 1, True),
        ("read-write", False, 1, False),
        ("read-only", True, 1, False),
        ("read-write", True, None, False),  # a browser token, even a staff one
    ],
)
def test_who_may_operate(access, all_channels, key_id, may):
    assert principal(access, all_channels, key_id).can_operate is may


def test_an_admin_key_writes_and_narrows_like_a_read_write_key():
    admin = principal("admin")
    assert admin.can_write
    assert admin.limited_to("read-write").access == "read-write"
    assert admin.limited_to("read-only").access == "read-only"
    assert principal("read-write").limited_to("admin").access == "read-write"
    with pytest.raises(InvalidCredentials):
        principal("read-only").limited_to("read-write")


# Counters --------------------------------------------------------------------------


def test_the_histogram_cumulates_its_buckets():
    histogram = stats.Histogram((0.1, 1.0))
    for seconds in (0.05, 0.5, 0.7, 3.0):
        histogram.observe(seconds)
    assert histogram.cumulative() == [("0.1", 1), ("1.0", 3), ("+Inf", 4)]
    assert histogram.count == 4 and histogram.total == pytest.approx(4.25)


def test_close_codes_a_client_chooses_do_not_grow_the_labels():
    counters = stats.Counters()
    for code in (3000, 3001, 4999, None, 1000):
        counters.closed("client", code)
    counters.closed("server", 4101)
    assert counters.closes == {
        ("client", "other"): 3,
        ("client", "none"): 1,
        ("client", "1000"): 1,
        ("server", "4101"): 1,
    }


def test_the_collector_exposes_every_metric_with_its_unit_and_prefix():
    names = {family.name for family in RealtimeCollector().collect()}
    assert all(name.startswith("realtime_") for name in names)
    assert {
        "realtime_connections",
        "realtime_connections_authenticated",
        "realtime_subscriptions",
        "realtime_publications",
        "realtime_deliveries",
        "realtime_deliveries_dropped",
        "realtime_slow_consumer_closes",
        "realtime_connections_closed",
        "realtime_auth_failures",
        "realtime_rate_limited_frames",
        "realtime_redis_errors",
        "realtime_broker_outage_seconds",
        "realtime_broker_round_trip_seconds",
        "realtime_history_reads",
    } <= names


@pytest.mark.parametrize(
    ("allowed", "address", "expected"),
    [
        ([], "127.0.0.1", False),
        (["127.0.0.1"], "127.0.0.1", True),
        (["10.0.0.0/8"], "10.2.3.4", True),
        (["10.0.0.0/8"], "11.0.0.1", False),
        (["::1"], "::1", True),
        (["10.0.0.0/8"], "not an address", False),
    ],
)
def test_metrics_allowed_addresses(allowed, address, expected):
    with override_settings(REALTIME={"METRICS_ALLOWED_IPS": allowed}):
        assert address_allowed(address) is expected


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("API_TIMEOUT", 0),
        ("API_TIMEOUT", "2"),
        ("METRICS_ALLOWED_IPS", ["10.0.0.300"]),
        ("METRICS_ALLOWED_IPS", "10.0.0.1"),
    ],
)
def test_the_new_settings_are_checked(key, value):
    with override_settings(REALTIME={key: value}):
        assert "realtime.E003" in [error.id for error in check_settings(None)]


# The API in one process ------------------------------------------------------------


class FakeConnection:
    protocol = "native"

    def __init__(self, client_id, user_id=None):
        self.client_id = client_id
        self.subscriptions: set[str] = set()
        self.principal = Principal(None, "t", "read-only", True, user_id=user_id) if user_id else None
        self.frames: list[str] = []
        self.closed_with = None

    def push(self, frame):
        self.frames.append(frame)

    def drop_subscription(self, name, reason):
        self.hub.unsubscribe(self, name)
        self.frames.append(f"unsubscribed {name} {reason}")

    def disconnect(self, code, reason=""):
        self.closed_with = (code, reason)


@pytest.mark.asyncio
async def test_with_the_in_memory_layer_the_calls_act_on_this_processs_hubs():
    hub = await get_hub()
    alice, other = FakeConnection("a" * 32, user_id=7), FakeConnection("b" * 32)
    for conn in (alice, other):
        conn.hub = hub
        hub.add(conn)
        await hub.subscribe(conn, "local/room")
    try:
        info = await api.ainfo()
        (process,) = info["processes"]
        assert process["connections"] >= 2 and info["missing"] == []
        channels = await api.achannels("local/")
        assert channels["channels"] == [{"channel": "local/room", "subscribers": 2, "rate": None}]
        unsubscribed = await api.aunsubscribe("local/room", user=7)
        assert unsubscribed["unsubscribed"] == [alice.client_id]
        assert alice.frames == ["unsubscribed local/room server"] and "local/room" in other.subscriptions
        reply = await api.adisconnect(client=other.client_id, reconnect=True, reason="move")
        assert reply["disconnected"] == [other.client_id] and reply["code"] == CloseCode.DISCONNECTED
        assert other.closed_with == (CloseCode.DISCONNECTED, "move") and alice.closed_with is None
    finally:
        for conn in (alice, other):
            hub.remove(conn)


@pytest.mark.asyncio
async def test_a_hub_that_does_not_answer_in_time_is_missing():
    hub = await get_hub()
    original = hub.on_command

    async def slow(command):
        await asyncio.sleep(5)

    hub.on_command = slow
    try:
        reply = await api.ainfo(timeout=0.2)
    finally:
        hub.on_command = original
    assert reply["processes"] == [] and len(reply["missing"]) == 1


@pytest.mark.parametrize(
    ("call", "kwargs", "detail"),
    [
        (api.adisconnect, {}, "say whose connections: user, client, or both"),
        (
            api.adisconnect,
            {"client": 5},
            "client must be a client id (as presence and subscribe replies show it)",
        ),
        (api.adisconnect, {"user": 1, "reason": "x" * 124}, "reason must be at most 123 bytes of UTF-8"),
        (api.adisconnect, {"user": 1, "reconnect": "yes"}, "reconnect must be true or false"),
        (api.adisconnect, {"user": True}, "user must be a Django user or its primary key"),
        (api.ainfo, {"timeout": 61}, "timeout must be a number of seconds greater than 0, at most 60"),
        (api.achannels, {"limit": 0}, "limit must be an integer of at least 1"),
        (api.abroadcast, {"channels": "news", "event": "e"}, "channels must be a list of channel names"),
        (api.abroadcast, {"channels": [], "event": "e"}, "channels must name at least one channel"),
    ],
)
@pytest.mark.asyncio
async def test_bad_arguments_are_invalid_data(call, kwargs, detail):
    with pytest.raises(InvalidData) as raised:
        await call(**kwargs)
    assert raised.value.detail == detail


def test_the_command_refuses_the_in_memory_layer():
    with pytest.raises(CommandError, match="in-memory"):
        call_command("realtime", "info")


# The metrics endpoint and the live view, through Django's test client --------------


@pytest.mark.django_db
def test_staff_sessions_may_read_the_metrics(admin_client, client, django_user_model):
    response = admin_client.get("/realtime/metrics")
    assert response.status_code == 200
    assert {family.name for family in text_string_to_metric_families(response.content.decode())} >= {
        "realtime_connections"
    }
    django_user_model.objects.create_user("plain", password="pw")
    client.login(username="plain", password="pw")
    assert client.get("/realtime/metrics").status_code == 403
    assert client.post("/realtime/metrics").status_code == 405


@pytest.mark.django_db
def test_the_live_view_is_linked_from_the_channel_list_and_answers_staff(admin_client):
    live = reverse("admin:realtime_channel_live")
    assert live in admin_client.get(reverse("admin:realtime_channel_changelist")).content.decode()
    page = admin_client.get(live)
    assert page.status_code == 200 and b'id="rt-live"' in page.content and b"admin-live.js" in page.content
    data = admin_client.get(reverse("admin:realtime_channel_live_data")).json()
    assert data["ok"] is True and data["info"]["processes"] == [] and data["channels"]["channels"] == []
    refused = admin_client.post(
        reverse("admin:realtime_channel_live_act"), json.dumps({"action": "explode"}), "application/json"
    )
    assert refused.status_code == 400 and refused.json()["err"] == "invalid_data"
    missing = admin_client.get(reverse("admin:realtime_channel_live_presence"), {"channel": "nosuch"})
    assert missing.status_code == 404 and missing.json()["err"] == "invalid_channel"


@pytest.mark.django_db
def test_the_live_view_needs_the_channel_permissions(client):
    user = get_user_model().objects.create_user("viewer", password="pw", is_staff=True)
    client.login(username="viewer", password="pw")
    live = reverse("admin:realtime_channel_live")
    assert client.get(live).status_code == 403
    user.user_permissions.add(Permission.objects.get(codename="view_channel"))
    page = client.get(live)
    assert page.status_code == 200 and b"rt-live-disconnect-form" not in page.content
    act = client.post(reverse("admin:realtime_channel_live_act"), "{}", "application/json")
    assert act.status_code == 403
    client.logout()
    assert client.get(live).status_code == 302  # to the admin login


@pytest.mark.django_db
def test_realtime_key_creates_admin_keys():
    from io import StringIO

    from realtime.models import AccessKey

    out = StringIO()
    call_command("realtime_key", "create", "--name", "ops", "--access", "admin", "--all-channels", stdout=out)
    key = AccessKey.objects.get(name="ops")
    assert key.access == "admin"
    assert "admin on all channels" in out.getvalue()
