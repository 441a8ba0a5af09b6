"""The admin's live view and realtime.js's handling of the server API's disconnect, in Chromium.

Two daphne processes on Redis (the ``servers`` fixture). Server API calls go over HTTP:
``async_to_sync`` cannot run beside the event loop Playwright keeps in this thread.
"""

from __future__ import annotations

import os
import re

import pytest
from django.contrib.auth import get_user_model
from playwright.sync_api import expect

from realtime import tokens
from tests.browser.test_demo import serve_static
from tests.services import ROOT
from tests.test_live_server_api import closed_with, http_call

pytestmark = [pytest.mark.live]

# REALTIME_DOCS_SCREENSHOTS=1 refreshes the screenshot docs/operations.md shows.
DOCS_SCREENSHOT = ROOT / "docs" / "images" / "admin-live.png"
SCREENSHOT = (
    DOCS_SCREENSHOT
    if os.environ.get("REALTIME_DOCS_SCREENSHOTS")
    else ROOT / "test-artifacts" / "admin-live.png"
)


@pytest.fixture
def alice(transactional_db, uid):
    return get_user_model().objects.create_user(f"alice-{uid}", password="x")


def test_the_js_client_reconnects_after_4100_and_stays_closed_after_4101(
    client_page, servers, make_key, make_channel, alice, uid
):
    admin = make_key(access="admin")
    alerts = make_channel(f"alerts-{uid}", history_size=5)
    page = client_page(servers[0])
    token = tokens.issue_token(alice, "read-only", ["*"])[0]
    page.evaluate(
        """async (token) => {
          const url = location.origin.replace("http", "ws") + "/realtime/ws";
          const reconnect = {minDelay: 100, maxDelay: 200};
          window.client = new T.Realtime.RealtimeClient(url, {token, reconnect});
          window.log = T.record(client);
          await T.within(client.connect(), "connect");
        }""",
        token,
    )
    # Subscribed by the server: the page hears of it, then gets the channel's publications.
    status, reply = http_call(
        servers[1], "subscribe", admin, "POST", {"channel": alerts.name, "user": alice.pk}
    )
    assert status == 200 and len(reply["subscribed"]) == 1
    page.wait_for_function("log.notices.some((n) => n.subscribed)")
    assert page.evaluate("log.notices.find((n) => n.subscribed).subscribed") == {
        "channel": alerts.name,
        "offset": 0,
        "epoch": page.evaluate("log.notices.find((n) => n.subscribed).subscribed.epoch"),
    }
    body = {"channel": alerts.name, "event": "alert", "data": {"level": 2}}
    status, _ = http_call(servers[1], "publish", admin, "POST", body)
    assert status == 200
    page.wait_for_function("log.messages.length === 1")
    assert page.evaluate("log.messages[0].data") == {"level": 2}
    assert page.evaluate(f"client.position({alerts.name!r}).offset") == 1

    status, reply = http_call(servers[0], "disconnect", admin, "POST", {"user": alice.pk, "reconnect": True})
    assert status == 200 and len(reply["disconnected"]) == 1
    page.wait_for_function("log.states.filter((s) => s.state === 'connected').length === 2")
    assert page.evaluate("log.states.find((s) => s.state === 'disconnected').code") == 4100

    status, reply = http_call(servers[0], "disconnect", admin, "POST", {"user": alice.pk})
    assert status == 200 and len(reply["disconnected"]) == 1
    page.wait_for_function("client.state === 'closed'")
    page.wait_for_timeout(500)  # longer than the reconnect delay: it did not come back
    assert page.evaluate("client.state") == "closed"
    assert page.evaluate("log.states.at(-1)")["code"] == 4101
    assert page.evaluate("log.states.filter((s) => s.state === 'connecting').length") == 2


def test_the_live_view_shows_processes_channels_and_presence_and_disconnects_a_client(
    browser, servers, connect, make_channel, make_key, django_user_model, uid
):
    django_user_model.objects.create_superuser(f"boss-{uid}", password="pw")
    room = make_channel(f"rooms-{uid}", presence=True)
    busy = make_channel(f"busy-{uid}", anonymous_read=True)
    key = make_key(access="read-only")
    members = [connect(server) for server in (servers[0], servers[1], servers[1])]
    client_ids = []
    for member in members:
        assert member.auth(key)["ok"]
        client_ids.append(member.subscribe(room.name)["client"])
    for server in (*servers, servers[0]):
        assert connect(server).subscribe(busy.name)["ok"]

    context = browser.new_context(base_url=servers[0].http_url, viewport={"width": 1280, "height": 1000})
    context.set_default_timeout(10_000)
    context.route(re.compile(r"^https?://[^/]+/static/"), serve_static)
    try:
        page = context.new_page()
        page.goto("/admin/login/?next=/admin/realtime/channel/")
        page.get_by_label("Username").fill(f"boss-{uid}")
        page.get_by_label("Password").fill("pw")
        page.get_by_role("button", name="Log in").click()
        page.get_by_role("link", name="Live view").click()
        expect(page).to_have_url(re.compile(r"/admin/realtime/channel/live/$"))

        for server in servers:
            expect(page.locator("#rt-live-processes tr", has_text=str(server.process.pid))).to_have_count(1)
        expect(
            page.locator(f'#rt-live-channels tr[data-channel="{busy.name}"] .rt-subscribers')
        ).to_have_text("3")
        expect(
            page.locator(f'#rt-live-channels tr[data-channel="{room.name}"] .rt-subscribers')
        ).to_have_text("3")

        page.locator(f'#rt-live-channels tr[data-channel="{room.name}"] a').click()
        expect(page.locator("#rt-live-members tr")).to_have_count(3)
        for client_id in client_ids:
            expect(page.locator(f'#rt-live-members tr[data-client="{client_id}"]')).to_have_count(1)
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=True)

        target = page.locator(f'#rt-live-members tr[data-client="{client_ids[1]}"]')
        target.get_by_role("button", name="Disconnect client").click()
        expect(page.locator("#rt-live-message")).to_have_text(re.compile(r"^Disconnected 1 connection\(s\)"))
        assert closed_with(members[1]) == 4101
        expect(page.locator("#rt-live-members tr")).to_have_count(2)

        # Unsubscribe another member from the channel with the form.
        page.locator("#rt-live-unsubscribe-channel").fill(room.name)
        page.locator("#rt-live-unsubscribe-client").fill(client_ids[2])
        page.locator("#rt-live-unsubscribe-form").get_by_role("button", name="Unsubscribe").click()
        expect(page.locator("#rt-live-message")).to_have_text(re.compile(r"^Unsubscribed 1 connection\(s\)"))
        frame = members[2].next_message()
        assert frame == {"unsubscribed": {"channel": room.name, "reason": "server"}}
        expect(page.locator("#rt-live-members tr")).to_have_count(1)
    finally:
        context.close()
