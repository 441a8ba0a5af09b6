"""Publishing from the server side: the Python API, a management command, the HTTP endpoint."""

import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
from asgiref.sync import async_to_sync

import realtime
from realtime.errors import InvalidChannel, InvalidChannelName, InvalidData, MessageTooLarge
from tests.matchers import SERVER_TIME
from tests.services import ROOT

pytestmark = [pytest.mark.live, pytest.mark.usefixtures("redis_layer")]


@pytest.fixture
def news(make_channel, uid):
    return make_channel(f"news-{uid}")


@pytest.fixture
def readers(servers, connect, make_key, news):
    """One subscriber of ``news`` on each server process."""
    clients = [connect(server) for server in servers]
    for client in clients:
        client.auth(make_key(access="read-only"))
        client.subscribe(news.name)
    return clients


def test_publish_from_a_process_without_a_server_reaches_every_server_process(readers, news):
    publication = realtime.publish(news.name, "tick", {"n": 1})
    assert (publication.channel, publication.event, publication.data) == (news.name, "tick", {"n": 1})
    for reader in readers:
        assert reader.next_message() == {
            "message": {"channel": news.name, "event": "tick", "data": {"n": 1}, "time": SERVER_TIME}
        }


def test_apublish_is_the_same_for_async_code(readers, news):
    async_to_sync(realtime.apublish)(news.name, "tock", [1, 2])
    for reader in readers:
        assert reader.next_message()["message"]["data"] == [1, 2]


def test_publish_validates_its_arguments(news, settings, uid):
    with pytest.raises(InvalidChannelName):
        realtime.publish("bad name", "e", 1)
    with pytest.raises(InvalidChannel):
        realtime.publish(f"unknown-{uid}", "e", 1)
    with pytest.raises(InvalidData):
        realtime.publish(news.name, "", 1)
    with pytest.raises(InvalidData):
        realtime.publish(news.name, "e", {1, 2})
    settings.REALTIME = {"MAX_MESSAGE_SIZE": 100}
    with pytest.raises(MessageTooLarge):
        realtime.publish(news.name, "e", "x" * 100)


def test_management_command_publishes_from_its_own_process(readers, news, redis_server, test_database):
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_PATH": test_database,
        "REDIS_URL": redis_server.url,
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "realtime_publish", news.name, "cmd", '{"from": "command"}'],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    for reader in readers:
        assert reader.next_message()["message"] == {
            "channel": news.name,
            "event": "cmd",
            "data": {"from": "command"},
            "time": SERVER_TIME,
        }


def http_publish(server, body, secret=None, method="POST"):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(f"{server.http_url}/realtime/api/publish", data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if secret:
        request.add_header("Authorization", f"Bearer {secret}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read()), response.headers
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read()), error.headers


def test_http_endpoint_publishes_with_a_read_write_key(server, readers, make_key, news):
    status, body, _ = http_publish(server, {"channel": news.name, "event": "http", "data": 5}, make_key())
    assert (status, body) == (200, {"ok": True})
    for reader in readers:
        assert reader.next_message()["message"]["data"] == 5


def test_http_endpoint_success_bodies_are_compact_json_as_documented(
    server, make_key, make_channel, news, uid
):
    kept = make_channel(f"kept-{uid}", history_size=5).name
    secret = make_key()

    def raw(name):
        request = urllib.request.Request(
            f"{server.http_url}/realtime/api/publish",
            data=json.dumps({"channel": name, "event": "e", "data": None}).encode(),
            headers={"Authorization": f"Bearer {secret}"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.read()

    assert raw(news.name) == b'{"ok":true}'
    assert re.fullmatch(rb'\{"ok":true,"offset":1,"epoch":"[0-9a-f]{16}"\}', raw(kept))


def test_http_endpoint_without_a_bearer_secret_is_401(server, news):
    status, body, headers = http_publish(server, {"channel": news.name, "event": "e", "data": 1})
    assert (status, body["err"]) == (401, "invalid_credentials")
    assert headers["WWW-Authenticate"].startswith("Bearer")
    status, body, _ = http_publish(server, {"channel": news.name, "event": "e", "data": 1}, "rt_nope")
    assert (status, body["err"]) == (401, "invalid_credentials")


def test_http_endpoint_refuses_read_only_and_out_of_scope_keys(server, make_key, make_channel, news, uid):
    other = make_channel(f"other-{uid}")
    status, body, _ = http_publish(
        server, {"channel": news.name, "event": "e", "data": 1}, make_key(access="read-only")
    )
    assert (status, body["err"]) == (403, "access_denied")
    status, body, _ = http_publish(
        server, {"channel": news.name, "event": "e", "data": 1}, make_key(channels=[other])
    )
    assert (status, body["err"]) == (403, "access_denied")


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "invalid_data"),
        ([1, 2], 400, "invalid_data"),
        ({"channel": "x", "event": "e"}, 400, "invalid_data"),
        ({"channel": "bad name", "event": "e", "data": 1}, 400, "invalid_channel_name"),
        ({"channel": "unknown-channel-x", "event": "e", "data": 1}, 404, "invalid_channel"),
        ({"channel": "x", "event": "e", "data": "a" * 70_000}, 413, "message_too_large"),
    ],
)
def test_http_endpoint_errors_use_the_protocol_codes(server, make_key, body, status, code):
    got_status, got_body, _ = http_publish(server, body, make_key())
    assert (got_status, got_body["err"]) == (status, code)


def test_http_endpoint_only_accepts_post(server, make_key):
    status, body, headers = http_publish(server, b"", make_key(), method="PUT")
    assert (status, body["err"], headers["Allow"]) == (405, "invalid_data", "POST")
