"""The pure and in-process parts of docs/hooks.md: policy API and compatibility, personal
channels, token placeholders and session ends, the new frames, presence changes, webhook
secrets, the RPC registry, the signal queue, the admin, the checks."""

import asyncio
import time
from datetime import UTC

import pytest
from django.contrib.auth.models import AnonymousUser, User
from django.core.checks import run_checks
from django.core.exceptions import ValidationError
from django.db import transaction
from django.dispatch import Signal
from django.test import override_settings
from django.urls import reverse

import realtime
from realtime import events, permissions, protocol, rpc, tokens, webhook_secrets
from realtime.auth import Principal
from realtime.errors import (
    AccessDenied,
    InvalidChannelName,
    InvalidCredentials,
    InvalidData,
    MethodNotFound,
    Rejected,
)
from realtime.models import Channel, WebhookEndpoint
from realtime.permissions import AccessRequest, Policy
from realtime.registry import ChannelInfo
from realtime.stores.presence import Change, MemoryPresence

ROOMS = ChannelInfo(1, "rooms", True, False)
USERS = ChannelInfo(2, "users", True, False, personal=True)
NEWS = ChannelInfo(3, "news", False, True)


def key(access="read-write", all_channels=True, **fields):
    return Principal(key_id=1, name="k", access=access, all_channels=all_channels, **fields)


def token_for(user_id, channels=(), access="read-only"):
    return Principal(
        key_id=None,
        name="u",
        access=access,
        all_channels="*" in channels,
        channel_names=frozenset(channels) - {"*"},
        user_id=user_id,
        user_name="u",
    )


def run(coro):
    return asyncio.run(coro)


# Policies ---------------------------------------------------------------------------------


@pytest.fixture
def policy(settings):
    def use(cls):
        settings.REALTIME = {"POLICY": f"{__name__}.{cls.__name__}"}
        permissions.reset()

    yield use
    permissions.reset()


class LegacyPolicy(Policy):
    """Written for the first API: synchronous, the row as ``channel``."""

    def can_subscribe(self, principal, channel):
        return principal is not None and channel.name != "rooms"

    def can_publish(self, principal, channel):
        return channel.name == "rooms"

    def can_subscribe_pattern(self, principal, pattern, prefix):
        return pattern == "news/*"


class AllowAll(Policy):
    def may_subscribe(self, request):
        return True

    def may_publish(self, request):
        return True


class AsyncPolicy(Policy):
    async def may_subscribe(self, request):
        await asyncio.sleep(0)
        return request.channel.endswith("/open")

    async def may_publish(self, request):
        return request.principal.user_id == 7


def test_the_default_policy_decides_on_the_concrete_channel():
    request = AccessRequest(token_for(7, ["rooms/2"]), "rooms/2/typing", ROOMS)
    assert Policy().may_subscribe(request) is True
    assert Policy().may_subscribe(AccessRequest(token_for(7, ["rooms/2"]), "rooms/3", ROOMS)) is False
    assert Policy().may_subscribe(AccessRequest(None, "news", NEWS)) is True


def test_a_policy_written_for_the_old_signatures_keeps_working(policy):
    policy(LegacyPolicy)
    assert run(permissions.read_refusal(key(), "rooms/1", ROOMS)) == (
        "the project's policy does not let these credentials use 'rooms/1'"
    )
    assert run(permissions.read_refusal(key(), "news", NEWS)) is None
    assert run(permissions.write_refusal(key(), "rooms/1", ROOMS)) is None
    assert run(permissions.write_refusal(key(), "news", NEWS)) is not None
    assert run(permissions.pattern_refusal(key(), "news/*", "news", NEWS)) is None
    assert run(permissions.pattern_refusal(key(), "rooms/*", "rooms", ROOMS)) is not None


