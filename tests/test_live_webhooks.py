"""Webhooks from real server processes to a real HTTP server that the tests start (docs/hooks.md)."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.contrib.auth.models import User

from realtime import tokens, webhook_secrets
from realtime.models import WebhookEndpoint
from tests.services import AsgiServer, free_port

pytestmark = [pytest.mark.live, pytest.mark.usefixtures("redis_layer")]

SETTINGS = {
    "REVALIDATE_INTERVAL": 1,  # how soon servers see new endpoints
    "PRESENCE_TTL": 3,
    "WEBHOOK_TIMEOUT": 1,
    "WEBHOOK_RETRY_DELAY": 0.2,
    "WEBHOOK_MAX_RETRY_DELAY": 1,
    "WEBHOOK_MAX_ATTEMPTS": 4,
}


class Receiver:
    """An HTTP server in a thread that records every POST, answering as ``plan`` says:
    each entry is a status to answer, or ("sleep", seconds) before answering 200."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.plan: list = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    step = receiver.plan.pop(0) if receiver.plan else 200
                    receiver.requests.append({"headers": dict(self.headers), "body": body, "path": self.path})
                if isinstance(step, tuple):
                    time.sleep(step[1])
                    step = 200
                self.send_response(step)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def wait_for(self, check, timeout: float = 15.0):
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                requests = list(self.requests)
            result = check(requests)
            if result or time.monotonic() > deadline:
                return result
            time.sleep(0.05)

    def events(self, channel: str | None = None) -> list[dict]:
        with self.lock:
            found = [event for request in self.requests for event in json.loads(request["body"])["events"]]
        return [event for event in found if channel is None or event["channel"] == channel]


@pytest.fixture
def receiver():
    receiver = Receiver()
    yield receiver
    receiver.close()


@pytest.fixture(scope="module")
def webhook_servers(request, service_dir, redis_server, test_database):
    started = []
    for _ in range(2):
        server = AsgiServer(
            service_dir, database=test_database, redis_url=redis_server.url, realtime=SETTINGS
        )
        request.addfinalizer(server.stop)
        started.append(server.start())
    return started


@pytest.fixture
def endpoint(transactional_db, uid):
    made = []

    def make(url, events=("channel_occupied", "channel_vacated", "member_added", "member_removed")):
        made.append(None)
        endpoint, secret = WebhookEndpoint.objects.create_endpoint(
            name=f"hook-{uid}-{len(made)}", url=url, events=list(events)
        )
        return endpoint, secret

    yield make


def servers_see_endpoints():
    # Each server reloads its endpoints once REVALIDATE_INTERVAL (1 s) has passed since it last did.
    time.sleep(1.3)


@pytest.fixture
def people(transactional_db, uid):
    return [User.objects.create_user(f"{name}-{uid}") for name in ("alice", "bob")]


def as_user(connect, server, user, channels, access="read-only"):
    client = connect(server)
    assert client.request("auth", {"token": tokens.issue_token(user, access, channels)[0]})["ok"]
    return client


def occupy_and_leave(connect, server, make_key, room):
    client = connect(server)
    client.auth(make_key(access="read-only"))
    assert client.subscribe(room)["ok"] is True
    client.close()


