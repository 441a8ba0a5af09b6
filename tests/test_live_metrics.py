"""/realtime/metrics scraped from a server process of its own, checked against what the test did."""

from __future__ import annotations

import http.client
import json
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.services import AsgiServer

pytestmark = [pytest.mark.live]

SETTINGS = {"RATE_LIMIT": 1, "RATE_BURST": 3, "METRICS_ALLOWED_IPS": ["127.0.0.2/32"]}


@pytest.fixture(scope="module")
def metrics_server(request, service_dir, redis_server, test_database):
    """A fresh process, so that its counters hold only what these tests did."""
    server = AsgiServer(service_dir, database=test_database, redis_url=redis_server.url, realtime=SETTINGS)
    server.start()
    request.addfinalizer(server.stop)
    return server


def scrape(server, secret=None, source="127.0.0.1") -> tuple[int, str, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10, source_address=(source, 0))
    headers = {"Authorization": f"Bearer {secret}"} if secret else {}
    connection.request("GET", "/realtime/metrics", headers=headers)
    response = connection.getresponse()
    body = response.read().decode()
    connection.close()
    return response.status, body, dict(response.getheaders())


def samples(text: str) -> dict:
    """``{(name, (label pairs...)): value}`` of every sample."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: dict, name: str, **labels) -> float:
    return found[(name, tuple(sorted(labels.items())))]


def publish(server, secret, channel, data):
    request = urllib.request.Request(
        f"{server.http_url}/realtime/api/publish",
        data=json.dumps({"channel": channel, "event": "e", "data": data}).encode(),
        headers={"Authorization": f"Bearer {secret}"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


def test_metrics_count_what_the_test_did(metrics_server, connect, make_key, make_channel, uid):
    channel = make_channel(f"metered-{uid}", anonymous_read=True, history_size=10)
    key, admin = make_key(access="read-only"), make_key(access="admin")
    anonymous = connect(metrics_server)
    assert anonymous.subscribe(channel.name)["ok"]
    readers = [connect(metrics_server), connect(metrics_server)]
    for reader in readers:
        assert reader.auth(key)["ok"] and reader.subscribe(channel.name)["ok"]
    guesser = connect(metrics_server)
    for _ in range(2):
        assert guesser.auth("rt_" + "x" * 43)["err"] == "invalid_credentials"
    flooder = connect(metrics_server)
    replies = [flooder.request("ping") for _ in range(6)]
    assert [reply.get("err") for reply in replies].count("rate_limited") == 3
    for number in range(5):
        publish(metrics_server, admin, channel.name, number)
    for client in (anonymous, *readers):
        for _ in range(5):
            assert "message" in client.next_message()
    for _ in range(2):
        with urllib.request.urlopen(
            f"{metrics_server.http_url}/realtime/log/{channel.name}", timeout=10
        ) as got:
            assert got.status == 200
    guesser.close()
    flooder.close()
    time.sleep(1.5)  # the closes are seen, and a broker probe has come back

    status, text, headers = scrape(metrics_server, admin)
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=")
    found = samples(text)
    assert value(found, "realtime_connections", protocol="native") == 3
    assert value(found, "realtime_connections", protocol="bayeux") == 0
    assert value(found, "realtime_connections_authenticated", protocol="native") == 2
    assert value(found, "realtime_subscriptions") == 3
    assert value(found, "realtime_channels") == 1
    assert value(found, "realtime_publications_total") == 5
    assert value(found, "realtime_deliveries_total") == 15
    assert value(found, "realtime_deliveries_dropped_total") == 0
    assert value(found, "realtime_slow_consumer_closes_total") == 0
    assert value(found, "realtime_auth_failures_total", protocol="native") == 2
    assert value(found, "realtime_auth_failures_total", protocol="http") == 0
    assert value(found, "realtime_rate_limited_frames_total") == 3
    assert value(found, "realtime_connections_closed_total", initiator="client", code="1000") == 2
    assert value(found, "realtime_history_reads_total") == 2
    assert value(found, "realtime_redis_errors_total") == 0
    assert value(found, "realtime_broker_outage_seconds_total") == 0
    assert value(found, "realtime_broker_up") == 1
    probes = value(found, "realtime_broker_round_trip_seconds_count")
    assert probes >= 1 and value(found, "realtime_broker_round_trip_seconds_bucket", le="+Inf") == probes
    assert value(found, "realtime_build_info", version="0.1.0") == 1
    assert ("process_resident_memory_bytes", ()) in found


def test_metrics_need_credentials_unless_the_address_is_allowed(metrics_server, make_key):
    status, body, headers = scrape(metrics_server)
    assert status == 401 and json.loads(body)["err"] == "invalid_credentials"
    assert headers["WWW-Authenticate"] == 'Bearer realm="realtime"'
    status, body, _ = scrape(metrics_server, make_key(access="read-only"))
    assert status == 403 and json.loads(body)["err"] == "access_denied"
    status, body, _ = scrape(metrics_server, source="127.0.0.2")  # in METRICS_ALLOWED_IPS
    assert status == 200 and "realtime_connections" in body
    # Every HTTP 401 counts as an authentication failure.
    assert value(samples(body), "realtime_auth_failures_total", protocol="http") >= 1
