"""Server-sent events in real Chromium: EventSource itself, and the HTMX recipe.

Pages are served by ``page.route`` on the live server's origin; htmx and its SSE
extension come from npm (``tests/browser/htmx/package.json``, installed with ``npm ci``).
"""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.services import AsgiServer

pytestmark = [pytest.mark.live, pytest.mark.usefixtures("redis_layer")]

HTMX = Path(__file__).resolve().parent / "htmx"

EVENT_SOURCE_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>EventSource</title></head><body>
<script>
window.received = [];
window.notices = [];
window.errors = 0;
const source = new EventSource(%s);
const note = (list, name) => (event) =>
  list.push({name, data: JSON.parse(event.data), id: event.lastEventId});
for (const name of ["realtime:subscribed", "realtime:missed"]) {
  source.addEventListener(name, note(notices, name));
}
source.addEventListener("chat", note(received, "chat"));
source.onerror = () => { window.errors += 1; };
window.source = source;
</script>
</body></html>
"""


def open_event_source(page, server, url):
    page.route(
        f"{server.http_url}/__sse__",
        lambda route: route.fulfill(body=EVENT_SOURCE_PAGE % json.dumps(url), content_type="text/html"),
    )
    page.goto(f"{server.http_url}/__sse__")
    page.wait_for_function("notices.some((n) => n.name === 'realtime:subscribed')")


def test_an_event_source_receives_named_events_with_their_ids(
    page, servers, connect, make_key, make_channel, uid
):
    news = make_channel(f"news-{uid}", anonymous_read=True, history_size=10)
    open_event_source(page, servers[0], f"/realtime/sse?channel={news.name}")
    writer = connect(servers[1])
    writer.auth(make_key())
    acks = [writer.publish(news.name, "chat", {"n": n}) for n in range(2)]
    writer.publish(news.name, "other", "not listened for")

    page.wait_for_function("received.length === 2")
    received = page.evaluate("received")
    assert [item["data"]["data"] for item in received] == [{"n": 0}, {"n": 1}]
    assert [item["id"] for item in received] == [f"{ack['epoch']}:{ack['offset']}" for ack in acks]
    assert received[0]["data"]["channel"] == news.name and "time" in received[0]["data"]


def test_an_event_source_that_loses_its_server_recovers_exactly_what_it_missed(
    page, servers, connect, make_key, make_channel, uid, service_dir, test_database, redis_server
):
    news = make_channel(f"news-{uid}", anonymous_read=True, history_size=50)
    realtime = {"SSE_RETRY": 0.2}
    server = AsgiServer(service_dir, database=test_database, redis_url=redis_server.url, realtime=realtime)
    server.start()
    try:
        open_event_source(page, server, f"/realtime/sse?channel={news.name}")
        writer = connect(servers[1])
        writer.auth(make_key())
        writer.publish(news.name, "chat", 0)
        page.wait_for_function("received.length === 1")
        server.stop()
        page.wait_for_function("errors >= 1")
        for n in range(1, 4):
            writer.publish(news.name, "chat", n)
        again = AsgiServer(service_dir, database=test_database, redis_url=redis_server.url, realtime=realtime)
        again.port = server.port
        server = again.start()
        page.wait_for_function("received.length >= 4", timeout=20_000)
        writer.publish(news.name, "chat", 4)
        page.wait_for_function("received.length >= 5")
        page.wait_for_timeout(300)
    finally:
        server.stop()
    received = page.evaluate("received")
    assert [item["data"]["data"] for item in received] == [0, 1, 2, 3, 4]  # no gap, nothing twice
    reconnected = [n for n in page.evaluate("notices") if n["name"] == "realtime:subscribed"][-1]
    assert reconnected["data"]["recovered"] is True


# The HTMX recipe -----------------------------------------------------------------------------

HTMX_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>htmx</title>
<script src="/__htmx__/htmx.min.js"></script>
<script src="/__htmx__/sse.js"></script>
</head><body>
<div hx-ext="sse" sse-connect="/realtime/sse?channel=%s">
  <div id="message" sse-swap="chat"></div>
  <div id="fragment" hx-get="/__fragment__" hx-trigger="sse:chat"></div>
</div>
</body></html>
"""