def test_events_are_signed_batched_and_sent_once_for_the_whole_cluster(
    webhook_servers, connect, people, make_channel, endpoint, receiver, uid
):
    room = make_channel(f"presence-{uid}", presence=True).name
    hook, secret = endpoint(receiver.url)
    servers_see_endpoints()
    alice, bob = people
    clients = [
        as_user(connect, webhook_servers[0], alice, [room]),
        as_user(connect, webhook_servers[1], alice, [room]),  # a second tab: no new member
        as_user(connect, webhook_servers[1], bob, [room]),
    ]
    for client in clients:
        assert client.subscribe(room)["ok"] is True
    for client in clients:
        client.close()

    receiver.wait_for(lambda requests: any(e["name"] == "channel_vacated" for e in receiver.events(room)))
    time.sleep(1)  # what a second process would have sent twice, it would have by now

    events = receiver.events(room)
    names = [event["name"] for event in events]
    assert names.count("channel_occupied") == 1 and names.count("channel_vacated") == 1
    assert sorted(e["user_id"] for e in events if e["name"] == "member_added") == sorted([alice.pk, bob.pk])
    assert sorted(e["user_id"] for e in events if e["name"] == "member_removed") == sorted([alice.pk, bob.pk])
    added = next(e for e in events if e["name"] == "member_added" and e["user_id"] == bob.pk)
    assert added["user"] == {"id": bob.pk, "name": bob.username} and added["client"]
    for request in receiver.requests:
        headers, body = request["headers"], request["body"]
        assert webhook_secrets.verify(secret, body, headers["X-Realtime-Signature"])
        assert not webhook_secrets.verify("whsec_another", body, headers["X-Realtime-Signature"])
        assert headers["Content-Type"] == "application/json"
        assert headers["X-Realtime-Webhook"] == hook.name
        assert headers["X-Realtime-Attempt"] == "1"
        payload = json.loads(body)
        assert set(payload) == {"time_ms", "events"} and abs(payload["time_ms"] / 1000 - time.time()) < 60
    assert len({r["headers"]["X-Realtime-Delivery"] for r in receiver.requests}) == len(receiver.requests)


def test_a_failing_endpoint_gets_the_same_signed_batch_again_with_backoff(
    webhook_servers, connect, make_key, make_channel, endpoint, receiver, uid
):
    room = make_channel(f"presence-{uid}", presence=True).name
    _, secret = endpoint(receiver.url, events=["channel_occupied"])
    receiver.plan = [500, 503, 200]
    servers_see_endpoints()

    occupy_and_leave(connect, webhook_servers[0], make_key, room)

    assert receiver.wait_for(lambda requests: len(requests) >= 3)
    time.sleep(0.5)
    requests = receiver.requests
    assert len(requests) == 3  # delivered on the third attempt, and not again
    assert len({r["body"] for r in requests}) == 1
    assert len({r["headers"]["X-Realtime-Delivery"] for r in requests}) == 1
    assert [r["headers"]["X-Realtime-Attempt"] for r in requests] == ["1", "2", "3"]
    assert all(
        webhook_secrets.verify(secret, r["body"], r["headers"]["X-Realtime-Signature"]) for r in requests
    )
    assert receiver.events(room) == [{"name": "channel_occupied", "channel": room}] * 3


def test_a_refusal_of_the_request_itself_is_not_retried(
    webhook_servers, connect, make_key, make_channel, endpoint, receiver, uid
):
    room = make_channel(f"presence-{uid}", presence=True).name
    endpoint(receiver.url, events=["channel_occupied"])
    receiver.plan = [400]
    servers_see_endpoints()
    occupy_and_leave(connect, webhook_servers[1], make_key, room)
    assert receiver.wait_for(lambda requests: requests)
    time.sleep(1.5)  # a retry would have come by now (WEBHOOK_RETRY_DELAY 0.2 s)
    assert len(receiver.requests) == 1
    assert "answered 400" in webhook_servers[1].log.read_text()


def test_a_slow_endpoint_times_out_and_is_tried_again(
    webhook_servers, connect, make_key, make_channel, endpoint, receiver, uid
):
    room = make_channel(f"presence-{uid}", presence=True).name
    endpoint(receiver.url, events=["channel_occupied"])
    receiver.plan = [("sleep", 3)]  # longer than WEBHOOK_TIMEOUT (1 s)
    servers_see_endpoints()
    occupy_and_leave(connect, webhook_servers[0], make_key, room)
    assert receiver.wait_for(lambda requests: len(requests) >= 2)
    first, second = receiver.requests[:2]
    assert first["body"] == second["body"]
    assert second["headers"]["X-Realtime-Attempt"] == "2"
    assert "TimeoutError" in webhook_servers[0].log.read_text()


