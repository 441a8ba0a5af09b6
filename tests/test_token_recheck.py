"""Tokens are re-checked against their user when presented: pure units over
realtime.tokens (the live path is in tests/test_live_hostile_tokens.py)."""

import time

import pytest
from django.contrib.auth.models import AnonymousUser, User

from realtime import tokens
from realtime.tokens import ACTIVE, FAILED, INACTIVE, Grant


@pytest.fixture
def staff(db):
    return User.objects.create_user("boss", is_staff=True)


class Request:
    def __init__(self, user):
        self.user = user


def granted(user) -> str:
    return tokens.token_for_request(Request(user))[0]


def state_of(principal):
    key = tokens.state_key(principal)
    return tokens.load_states([key])[key]


def test_tokens_from_the_grant_say_so_and_direct_ones_do_not(staff):
    assert tokens.verify_token(granted(staff)).from_grant is True
    assert tokens.verify_token(tokens.issue_token(staff, "read-write")[0]).from_grant is False


def test_a_granted_token_principal_says_when_its_session_ends(staff, settings):
    token, _ = tokens.token_for_request(Request(staff))
    assert tokens.verify_token(token).expires_at is None  # no TOKEN_SESSION_TTL: until it logs out
    settings.REALTIME = {"TOKEN_SESSION_TTL": 60}
    token, _ = tokens.token_for_request(Request(staff))
    principal = tokens.verify_token(token)
    assert principal.from_grant is True
    assert 55 <= principal.expires_at.timestamp() - time.time() <= 61


def test_a_staff_token_stays_read_write_while_the_user_is_staff(staff):
    principal = tokens.verify_token(granted(staff))
    assert tokens.narrowed(principal, state_of(principal)) is principal


def test_a_demoted_staff_user_s_token_becomes_read_only(staff):
    principal = tokens.verify_token(granted(staff))
    User.objects.filter(pk=staff.pk).update(is_staff=False)
    fresh = tokens.narrowed(principal, state_of(principal))
    assert (fresh.access, fresh.all_channels) == ("read-only", True)


def test_a_deactivated_or_deleted_user_s_token_is_inactive(staff):
    principal = tokens.verify_token(tokens.issue_token(staff, "read-write")[0])
    User.objects.filter(pk=staff.pk).update(is_active=False)
    assert state_of(principal) == INACTIVE
    User.objects.filter(pk=staff.pk).delete()
    assert state_of(principal) == INACTIVE


def test_a_direct_token_is_held_to_its_user_only(staff):
    principal = tokens.verify_token(tokens.issue_token(staff, "read-write")[0])
    User.objects.filter(pk=staff.pk).update(is_staff=False)
    assert state_of(principal) == ACTIVE
    assert tokens.narrowed(principal, ACTIVE) is principal
    anonymous = tokens.verify_token(tokens.issue_token(None, "read-only")[0])
    assert tokens.state_key(anonymous) is None  # nothing to re-check, no query


def test_a_grant_that_gives_nothing_now_refuses_the_token(staff):
    principal = tokens.verify_token(granted(staff))
    assert tokens.narrowed(principal, None) is None


def scoped(request):
    return Grant("read-write", ("rooms", "news"))


def test_a_grant_narrowed_to_some_channels_narrows_the_token(staff, settings):
    principal = tokens.verify_token(granted(staff))  # read-write on "*"
    settings.REALTIME = {"TOKEN_GRANT": "tests.test_token_recheck.scoped"}
    fresh = tokens.narrowed(principal, state_of(principal))
    assert (fresh.all_channels, fresh.channel_names, fresh.access) == (False, {"rooms", "news"}, "read-write")
    # Never widened: a token for "rooms" stays a token for "rooms".
    only_rooms = tokens.verify_token(tokens.issue_token(staff, "read-only", ["rooms"], from_grant=True)[0])
    assert tokens.narrowed(only_rooms, state_of(only_rooms)) is only_rooms
    elsewhere = tokens.verify_token(tokens.issue_token(staff, "read-only", ["metrics"], from_grant=True)[0])
    assert tokens.narrowed(elsewhere, state_of(elsewhere)) is None


def anonymous_news(request):
    return Grant("read-only", ("news",)) if not request.user.is_authenticated else None


def test_an_anonymous_granted_token_is_re_granted_to_an_anonymous_visitor(settings, db):
    settings.REALTIME = {"TOKEN_GRANT": "tests.test_token_recheck.anonymous_news"}
    principal = tokens.verify_token(tokens.token_for_request(Request(AnonymousUser()))[0])
    assert tokens.state_key(principal) == (None, True)
    assert tokens.narrowed(principal, state_of(principal)) is principal


def broken(request):
    return Grant("read-write") if request.session["vip"] else None


def test_a_grant_hook_that_fails_on_the_re_check_refuses_and_logs(staff, settings, caplog):
    principal = tokens.verify_token(granted(staff))
    settings.REALTIME = {"TOKEN_GRANT": "tests.test_token_recheck.broken"}
    assert state_of(principal) == FAILED
    assert tokens.narrowed(principal, FAILED) is None
    assert "TOKEN_GRANT failed re-checking a token" in caplog.text
