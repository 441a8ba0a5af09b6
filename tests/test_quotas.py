"""Per-address and per-process accounting (realtime.quotas) and where addresses come from
(realtime.addresses): pure units, with settings overridden."""

import time

import pytest

from realtime import quotas as quotas_module
from realtime.addresses import client_address
from realtime.errors import CloseCode, TooManyAuthFailures, TooManySubscriptions
from realtime.quotas import Quotas


def scope(client="192.0.2.1", forwarded=None):
    headers = [(b"x-forwarded-for", value.encode()) for value in ([forwarded] if forwarded else [])]
    return {"type": "websocket", "client": (client, 50000) if client else None, "headers": headers}


@pytest.fixture
def limits(settings):
    def set_limits(**values):
        settings.REALTIME = values

    return set_limits


# Addresses ---------------------------------------------------------------------------


def test_the_peer_is_the_address_and_a_forwarded_header_from_it_is_ignored(limits):
    limits()
    assert client_address(scope("192.0.2.1", forwarded="203.0.113.9")) == "192.0.2.1"


def test_a_trusted_proxy_s_forwarded_header_names_the_client(limits):
    limits(TRUSTED_PROXIES=["10.0.0.0/8"])
    assert client_address(scope("10.0.0.2", forwarded="203.0.113.9")) == "203.0.113.9"
    # The client may send the header itself: only what trusted proxies appended counts.
    assert client_address(scope("10.0.0.2", forwarded="6.6.6.6, 203.0.113.9, 10.1.1.1")) == "203.0.113.9"
    # A peer that is no trusted proxy is the client, whatever it says.
    assert client_address(scope("198.51.100.7", forwarded="203.0.113.9")) == "198.51.100.7"


def test_a_trusted_proxy_without_the_header_is_the_client_itself(limits):
    limits(TRUSTED_PROXIES=["127.0.0.1"])
    assert client_address(scope("127.0.0.1")) == "127.0.0.1"


def test_behind_a_unix_socket_a_trusted_proxy_setting_reads_the_header(limits):
    limits(TRUSTED_PROXIES=["127.0.0.1"])
    assert client_address(scope(None, forwarded="203.0.113.9")) == "203.0.113.9"
    limits()
    assert client_address(scope(None, forwarded="203.0.113.9")) is None


def test_ipv6_clients_are_counted_by_their_64_network_and_mapped_ipv4_as_ipv4(limits):
    limits()
    assert client_address(scope("2001:db8:1:2:aaaa::1")) == "2001:db8:1:2::/64"
    assert client_address(scope("2001:db8:1:2:bbbb::9")) == "2001:db8:1:2::/64"
    assert client_address(scope("::ffff:192.0.2.5")) == "192.0.2.5"


# Connections -------------------------------------------------------------------------


def test_connections_per_process_and_per_address_are_capped_and_released(limits):
    limits(MAX_CONNECTIONS=3, MAX_CONNECTIONS_PER_ADDRESS=2)
    quotas = Quotas()
    assert quotas.admit("a") is None and quotas.admit("a") is None
    assert quotas.admit("a") == CloseCode.TOO_MANY_CONNECTIONS_FROM_ADDRESS
    assert quotas.admit("b") is None
    assert quotas.admit("c") == CloseCode.TOO_MANY_CONNECTIONS
    quotas.release("a")
    assert quotas.admit("c") is None
    for address in ("a", "b", "c"):
        quotas.release(address)
    assert quotas.connections == 0 and quotas._connections == {}


def test_a_private_address_at_its_limit_with_no_trusted_proxy_is_pointed_out_once(limits, caplog):
    limits(MAX_CONNECTIONS_PER_ADDRESS=1)
    quotas = Quotas()
    quotas.admit("127.0.0.1")
    for _ in range(3):
        assert quotas.admit("127.0.0.1") == CloseCode.TOO_MANY_CONNECTIONS_FROM_ADDRESS
    assert caplog.text.count("list it in REALTIME['TRUSTED_PROXIES']") == 1
    quotas.admit("1.1.1.1")
    quotas.admit("1.1.1.1")  # a public address is a client, not a proxy
    assert "1.1.1.1" not in caplog.text


def test_no_limit_is_none_and_unknown_addresses_count_only_towards_the_process(limits):
    limits(MAX_CONNECTIONS=None, MAX_CONNECTIONS_PER_ADDRESS=None)
    quotas = Quotas()
    for _ in range(50):
        assert quotas.admit("a") is None
    limits(MAX_CONNECTIONS=51, MAX_CONNECTIONS_PER_ADDRESS=1)
    assert quotas.admit(None) is None
    assert quotas.admit(None) == CloseCode.TOO_MANY_CONNECTIONS


# Subscriptions and sessions ----------------------------------------------------------


class Member:
    def __init__(self, *names):
        self.subscriptions = set(names)


