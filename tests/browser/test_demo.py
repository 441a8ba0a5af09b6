"""The demo site in real Chromium: chat between users, the live dashboard, keys made in the admin.

The pages are served by a daphne process shaped like ``make run`` (one process, the
in-memory layer, the demo's token grant). daphne serves no static files, so each browser
context answers ``/static/...`` itself from the staticfiles finders (see ``serve_static``).
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import unquote, urlsplit

import pytest
from django.conf import settings
from django.contrib.staticfiles import finders
from django.core.management import CommandError, call_command
from playwright.sync_api import expect

from tests.matchers import SERVER_TIME
from tests.services import ROOT, AsgiServer

pytestmark = [pytest.mark.live]

ARTIFACTS = ROOT / "test-artifacts"
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 800}
DEMO_REALTIME = {"TOKEN_GRANT": "demo_site.realtime_grants.grant", "REVALIDATE_INTERVAL": 1}


@pytest.fixture(scope="module")
def demo_server(request, service_dir, test_database):
    """The demo as ``make run`` serves it: one process, in-memory layer."""
    server = AsgiServer(service_dir, database=test_database, realtime=DEMO_REALTIME).start()
    request.addfinalizer(server.stop)
    return server


@pytest.fixture
def demo_channel(make_channel, make_key, demo_server, connect):
    """Create a channel, and wait until the demo server no longer answers from its cache that it is missing.

    The server caches "no such channel" for ``REVALIDATE_INTERVAL`` (here 1 s), and pages
    of earlier tests, or the metrics thread, may have asked just before.
    """
    watcher = None

    def make(name, **fields):
        nonlocal watcher
        channel = make_channel(name, **fields)
        if watcher is None:
            watcher = connect(demo_server)
            watcher.auth(make_key(name="demo-channel-watcher", access="read-only"))
        assert subscribe_once_seen(watcher, name)["ok"]
        return channel

    return make


def subscribe_once_seen(client, name: str) -> dict:
    """Subscribe, retrying while the server still answers from a stale cache that the channel is missing.

    An anonymous client is told access_denied for a missing channel, so it can only wait for
    channels with anonymous read.
    """
    deadline = time.monotonic() + 5
    while (reply := client.subscribe(name)).get("err") in ("invalid_channel", "access_denied"):
        assert time.monotonic() < deadline, f"the server never let us subscribe to {name}: {reply}"
        time.sleep(0.1)
    return reply


def serve_static(route) -> None:
    """Answer a /static/ request from the app's static directories, as runserver would."""
    name = unquote(urlsplit(route.request.url).path).removeprefix("/" + settings.STATIC_URL.lstrip("/"))
    found = finders.find(name)
    if found is None:
        route.fulfill(status=404, body=f"no static file {name}")
    else:
        route.fulfill(path=found)


@pytest.fixture
def open_page(request, browser, demo_server):
    """Open pages in fresh browser contexts (separate cookies: separate users) on the demo.

    Screenshots of every page go to test-artifacts/ when the test fails.
    """
    contexts = []

    def open_(viewport=DESKTOP):
        context = browser.new_context(base_url=demo_server.http_url, viewport=viewport)
        context.set_default_timeout(10_000)
        context.route(re.compile(r"^https?://[^/]+/static/"), serve_static)
        contexts.append(context)
        return context.new_page()

    yield open_
    report = getattr(request.node, "report_call", None)  # kept by tests/browser/conftest.py
    if report is not None and report.failed:
        ARTIFACTS.mkdir(exist_ok=True)
        stem = re.sub(r"[^\w.-]+", "_", request.node.nodeid)
        for number, context in enumerate(contexts):
            for page in context.pages:
                page.screenshot(path=ARTIFACTS / f"{stem}-{number}.png", full_page=True)
    for context in contexts:
        context.close()


def log_in(page, username: str, password: str, next_url: str) -> None:
    page.goto(f"/login/?next={next_url}")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"**{next_url}")


def expect_connected(page) -> None:
    expect(page.locator("#rt-status")).to_have_attribute("data-state", "connected")
    expect(page.locator("#rt-status")).to_have_text("Live")