@pytest.fixture(scope="session")
def htmx_files():
    """``npm ci`` once per run, from the lock file beside package.json."""
    if shutil.which("npm") is None:
        pytest.fail("The HTMX tests need npm (Debian: `apt-get install npm`).", pytrace=False)
    installed = HTMX / "node_modules" / ".package-lock.json"
    lock = HTMX / "package-lock.json"
    if not installed.exists() or installed.stat().st_mtime < lock.stat().st_mtime:
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=HTMX, check=True, timeout=300)
    return {
        "htmx.min.js": HTMX / "node_modules" / "htmx.org" / "dist" / "htmx.min.js",
        "sse.js": HTMX / "node_modules" / "htmx-ext-sse" / "dist" / "sse.js",
    }


def test_htmx_swaps_and_triggers_on_publications(
    page, htmx_files, servers, connect, make_key, make_channel, uid
):
    news = make_channel(f"news-{uid}", anonymous_read=True)
    origin = servers[0].http_url
    fragments = []

    def fragment(route):
        fragments.append(route.request.headers.get("hx-trigger"))
        route.fulfill(body=f"<b>fragment {len(fragments)}</b>", content_type="text/html")

    page.route(f"{origin}/__page__", lambda route: route.fulfill(body=HTMX_PAGE % news.name,
                                                                 content_type="text/html"))  # fmt: skip

    def script(route):
        body = htmx_files[route.request.url.rsplit("/", 1)[1]].read_text()
        route.fulfill(body=body, content_type="text/javascript")

    page.route(f"{origin}/__htmx__/*", script)
    page.route(f"{origin}/__fragment__", fragment)
    page.goto(f"{origin}/__page__")
    page.wait_for_function("document.querySelector('[sse-connect]')['htmx-internal-data']?.sseEventSource"
                           "?.readyState === 1")  # fmt: skip
    page.wait_for_timeout(200)  # the stream is subscribed once its first bytes arrived
    writer = connect(servers[1])
    writer.auth(make_key())

    writer.publish(news.name, "chat", {"text": "one"})
    page.wait_for_function("document.querySelector('#fragment').textContent === 'fragment 1'")
    writer.publish(news.name, "chat", {"text": "two"})
    page.wait_for_function("document.querySelector('#fragment').textContent === 'fragment 2'")

    swapped = json.loads(page.text_content("#message"))
    assert swapped["channel"] == news.name and swapped["data"] == {"text": "two"}
    assert len(fragments) == 2


# The JS client's fallback ---------------------------------------------------------------------


def test_the_client_falls_back_to_sse_and_http_publish_when_no_websocket_opens(
    client_page, servers, connect, make_key, make_channel, uid
):
    from django.contrib.auth.models import User

    from realtime import tokens

    room = make_channel(f"room-{uid}", history_size=10)
    staff = User.objects.create_user(f"ann-{uid}", is_staff=True)
    token, expires = tokens.issue_token(staff, "read-write")
    watcher = connect(servers[1])
    watcher.auth(make_key())
    watcher.subscribe(room.name)
    page = client_page(servers[0])
    # No WebSocket route here: the handshake fails, as behind a proxy that blocks WebSockets.
    page.evaluate(
        """async ([token, expires, channel]) => {
            window.client = new T.Realtime.RealtimeClient("/realtime/ws-blocked", {
                token, expires, fallback: "sse", reconnect: {minDelay: 50, maxDelay: 250},
            });
            window.log = T.record(client);
            window.transports = [];
            client.addEventListener("realtime:transport", (e) => transports.push(e.detail.transport));
            window.received = [];
            window.sub = client.subscribe(channel, (m) => received.push(m));
            await T.within(client.connect(), "connect()");
            await T.within(sub.ready, "subscription ready");
        }""",
        [token, expires, room.name],
    )
    assert page.evaluate("[client.transport, client.state, transports]") == ["sse", "connected", ["sse"]]

    watcher.publish(room.name, "chat", {"text": "to the browser"})
    page.wait_for_function("received.length === 1")
    assert page.evaluate("received[0].data") == {"text": "to the browser"}
    ack = page.evaluate(
        "(channel) => T.within(client.publish(channel, 'chat', {text: 'from the browser'}), 'publish')",
        room.name,
    )
    assert ack["ok"] is True and ack["offset"] == 2
    mine = [watcher.next_message()["message"] for _ in range(2)][-1]
    assert mine["data"] == {"text": "from the browser"}
    assert mine["user"] == {"id": staff.pk, "name": staff.username}
    refused = page.evaluate("T.outcome(client.time())")
    assert (refused["ok"], refused["code"]) == (False, "unavailable")