def test_subscriptions_are_counted_across_an_address_s_connections(limits):
    limits(MAX_SUBSCRIPTIONS_PER_ADDRESS=3)
    quotas = Quotas()
    one, two, elsewhere = Member("x", "y"), Member("z"), Member("p", "q", "r")
    quotas.add_subscriber(one, "a")
    quotas.add_subscriber(two, "a")
    quotas.add_subscriber(elsewhere, "b")
    with pytest.raises(TooManySubscriptions):
        quotas.check_subscription("a")
    two.subscriptions.clear()
    quotas.check_subscription("a")
    quotas.remove_subscriber(one, "a")
    quotas.remove_subscriber(two, "a")
    assert "a" not in quotas._subscribers


def test_bayeux_sessions_per_address(limits):
    limits(MAX_BAYEUX_SESSIONS_PER_ADDRESS=2)
    quotas = Quotas()
    assert quotas.add_session("a") and quotas.add_session("a")
    assert not quotas.add_session("a")
    assert quotas.add_session("b")
    quotas.remove_session("a")
    assert quotas.add_session("a")


# Failed authentications --------------------------------------------------------------


def test_an_address_that_used_up_its_failures_is_refused_then_let_back_gradually(limits, monkeypatch):
    limits(AUTH_FAILURES_PER_ADDRESS=3, AUTH_FAILURE_WINDOW=30)
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    quotas = Quotas()
    for _ in range(3):
        quotas.begin_auth("a")  # and the credentials turn out wrong
    with pytest.raises(TooManyAuthFailures) as refused:
        quotas.begin_auth("a")
    assert refused.value.retry_after == pytest.approx(10)
    quotas.begin_auth("b")  # another address is not affected
    now[0] += 10  # a third of the window gives one attempt back
    quotas.begin_auth("a")
    with pytest.raises(TooManyAuthFailures):
        quotas.begin_auth("a")


def test_attempts_in_flight_count_until_they_succeed(limits):
    limits(AUTH_FAILURES_PER_ADDRESS=2, AUTH_FAILURE_WINDOW=60)
    quotas = Quotas()
    quotas.begin_auth("a")
    quotas.begin_auth("a")
    with pytest.raises(TooManyAuthFailures):
        quotas.begin_auth("a")  # two checks still running: a third must wait
    quotas.auth_succeeded("a")
    quotas.begin_auth("a")
    quotas.auth_succeeded("a")
    quotas.auth_succeeded("a")
    assert "a" not in quotas._failures  # a full allowance is not remembered


def test_good_credentials_cost_nothing(limits):
    limits(AUTH_FAILURES_PER_ADDRESS=1, AUTH_FAILURE_WINDOW=60)
    quotas = Quotas()
    for _ in range(100):
        quotas.begin_auth("a")
        quotas.auth_succeeded("a")
    assert quotas._failures == {}


def test_the_failure_table_is_bounded_however_many_addresses_fail(limits, monkeypatch):
    limits(AUTH_FAILURES_PER_ADDRESS=5, AUTH_FAILURE_WINDOW=60)
    monkeypatch.setattr(quotas_module, "MAX_TRACKED_ADDRESSES", 100)
    quotas = Quotas()
    for n in range(1000):
        quotas.begin_auth(f"10.0.{n // 256}.{n % 256}")
    assert len(quotas._failures) <= 100
    # The newest are kept: they are the ones still failing.
    assert "10.0.3.231" in quotas._failures


def test_none_turns_the_failure_limit_off(limits):
    limits(AUTH_FAILURES_PER_ADDRESS=None)
    quotas = Quotas()
    for _ in range(100):
        quotas.begin_auth("a")
    assert quotas._failures == {}


# Anonymous topics --------------------------------------------------------------------


class FakeHub:
    def __init__(self):
        self.topics = {}

    def listen(self, key):
        self.topics[key] = {key}

    def unlisten(self, key):
        del self.topics[key]


def test_anonymous_clients_may_make_a_hub_listen_to_a_bounded_number_of_topics(limits):
    limits(MAX_ANONYMOUS_TOPICS=2)
    quotas, hub = Quotas(), FakeHub()
    for key in ("a", "b"):
        assert quotas.reserve_anonymous_topic(hub, key) is True
        hub.listen(key)
        quotas.anonymous_subscribed(hub, key)
    with pytest.raises(TooManySubscriptions):
        quotas.reserve_anonymous_topic(hub, "c")
    # Topics the hub listens to already cost nothing more.
    assert quotas.reserve_anonymous_topic(hub, "a") is False
    # Once the hub stops listening to one, there is room again.
    hub.unlisten("a")
    assert quotas.reserve_anonymous_topic(hub, "c") is True


def test_a_failed_anonymous_subscribe_gives_its_reservation_back(limits):
    limits(MAX_ANONYMOUS_TOPICS=1)
    quotas, hub = Quotas(), FakeHub()
    assert quotas.reserve_anonymous_topic(hub, "a")
    quotas.anonymous_subscribed(hub, "a")  # the hub never listened (Redis was down)
    assert quotas.reserve_anonymous_topic(hub, "b")


def test_concurrent_anonymous_subscribes_cannot_overshoot_the_bound(limits):
    limits(MAX_ANONYMOUS_TOPICS=2)
    quotas, hub = Quotas(), FakeHub()
    assert quotas.reserve_anonymous_topic(hub, "a") and quotas.reserve_anonymous_topic(hub, "b")
    with pytest.raises(TooManySubscriptions):
        quotas.reserve_anonymous_topic(hub, "c")