def join_room(page, username: str, room: str) -> None:
    log_in(page, username, "pw", f"/chat/{room}/")
    expect_connected(page)
    expect(page.locator("#chat")).to_have_attribute("data-ready", "true")


def say(page, text: str) -> None:
    page.get_by_label("Message").fill(text)
    page.get_by_label("Message").press("Enter")
    expect(page.get_by_label("Message")).to_have_value("")


def messages(page):
    return page.locator("#messages .msg")


def test_users_chat_in_a_room_and_other_rooms_hear_nothing(open_page, demo_channel, django_user_model):
    demo_channel("rooms", include_subchannels=True)
    for name in ("alice", "bob", "carol"):
        django_user_model.objects.create_user(name, password="pw")
    alice, bob, carol = open_page(), open_page(), open_page(PHONE)
    join_room(alice, "alice", "lobby")
    join_room(bob, "bob", "lobby")
    join_room(carol, "carol", "dev")

    say(alice, "Hello from alice <b>!</b>")
    expect(messages(bob)).to_have_count(1)
    expect(messages(bob).locator(".author")).to_have_text("alice")
    expect(messages(bob).locator(".text")).to_have_text("Hello from alice <b>!</b>")
    expect(messages(alice)).to_have_count(1)
    expect(messages(alice).first).to_have_class(re.compile(r"\bmine\b"))

    say(bob, "Hi alice, bob here")
    expect(messages(alice).nth(1).locator(".author")).to_have_text("bob")
    expect(messages(alice).nth(1).locator(".text")).to_have_text("Hi alice, bob here")
    expect(messages(bob).nth(1)).to_have_class(re.compile(r"\bmine\b"))

    # Both publications reached every lobby subscriber; none went to #dev.
    carol.wait_for_timeout(300)
    expect(messages(carol)).to_have_count(0)
    expect(carol.locator("#messages .empty")).to_be_visible()

    carol.get_by_role("link", name="#lobby").click()
    expect(carol).to_have_url(re.compile(r"/chat/lobby/$"))
    expect(carol.locator("#chat")).to_have_attribute("data-ready", "true")
    say(alice, "Welcome, carol")
    expect(messages(carol).locator(".author")).to_have_text("alice")
    expect(messages(carol).locator(".text")).to_have_text("Welcome, carol")
    expect(messages(bob)).to_have_count(3)


def test_chat_needs_a_login_and_logging_out_leaves_it(open_page, transactional_db, django_user_model):
    django_user_model.objects.create_user("dora", password="pw")
    page = open_page()
    page.goto("/chat/")
    expect(page).to_have_url(re.compile(r"/login/\?next=/chat/$"))
    log_in(page, "dora", "pw", "/chat/")
    expect(page.locator("#room-name")).to_have_text("lobby")

    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/$"))
    expect(page.get_by_role("link", name="Log in")).to_be_visible()


def test_demo_grant_gives_each_kind_of_user_its_token(rf, django_user_model):
    from django.contrib.auth.models import AnonymousUser

    from demo_site.realtime_grants import grant
    from realtime.tokens import Grant

    request = rf.get("/")
    request.user = AnonymousUser()
    assert grant(request) == Grant("read-only", ("metrics", "news"))
    request.user = django_user_model(username="u")
    assert grant(request) == Grant("read-write", ("rooms",))
    request.user = django_user_model(username="s", is_staff=True)
    assert grant(request) == Grant("read-write", ("*",))


def test_anonymous_visitors_token_reads_the_public_feeds_only(demo_server, connect, demo_channel):
    demo_channel("news", anonymous_read=True)
    demo_channel("rooms", include_subchannels=True)
    with urllib.request.urlopen(f"{demo_server.http_url}/realtime/token", timeout=10) as response:
        token = json.load(response)["token"]
    client = connect(demo_server)

    assert client.request("auth", {"token": token})["ok"]
    reply = client.subscribe("news")
    assert reply.get("ok"), reply
    assert client.publish("news", "headline", None)["err"] == "access_denied"
    assert client.subscribe("rooms/lobby")["err"] == "access_denied"