def test_an_async_policy_is_awaited(policy):
    policy(AsyncPolicy)
    owner = token_for(7, ["*"], "read-write")
    assert run(permissions.may_read(owner, "rooms/open", ROOMS)) is True
    assert run(permissions.may_read(owner, "rooms/shut", ROOMS)) is False
    assert run(permissions.write_refusal(owner, "rooms/1", ROOMS)) is None
    assert run(permissions.write_refusal(token_for(8, ["*"], "read-write"), "rooms/1", ROOMS)) == (
        "the project's policy does not let these credentials use 'rooms/1'"
    )


def test_the_fixed_rules_come_before_any_policy(policy):
    policy(AllowAll)
    assert run(permissions.read_refusal(None, "rooms/1", ROOMS)) == "authenticate first"
    assert (
        run(permissions.write_refusal(token_for(7, ["*"]), "rooms/1", ROOMS))
        == "read-only access cannot publish"
    )
    assert (
        run(permissions.read_refusal(token_for(8, ["*"]), "users/7", USERS))
        == "'users/7' is another user's personal channel"
    )


def test_personal_channels_belong_to_their_user():
    assert USERS.owner("users/7") == "7" and USERS.owner("users/7/inbox") == "7"
    assert USERS.owner("users") is None and ROOMS.owner("rooms/7") is None
    owner, other = token_for(7, ["rooms"]), token_for(8, ["*"], "read-write")
    assert run(permissions.read_refusal(owner, "users/7/inbox", USERS)) is None
    assert (
        run(permissions.read_refusal(other, "users/7", USERS))
        == "'users/7' is another user's personal channel"
    )
    assert "holds personal channels" in run(permissions.read_refusal(owner, "users", USERS))
    assert run(permissions.read_refusal(None, "users/7", USERS)) == "authenticate first"
    assert (
        run(permissions.read_refusal(key(all_channels=False, channel_ids=frozenset({2})), "users/7", USERS))
        is None
    )
    # Writing needs the scope as well as the ownership.
    assert run(permissions.write_refusal(token_for(7, ["rooms"], "read-write"), "users/7", USERS)) is not None
    assert run(permissions.write_refusal(token_for(7, ["users"], "read-write"), "users/7", USERS)) is None
    assert run(permissions.write_refusal(token_for(8, ["*"], "read-write"), "users/7", USERS)) is not None
    assert run(permissions.pattern_refusal(owner, "users/7/*", "users/7", USERS)) is None
    assert run(permissions.pattern_refusal(owner, "users/*", "users", USERS)) is not None


@pytest.mark.django_db(transaction=True)
def test_access_requests_load_the_user_once(monkeypatch):
    alice = User.objects.create_user("alice")
    request = AccessRequest(token_for(alice.pk), "rooms/1", ROOMS)
    loads = []
    load = permissions.aget_user

    async def counted(user_id):
        loads.append(user_id)
        return await load(user_id)

    monkeypatch.setattr(permissions, "aget_user", counted)

    async def twice():
        return await request.auser(), await request.auser()

    first, second = run(twice())
    assert first == second == alice and loads == [alice.pk]
    assert run(AccessRequest(None, "news", NEWS).auser()) is None


def test_personal_channels_need_covering_and_no_anonymous_readers(db):
    with pytest.raises(ValidationError, match="covers sub-channels"):
        Channel(name="users", personal=True).full_clean()
    with pytest.raises(ValidationError, match="anonymously"):
        Channel(name="users", personal=True, include_subchannels=True, anonymous_read=True).full_clean()
    Channel(name="users", personal=True, include_subchannels=True).full_clean()


# Tokens -----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_grant_placeholder_becomes_the_users_id():
    alice = User.objects.create_user("alice")
    token, _ = tokens.issue_token(alice, "read-only", ["users/{user}", "rooms"])
    assert tokens.verify_token(token).channel_names == {f"users/{alice.pk}", "rooms"}
    anonymous, _ = tokens.issue_token(AnonymousUser(), "read-only", ["users/{user}", "news"])
    assert tokens.verify_token(anonymous).channel_names == {"news"}


