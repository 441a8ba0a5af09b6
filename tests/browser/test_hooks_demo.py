"""The demo's programmable parts in real Chromium: stored and moderated chat, mentions on
personal channels (docs/hooks.md). Served like ``make run`` (one process, in-memory layer),
with the demo's publish handler."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from demo_site.models import ChatMessage
from tests.browser.test_demo import DESKTOP, PHONE, log_in, serve_static
from tests.services import AsgiServer

pytestmark = [pytest.mark.live]

DEMO = {
    "TOKEN_GRANT": "demo_site.realtime_grants.grant",
    "PUBLISH_HANDLERS": {"rooms": "demo_site.chat.on_message"},
    "REVALIDATE_INTERVAL": 1,
}


@pytest.fixture(scope="module")
def demo(request, service_dir, test_database):
    server = AsgiServer(service_dir, database=test_database, realtime=DEMO).start()
    request.addfinalizer(server.stop)
    return server


@pytest.fixture
def open_page(browser, demo):
    contexts = []

    def open_(viewport=DESKTOP):
        context = browser.new_context(base_url=demo.http_url, viewport=viewport)
        context.set_default_timeout(10_000)
        context.route(re.compile(r"^https?://[^/]+/static/"), serve_static)
        contexts.append(context)
        return context.new_page()

    yield open_
    for context in contexts:
        context.close()


@pytest.fixture
def people(make_channel, django_user_model, uid):
    make_channel("rooms", include_subchannels=True)
    make_channel("users", include_subchannels=True, personal=True)
    return [
        django_user_model.objects.create_user(f"{name}{uid}", password="pw")
        for name in ("alice", "bob", "carol")
    ]


def enter(page, user, room="lobby"):
    log_in(page, user.username, "pw", f"/chat/{room}/")
    expect(page.locator("#rt-status")).to_have_attribute("data-state", "connected")
    expect(page.locator("#chat")).to_have_attribute("data-ready", "true")
    expect(page.locator("#notifications")).to_have_attribute("data-ready", "true")


def say(page, text):
    page.get_by_label("Message").fill(text)
    page.get_by_label("Message").press("Enter")


def test_a_mention_shows_on_the_mentioned_users_page(open_page, people):
    alice, bob, _ = people
    alice_page, bob_page = open_page(), open_page(PHONE)
    enter(bob_page, bob, "dev")  # in another room: the mention finds him anyway
    enter(alice_page, alice)

    say(alice_page, f"hello @{bob.username}, see this")
    expect(alice_page.get_by_label("Message")).to_have_value("")

    notice = bob_page.locator("#notifications .rt-notification")
    expect(notice).to_have_count(1)
    expect(notice).to_contain_text(f"{alice.username} mentioned you in #lobby")
    expect(notice.locator(".quote")).to_have_text(f"hello @{bob.username}, see this")
    expect(notice.get_by_role("link", name="#lobby")).to_have_attribute("href", "/chat/lobby/")
    expect(alice_page.locator("#notifications .rt-notification")).to_have_count(0)


def test_a_banned_word_is_refused_with_a_clear_error_and_reaches_no_one(open_page, people):
    alice, bob, _ = people
    alice_page, bob_page = open_page(), open_page()
    enter(alice_page, alice)
    enter(bob_page, bob)

    say(alice_page, "cheap spam here")
    error = alice_page.locator("#composer-error")
    expect(error).to_have_text("Not sent: Messages may not contain the word “spam”.")
    expect(error).to_have_attribute("data-code", "banned_word")
    expect(alice_page.get_by_label("Message")).to_have_value("cheap spam here")  # kept, to edit

    say(alice_page, "a clean one")
    expect(bob_page.locator("#messages .msg .text")).to_have_text(["a clean one"])
    expect(error).to_have_text("")


def test_opening_a_room_shows_its_last_messages_once(open_page, people):
    alice, bob, carol = people
    alice_page = open_page()
    enter(alice_page, alice)
    for text in ("first", "second"):
        say(alice_page, text)
        expect(alice_page.locator("#messages .msg .text").last).to_have_text(text)
    assert list(ChatMessage.objects.values_list("text", flat=True)) == ["first", "second"]

    carol_page = open_page(PHONE)
    enter(carol_page, carol)  # opens the lobby: what was said before is there
    expect(carol_page.locator("#messages .msg .text")).to_have_text(["first", "second"])
    expect(carol_page.locator("#messages .msg .author")).to_have_text([alice.username] * 2)

    carol_page.get_by_role("link", name="#dev").click()
    expect(carol_page.locator("#chat")).to_have_attribute("data-ready", "true")
    expect(carol_page.locator("#messages .msg")).to_have_count(0)
    say(alice_page, "third")
    carol_page.get_by_role("link", name="#lobby").click()
    expect(carol_page.locator("#chat")).to_have_attribute("data-ready", "true")
    expect(carol_page.locator("#messages .msg .text")).to_have_text(["first", "second", "third"])
    # Live messages and stored ones are told apart by id: nothing twice.
    say(carol_page, "fourth, from carol")
    expect(alice_page.locator("#messages .msg .text")).to_have_text(
        ["first", "second", "third", "fourth, from carol"]
    )
    expect(carol_page.locator("#messages .msg .text")).to_have_text(
        ["first", "second", "third", "fourth, from carol"]
    )
    expect(carol_page.locator("#messages .msg.mine")).to_have_count(1)