def test_dashboard_draws_metrics_published_by_the_server(open_page, demo_channel):
    demo_channel("metrics", anonymous_read=True)
    page = open_page()
    page.goto("/dashboard/")  # starts the server's publisher thread, if it is not running yet
    expect_connected(page)

    expect(page.locator("#chart")).to_have_attribute(
        "data-samples", re.compile(r"^[3-9]|\d\d"), timeout=15_000
    )
    cpu = float(page.locator("#cpu-value").text_content())
    memory = float(page.locator("#memory-value").text_content())
    assert 0 <= cpu <= 100 and 0 < memory <= 100
    expect(page.locator("#chart .waiting")).to_be_hidden()
    # Something was drawn: the plot has pixels in the colour of the CPU line.
    drawn = page.evaluate(
        """() => {
        const canvas = document.getElementById("chart-canvas");
        const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
        let count = 0;
        for (let i = 0; i < pixels.length; i += 4) {
          if (pixels[i] === 0x3d && pixels[i + 1] === 0x5a && pixels[i + 2] === 0xfe) count++;
        }
        return count;
    }"""
    )
    assert drawn > 20


def test_demo_metrics_command_publishes_through_redis(server, redis_layer, connect, make_channel):
    make_channel("metrics", anonymous_read=True)
    watcher = connect(server)
    assert subscribe_once_seen(watcher, "metrics")["ok"]

    # In a thread of its own: this one may hold Playwright's event loop, and publish() is sync.
    with ThreadPoolExecutor(1) as executor:
        executor.submit(call_command, "demo_metrics", count=2, interval=0.1).result(timeout=30)

    samples = [watcher.next_message()["message"] for _ in range(2)]
    assert {(s["channel"], s["event"]) for s in samples} == {("metrics", "sample")}
    assert all(set(s["data"]) == {"t", "cpu", "memory"} for s in samples)


def test_demo_metrics_command_refuses_the_in_memory_layer():
    with pytest.raises(CommandError, match="REDIS_URL"):
        call_command("demo_metrics", count=1)


def test_admin_creates_a_channel_and_a_key_that_works(
    open_page, django_user_model, make_channel, connect, demo_server, uid
):
    django_user_model.objects.create_superuser("boss", password="pw")
    other = make_channel(f"other-{uid}")
    name = f"alerts-{uid}"
    page = open_page()
    page.goto("/admin/login/?next=/admin/")
    page.get_by_label("Username").fill("boss")
    page.get_by_label("Password").fill("pw")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("link", name="Access keys")).to_be_visible()

    page.goto("/admin/realtime/channel/add/")
    page.locator("#id_name").fill(name)
    page.locator("#id_anonymous_read").check()
    page.locator("input[name=_save]").click()
    expect(page.locator(".messagelist")).to_contain_text(name)

    page.goto("/admin/realtime/accesskey/add/")
    page.locator("#id_name").fill(f"alerts publisher {uid}")
    page.locator("#id_access").select_option("read-write")
    page.locator("#id_channels_from").select_option(label=name)
    page.locator("#id_channels_add").click()
    page.locator("input[name=_save]").click()
    secret = page.locator("input.rt-secret").input_value()
    assert secret.startswith("rt_")
    expect(page.get_by_text("it will not be shown again")).to_be_visible()

    listener, publisher = connect(demo_server), connect(demo_server)
    assert listener.subscribe(name)["ok"]
    assert publisher.auth(secret)["ok"]
    assert publisher.publish(name, "alert", {"level": "high"})["ok"]
    assert listener.next_message() == {
        "message": {"channel": name, "event": "alert", "data": {"level": "high"}, "time": SERVER_TIME}
    }
    assert publisher.publish(other.name, "alert", None)["err"] == "access_denied"

    page.locator("a.button", has_text="I have copied it").click()
    expect(page.locator("input.rt-secret")).to_have_count(0)