@pytest.mark.django_db
def test_a_token_may_say_when_its_authentication_ends(settings):
    alice = User.objects.create_user("alice")
    plain = tokens.verify_token(tokens.issue_token(alice)[0])
    assert plain.expires_at is None
    ending = tokens.verify_token(tokens.issue_token(alice, session_ttl=60)[0])
    assert abs(ending.expires_at.timestamp() - (time.time() + 60)) < 2
    assert ending.expires_at.tzinfo is UTC
    settings.REALTIME = {"TOKEN_SESSION_TTL": 30}
    by_setting = tokens.verify_token(tokens.issue_token(alice)[0])
    assert abs(by_setting.expires_at.timestamp() - (time.time() + 30)) < 2
    with pytest.raises(InvalidCredentials, match="session has ended"):
        tokens.verify_token(tokens.issue_token(alice, session_ttl=-5)[0])


def test_a_token_scope_covers_its_entries_by_name():
    principal = token_for(7, ["rooms/2"])
    assert principal.covers(ROOMS, "rooms/2") and principal.covers(ROOMS, "rooms/2/typing")
    assert not principal.covers(ROOMS, "rooms/3") and not principal.covers(ROOMS)
    assert token_for(7, ["rooms"]).covers(ROOMS)


# Frames and errors -------------------------------------------------------------------------


def test_rpc_and_refresh_frames_parse():
    assert protocol.parse_frame(
        '{"rpc": {"method": "chat/recent", "data": [1]}, "id": 3}', 1000
    ) == protocol.Rpc(3, "chat/recent", [1])
    assert protocol.parse_frame('{"rpc": {"method": "echo"}}', 1000) == protocol.Rpc(None, "echo", None)
    assert protocol.parse_frame('{"refresh": {"token": "t"}}', 1000) == protocol.Refresh(None, "t")
    for bad in (
        '{"rpc": {"method": ""}}',
        '{"rpc": {"method": "a//b"}}',
        '{"rpc": {"method": "%s"}}' % ("m" * 129),
        '{"rpc": "echo"}',
        '{"refresh": {}}',
        '{"refresh": {"token": "t", "access": "all"}}',
    ):
        with pytest.raises(InvalidData):
            protocol.parse_frame(bad, 1000)


def test_a_rejection_may_carry_a_projects_own_code():
    assert Rejected("no").code == "rejected"
    assert Rejected("no", code="banned_word").code == "banned_word"
    for bad in ("Banned", "timeout", "closed", "", "x" * 65, "a-b"):
        with pytest.raises(ValueError):
            Rejected("no", code=bad)
    assert protocol.error_frame(Rejected("no", code="banned_word").code, 1, "no") == (
        '{"err":"banned_word","detail":"no","id":1}'
    )


# Presence changes -------------------------------------------------------------------------


def test_memory_presence_says_when_a_channel_is_occupied_and_vacated():
    store = MemoryPresence()
    alice = {"id": 1, "name": "alice"}

    async def scenario():
        first = await store.add("c", "a1", alice, 30)
        second_tab = await store.add("c", "a2", alice, 30)
        other = await store.add("c", "b1", None, 30)
        gone_tab = await store.remove("c", "a2")
        gone_alice = await store.remove("c", "a1")
        last = await store.remove("c", "b1")
        return first, second_tab, other, gone_tab, gone_alice, last

    first, second_tab, other, gone_tab, gone_alice, last = run(scenario())
    assert first == Change(joined={"client": "a1", "user": alice}, occupied=True)
    assert second_tab == Change()
    assert other == Change(joined={"client": "b1", "user": None})
    assert gone_tab == Change()
    assert gone_alice == Change(left=[{"client": "a1", "user": alice}])
    assert last == Change(left=[{"client": "b1", "user": None}], vacated=True)


# Webhook secrets ------------------------------------------------------------------------------