def test_a_dead_endpoint_holds_up_neither_delivery_nor_the_other_endpoints(
    webhook_servers, connect, make_key, make_channel, endpoint, receiver, uid
):
    room = make_channel(f"presence-{uid}", presence=True).name
    dead, _ = endpoint(f"http://127.0.0.1:{free_port()}/nobody-listens")
    endpoint(receiver.url)
    servers_see_endpoints()

    for _ in range(3):
        occupy_and_leave(connect, webhook_servers[0], make_key, room)

    assert receiver.wait_for(lambda requests: len(receiver.events(room)) >= 12)
    names = [event["name"] for event in receiver.events(room)]
    assert names.count("channel_occupied") == 3 and names.count("channel_vacated") == 3
    log = webhook_servers[0].log
    deadline = time.monotonic() + 20
    while f"the webhook '{dead.name}' failed: ClientConnectorError" not in log.read_text():
        assert time.monotonic() < deadline, "the dead endpoint was never tried"
        time.sleep(0.1)
    while "dropped after 4 attempts" not in log.read_text():
        assert time.monotonic() < deadline, "the dead endpoint's batch was never given up"
        time.sleep(0.1)


def test_client_publications_reach_webhooks_where_their_channel_asks(
    webhook_servers, connect, people, make_channel, endpoint, receiver, uid
):
    loud = make_channel(f"loud-{uid}", include_subchannels=True, webhook_publications=True).name
    quiet = make_channel(f"quiet-{uid}").name
    endpoint(receiver.url, events=["client_event"])
    servers_see_endpoints()
    alice, _ = people
    client = as_user(connect, webhook_servers[1], alice, [loud, quiet], "read-write")
    client_id = client.subscribe(f"{loud}/1")  # (no presence: no client id in the reply)
    assert client_id["ok"] is True
    assert client.publish(quiet, "chat", {"text": "not sent"})["ok"] is True
    assert client.publish(f"{loud}/1", "chat", {"text": "sent"})["ok"] is True

    assert receiver.wait_for(lambda requests: requests)
    time.sleep(0.5)
    (event,) = receiver.events()
    assert event == {
        "name": "client_event",
        "channel": f"{loud}/1",
        "event": "chat",
        "data": {"text": "sent"},
        "user_id": alice.pk,
        "client": event["client"],
    }
    assert len(event["client"]) == 32


def test_a_full_queue_drops_the_oldest_events_and_says_so(
    request, service_dir, redis_server, test_database, connect, people, make_channel, endpoint, receiver, uid
):
    server = AsgiServer(
        service_dir,
        database=test_database,
        redis_url=redis_server.url,
        realtime={**SETTINGS, "WEBHOOK_QUEUE_SIZE": 3, "WEBHOOK_BATCH_SIZE": 1, "WEBHOOK_TIMEOUT": 5},
    ).start()
    request.addfinalizer(server.stop)
    loud = make_channel(f"loud-{uid}", webhook_publications=True).name
    endpoint(receiver.url, events=["client_event"])
    receiver.plan = [("sleep", 1.5)]  # the first POST is slow: the queue fills behind it
    servers_see_endpoints()
    alice, _ = people
    client = as_user(connect, server, alice, [loud], "read-write")
    for n in range(10):
        assert client.publish(loud, "n", n)["ok"] is True

    assert receiver.wait_for(
        lambda requests: any(json.loads(r["body"])["events"][0]["data"] == 9 for r in requests)
    )
    time.sleep(0.5)
    sent = [event["data"] for event in receiver.events()]
    assert sent[-3:] == [7, 8, 9] and len(sent) == 4  # the one in flight, and the newest 3
    assert "oldest events dropped" in server.log.read_text()