@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["phone", "desktop"])
def test_pages_fit_the_screen(open_page, demo_channel, make_key, django_user_model, demo_server, viewport):
    demo_channel("rooms", include_subchannels=True)
    demo_channel("metrics", anonymous_read=True)
    demo_channel("news", anonymous_read=True)
    for name in ("demo", "alice"):
        django_user_model.objects.create_user(name, password="pw")
    page = open_page(viewport)
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: message.type == "error" and errors.append(message.text))
    shots = ARTIFACTS / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    size = "phone" if viewport is PHONE else "desktop"

    def check(label: str) -> None:
        expect_connected(page)
        overflow = page.evaluate(
            """() => Math.max(
                document.documentElement.scrollWidth - window.innerWidth,
                ...[...document.querySelectorAll("nav")].map((nav) => nav.scrollWidth - nav.clientWidth),
            )"""
        )
        assert overflow <= 0, f"{label} scrolls sideways by {overflow}px at {viewport['width']}px"
        assert errors == []
        page.screenshot(path=shots / f"{label}-{size}.png", full_page=True)

    page.goto("/")
    expect_connected(page)
    expect(page.locator("#news")).to_have_attribute("data-ready", "true")
    assert http_publish(demo_server, make_key(), "news", "headline", {"text": "Release 0.1 is out"}) == 200
    expect(page.locator("#news li").first).to_contain_text("headline Release 0.1 is out")
    check("home")

    page.goto("/dashboard/")
    expect(page.locator("#chart")).to_have_attribute(
        "data-samples", re.compile(r"^[6-9]|\d\d"), timeout=15_000
    )
    check("dashboard")

    page.goto("/login/?next=/chat/lobby/")
    check("login")

    log_in(page, "demo", "pw", "/chat/lobby/")
    expect(page.locator("#chat")).to_have_attribute("data-ready", "true")
    other = open_page(viewport)
    join_room(other, "alice", "lobby")
    say(other, "Hi! Anyone around?")
    say(page, "Hello alice. This is how a message looks in the demo chat.")
    say(other, "A longer one, to show how text wraps when it does not fit on one line of the room.")
    expect(messages(page)).to_have_count(3)
    check("chat")


def http_publish(server, secret: str, channel: str, event: str, data) -> int:
    body = json.dumps({"channel": channel, "event": event, "data": data}).encode()
    request = urllib.request.Request(
        f"{server.http_url}/realtime/api/publish", data=body, headers={"Authorization": f"Bearer {secret}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status


def _admin(open_page, django_user_model):
    django_user_model.objects.create_superuser("layout", password="pw")
    page = open_page(DESKTOP)
    page.goto("/admin/login/?next=/admin/")
    page.get_by_label("Username").fill("layout")
    page.get_by_label("Password").fill("pw")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("link", name="Access keys")).to_be_visible()
    return page


OVERFLOW = """() => ({
  page: document.documentElement.scrollWidth - document.documentElement.clientWidth,
  table: (() => { const t = document.querySelector('#changelist .results');
                  return t ? t.scrollWidth - t.clientWidth : null; })(),
})"""


# Long names, scopes and descriptions: the change lists fit the window, beside the
# admin's navigation and filter sidebars, without a horizontal scroll bar.
@pytest.mark.parametrize("model", ["channel", "accesskey"])
def test_admin_change_lists_fit_1280_pixels(open_page, django_user_model, make_channel, make_key, model, uid):
    long = "A channel for every announcement the operations team makes, " * 4
    channels = [
        make_channel(
            f"operations/announcements-{uid}-{n}",
            description=long,
            include_subchannels=True,
            history_size=1000,
            presence=True,
        )
        for n in range(4)
    ]
    from django.utils import timezone

    from realtime.models import AccessKey

    later = timezone.now() + timezone.timedelta(days=30)
    make_key(name=f"the publisher of the operations announcements {uid}", channels=channels, expires_at=later)
    make_key(name=f"everything {uid}", all_channels=True)
    AccessKey.objects.update(last_used_at=timezone.now())  # dates are the widest cells
    page = _admin(open_page, django_user_model)
    page.goto(f"/admin/realtime/{model}/")
    assert page.evaluate(OVERFLOW) == {"page": 0, "table": 0}