def test_signing_secrets_are_sealed_and_survive_a_rotation_with_fallbacks(settings):
    secret = webhook_secrets.generate_secret()
    assert secret.startswith("whsec_") and len(secret) == 6 + 43
    sealed = webhook_secrets.seal(secret)
    assert secret not in sealed and webhook_secrets.unseal(sealed) == secret
    old = settings.SECRET_KEY
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = "a-new-secret-key-" * 3, [old]
    assert webhook_secrets.unseal(sealed) == secret
    settings.SECRET_KEY_FALLBACKS = []
    assert webhook_secrets.unseal(sealed) is None


def test_a_signature_is_the_hmac_of_the_body():
    import hashlib
    import hmac

    body = b'{"time_ms":1,"events":[]}'
    expected = "sha256=" + hmac.new(b"whsec_x", body, hashlib.sha256).hexdigest()
    assert webhook_secrets.signature("whsec_x", body) == expected
    assert webhook_secrets.verify("whsec_x", body, expected)
    assert not webhook_secrets.verify("whsec_x", body + b" ", expected)
    assert not webhook_secrets.verify("whsec_x", body, "")


@pytest.mark.django_db
def test_an_endpoint_keeps_its_secret_encrypted_and_lists_known_events():
    endpoint, secret = WebhookEndpoint.objects.create_endpoint(
        name="backend", url="https://example.com/hooks", events=["channel_occupied"]
    )
    assert endpoint.secret() == secret
    assert secret not in endpoint.secret_sealed and endpoint.secret_prefix == secret[:12]
    endpoint.events = ["channel_occupied", "nonsense"]
    with pytest.raises(ValidationError):
        endpoint.full_clean()


def test_the_admin_shows_a_new_endpoints_secret_once_and_regenerates_it(admin_client):
    response = admin_client.post(
        reverse("admin:realtime_webhookendpoint_add"),
        {
            "name": "backend",
            "url": "https://example.com/hooks",
            "events": ["member_added", "client_event"],
            "is_active": "on",
        },
    )
    endpoint = WebhookEndpoint.objects.get()
    content = response.content.decode()
    secret = endpoint.secret()
    assert secret in content and "will not be shown again" in content
    assert endpoint.events == ["member_added", "client_event"]
    change = admin_client.get(
        reverse("admin:realtime_webhookendpoint_change", args=[endpoint.pk])
    ).content.decode()
    assert secret not in change and endpoint.secret_prefix in change and "Regenerate secret" in change

    url = reverse("admin:realtime_webhookendpoint_regenerate", args=[endpoint.pk])
    assert "Yes, regenerate" in admin_client.get(url).content.decode()
    again = admin_client.post(url).content.decode()
    endpoint.refresh_from_db()
    assert endpoint.secret() != secret and endpoint.secret() in again


# RPC registry -----------------------------------------------------------------------------------


@pytest.fixture
def registered():
    names = []

    def add(name, func, **kwargs):
        names.append(name)
        rpc.register(name, func, **kwargs)

    yield add
    for name in names:
        rpc.unregister(name)


def test_method_names_are_checked_when_registered():
    for bad in ("", "a b", "a//b", "/a", "é"):
        with pytest.raises(ValueError):
            rpc.register(bad, lambda request: None)


def test_the_decorator_registers_and_calls_go_by_the_registry(registered):
    @rpc.method("tests.unit.double", anonymous=True)
    def double(request):
        return request.data * 2

    try:
        assert run(rpc.call("tests.unit.double", 21, None, "c")) == 42
    finally:
        rpc.unregister("tests.unit.double")
    registered("tests.unit.private", lambda request: "secret")
    with pytest.raises(AccessDenied):
        run(rpc.call("tests.unit.private", None, None, "c"))
    assert run(rpc.call("tests.unit.private", None, key(), "c")) == "secret"
    with pytest.raises(MethodNotFound):
        run(rpc.call("tests.unit.double", 1, None, "c"))


