"""Signed browser tokens: issued by Django code, verified by the server, bound to a user."""

import time

import pytest
from django.contrib.auth.models import AnonymousUser, User
from django.core import signing
from django.test import RequestFactory

from realtime import tokens
from realtime.errors import InvalidChannelName, InvalidCredentials


@pytest.fixture
def alice(db):
    return User.objects.create_user("alice", password="x")


def test_token_for_a_user_verifies_to_a_principal_bound_to_that_user(alice):
    token, expires = tokens.issue_token(alice, "read-write", ["rooms"])
    principal = tokens.verify_token(token)
    assert principal.is_token and principal.key_id is None
    assert (principal.user_id, principal.user_name, principal.access) == (alice.pk, "alice", "read-write")
    assert principal.user == {"id": alice.pk, "name": "alice"}
    assert principal.channel_names == {"rooms"} and not principal.all_channels
    assert abs(expires - (time.time() + 300)) < 5


def test_anonymous_token_carries_no_user():
    token, _ = tokens.issue_token(AnonymousUser(), channels=["news"])
    principal = tokens.verify_token(token)
    assert principal.user is None
    assert principal.access == "read-only"


def test_star_grants_every_channel(alice):
    principal = tokens.verify_token(tokens.issue_token(alice)[0])
    assert principal.all_channels and principal.channel_names == frozenset()


def test_expired_token_is_invalid_credentials(alice):
    token, _ = tokens.issue_token(alice, ttl=-1)
    with pytest.raises(InvalidCredentials, match="expired"):
        tokens.verify_token(token)


def test_tampered_token_is_invalid_credentials(alice):
    token, _ = tokens.issue_token(alice, "read-only")
    forged = signing.dumps(
        {"u": alice.pk, "n": "alice", "a": "read-write", "c": ["*"], "x": 2**40}, salt="other"
    )
    for bad in [token[:-2] + ("AA" if token[-2:] != "AA" else "BB"), forged, "garbage", ""]:
        with pytest.raises(InvalidCredentials):
            tokens.verify_token(bad)


def test_signed_payload_of_the_wrong_shape_is_invalid_credentials():
    token = signing.dumps({"u": 1}, salt=tokens.SALT, compress=True)
    with pytest.raises(InvalidCredentials):
        tokens.verify_token(token)


def test_token_signed_with_a_previous_secret_key_still_verifies(alice, settings):
    token, _ = tokens.issue_token(alice)
    settings.SECRET_KEY_FALLBACKS = [settings.SECRET_KEY]
    settings.SECRET_KEY = "a-brand-new-secret-key-for-this-test-0123456789abcdef"
    assert tokens.verify_token(token).user_id == alice.pk


def test_issuing_refuses_bad_access_and_bad_channel_names(alice):
    with pytest.raises(ValueError):
        tokens.issue_token(alice, "admin")
    with pytest.raises(InvalidChannelName):
        tokens.issue_token(alice, channels=["bad name"])


def request_for(user):
    request = RequestFactory().get("/")
    request.user = user
    return request


def test_default_grant_lets_staff_publish_users_read_and_anonymous_nothing(alice):
    staff = User.objects.create_user("boss", is_staff=True)
    assert tokens.default_grant(request_for(staff)) == tokens.Grant("read-write")
    assert tokens.default_grant(request_for(alice)) == tokens.Grant("read-only")
    assert tokens.default_grant(request_for(AnonymousUser())) is None


def grant_rooms(request):
    return tokens.Grant("read-write", ("rooms",))


def test_grant_hook_is_replaceable(alice, settings):
    settings.REALTIME = {"TOKEN_GRANT": "tests.test_tokens.grant_rooms"}
    token, _ = tokens.token_for_request(request_for(alice))
    principal = tokens.verify_token(token)
    assert (principal.access, principal.channel_names) == ("read-write", {"rooms"})


def test_token_endpoint_gives_logged_in_users_a_fresh_token_and_refuses_anonymous(client, alice):
    response = client.get("/realtime/token")
    assert (response.status_code, response.json()) == (403, {"err": "access_denied"})
    client.force_login(alice)
    response = client.get("/realtime/token")
    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    assert tokens.verify_token(response.json()["token"]).user_id == alice.pk
    assert client.post("/realtime/token").status_code == 405
