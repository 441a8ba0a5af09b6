"""Signed tokens are re-checked against their user when presented, on every path (the
socket, the HTTP event log, the Bayeux handshake), and a grant that shrinks reaches
live connections within REVALIDATE_INTERVAL. The servers use the default TOKEN_GRANT:
staff read-write everywhere, other logged-in users read-only."""

import json
import time

import pytest
from django.contrib.auth.models import User

from realtime import tokens
from tests.hostile import LIMITS, client, fresh_address, http_request

pytestmark = [pytest.mark.live, pytest.mark.usefixtures("redis_layer")]


class Request:
    def __init__(self, user):
        self.user = user


def token_for(user) -> str:
    """A token as the token endpoint and the template tag give it (through TOKEN_GRANT)."""
    return tokens.token_for_request(Request(user))[0]


@pytest.fixture
def opened(hardened):
    clients = []

    def open_client():
        conn = client(hardened, fresh_address())
        clients.append(conn)
        return conn

    yield open_client
    for conn in clients:
        conn.close()


def eventually(check, timeout: float = LIMITS["REVALIDATE_INTERVAL"] * 5):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.1)


def handshake(server, token):
    message = [{"channel": "/meta/handshake", "version": "1.0", "ext": {"auth": {"token": token}}}]
    _, _, [reply] = http_request(server, "POST", "/realtime/bayeux", json.dumps(message).encode())
    return reply


def test_a_deactivated_user_s_token_stops_working_everywhere(
    hardened, opened, transactional_db, make_channel, uid
):
    news = make_channel(f"news-{uid}", history_size=10)
    user = User.objects.create_user(f"leaver-{uid}", is_staff=True)
    token = token_for(user)
    live = opened()
    assert live.request("auth", {"token": token})["ok"] is True
    assert handshake(hardened, token)["successful"] is True

    User.objects.filter(pk=user.pk).update(is_active=False)  # no signal: revalidation finds it

    assert eventually(lambda: live.next_message(timeout=1)) == {"logout": {"reason": "user_inactive"}}
    assert live.request("auth", {"token": token})["err"] == "invalid_credentials"
    assert opened().request("auth", {"token": token})["err"] == "invalid_credentials"
    status, _, body = http_request(
        hardened, "GET", f"/realtime/log/{news.name}", headers={"Authorization": f"Bearer {token}"}
    )
    assert (status, body["err"]) == (401, "invalid_credentials")
    assert handshake(hardened, token)["error"] == "403:invalid_credentials:handshake_denied"


def test_a_token_of_a_user_deactivated_a_moment_ago_is_refused_at_once(
    hardened, opened, transactional_db, uid
):
    user = User.objects.create_user(f"gone-{uid}")
    token = token_for(user)
    User.objects.filter(pk=user.pk).update(is_active=False)
    assert opened().request("auth", {"token": token})["err"] == "invalid_credentials"


def test_a_demoted_staff_user_loses_read_write_on_live_and_new_connections(
    hardened, opened, transactional_db, make_channel, uid
):
    room = make_channel(f"room-{uid}")
    user = User.objects.create_user(f"boss-{uid}", is_staff=True)
    token = token_for(user)
    live = opened()
    assert live.request("auth", {"token": token})["ok"] is True
    assert live.subscribe(room.name)["ok"] is True
    assert live.publish(room.name, "e", "while staff")["ok"] is True

    User.objects.filter(pk=user.pk).update(is_staff=False)

    assert eventually(lambda: live.publish(room.name, "e", "after").get("err") == "access_denied")
    # Still a reader: the grant gives logged-in users read-only on every channel.
    assert live.request("ping")["ok"] is True
    assert room.name in {m["message"]["channel"] for m in live.pending if "message" in m}
    fresh = opened()
    assert fresh.request("auth", {"token": token})["ok"] is True
    assert fresh.publish(room.name, "e", "new connection")["err"] == "access_denied"
    assert fresh.subscribe(room.name)["ok"] is True


def test_a_token_made_with_issue_token_is_held_to_its_user_only(
    hardened, opened, transactional_db, make_channel, uid
):
    room = make_channel(f"direct-{uid}")
    user = User.objects.create_user(f"writer-{uid}")  # no staff: the grant would say read-only
    direct, _ = tokens.issue_token(user, "read-write", [room.name])
    conn = opened()
    assert conn.request("auth", {"token": direct})["ok"] is True
    assert conn.publish(room.name, "e", 1)["ok"] is True