def test_bayeux_services_are_methods_and_win_over_the_code_registry(settings, registered):
    registered("echo2", lambda request: "from code", anonymous=True)
    settings.REALTIME = {"BAYEUX_SERVICES": {"/service/echo2": "demo_site.bayeux_services.echo"}}
    rpc.reset()
    result = run(rpc.call("echo2", 1, None, "c", "bayeux"))
    assert result == {"echo": 1, "user": None}
    from realtime.bayeux import services

    assert services.ServiceRequest is rpc.RpcRequest
    assert services.handler_for("/service/echo2").__name__ == "echo"


# The signal queue --------------------------------------------------------------------------------


def test_receivers_run_off_the_emitting_call_and_failures_never_reach_it(settings, caplog):
    settings.REALTIME = {"SIGNAL_TIMEOUT": 0.2}
    signal = Signal()
    seen = []

    async def slow(sender, **kwargs):
        await asyncio.sleep(5)

    def boom(sender, **kwargs):
        raise RuntimeError("receiver bug")

    async def ok(sender, n, **kwargs):
        seen.append(n)

    for receiver in (slow, boom, ok):
        signal.connect(receiver, weak=False)

    async def scenario():
        events.emit(signal, None, n=1)  # returns at once; nothing has run yet
        assert seen == []
        events.emit(signal, None, n=2)
        for _ in range(100):
            if seen == [1, 2]:
                return
            await asyncio.sleep(0.05)

    run(scenario())
    assert seen == [1, 2]
    assert "receiver bug" in caplog.text and "SIGNAL_TIMEOUT" in caplog.text


def test_a_full_signal_queue_drops_new_events_and_says_so(settings, caplog):
    settings.REALTIME = {"SIGNAL_QUEUE_SIZE": 2}
    signal = Signal()
    seen = []

    async def ok(sender, n, **kwargs):
        seen.append(n)

    signal.connect(ok, weak=False)

    async def scenario():
        for n in range(5):
            events.emit(signal, None, n=n)
        await asyncio.sleep(0.2)

    run(scenario())
    assert seen == [0, 1]
    assert "the signal queue is full" in caplog.text


# Publish on commit, checks --------------------------------------------------------------------------


def test_publish_on_commit_checks_its_arguments_at_once(transactional_db):
    with transaction.atomic():
        with pytest.raises(InvalidChannelName):
            realtime.publish("bad name", "e", 1, on_commit=True)
        with pytest.raises(InvalidData):
            realtime.publish("news", "", 1, on_commit=True)
        with pytest.raises(InvalidData):
            realtime.publish("news", "e", {1, 2}, on_commit=True)


@pytest.mark.parametrize(
    "handlers, check_id",
    [
        ({"bad name": "demo_site.chat.on_message"}, "realtime.E020"),
        ({"rooms": "demo_site.chat.nope"}, "realtime.E021"),
        ("rooms", "realtime.E020"),
    ],
)
def test_publish_handlers_are_checked(handlers, check_id):
    with override_settings(REALTIME={"PUBLISH_HANDLERS": handlers}):
        ids = [message.id for message in run_checks()]
    assert check_id in ids


def test_valid_publish_handlers_pass_the_checks():
    with override_settings(
        REALTIME={"PUBLISH_HANDLERS": {"rooms": "demo_site.chat.on_message", "*": "tests.hooks_support.wrap"}}
    ):
        assert [m.id for m in run_checks() if m.id.startswith("realtime.E")] == []


def test_the_new_settings_are_checked_like_the_others():
    with override_settings(REALTIME={"TOKEN_SESSION_TTL": 0, "WEBHOOK_BATCH_SIZE": 0, "SIGNAL_TIMEOUT": -1}):
        messages = [m.msg for m in run_checks() if m.id == "realtime.E003"]
    assert len(messages) == 3
