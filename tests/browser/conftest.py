"""Real Chromium for the browser tests: Debian's package, driven by Playwright.

Playwright's own browser downloads are never used: the tests launch the system's
``/usr/bin/chromium`` (``REALTIME_CHROMIUM`` names another). Pages are served by
``page.route``, from the same origin as a live server, so no static files need serving:
see :func:`client_page`. A failing test leaves a screenshot and the page's console log
in ``test-artifacts/``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.services import apt_install

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
STATIC = ROOT / "realtime" / "static" / "realtime"
CLIENT_JS = STATIC / "realtime.js"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Pages fulfilled by page.route have no address of their own, so Chromium's Local
    # Network Access checks take them for public sites and block their sockets to loopback.
    "--disable-features=LocalNetworkAccessChecks",
]

# The test page: the client module, and small helpers the tests drive through page.evaluate.
TEST_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>realtime client test</title>
{head}
</head>
<body>
<script type="module">
import * as Realtime from "/static/realtime/realtime.js";

const sockets = [];

// The browser's WebSocket, wrapped: records every frame, and can go silent (drop what it
// receives) to play a connection that died without closing.
class TestSocket {{
  constructor(url) {{
    this.url = url;
    this.sent = [];
    this.received = [];
    this.silent = false;
    this.closeCode = null;
    this.real = new WebSocket(url);
    sockets.push(this);
    this.real.onopen = (event) => this.onopen?.(event);
    this.real.onmessage = (event) => {{
      this.received.push(event.data);
      if (!this.silent) this.onmessage?.(event);
    }};
    this.real.onclose = (event) => {{
      this.closeCode = event.code;
      this.onclose?.(event);
    }};
    this.real.onerror = (event) => this.onerror?.(event);
  }}
  get readyState() {{ return this.real.readyState; }}
  send(data) {{ this.sent.push(data); this.real.send(data); }}
  close(code, reason) {{ this.real.close(code, reason); }}
  frames() {{ return this.sent.map((text) => JSON.parse(text)); }}
}}

function record(client) {{
  const log = {{states: [], messages: [], notices: [], errors: []}};
  client.addEventListener("realtime:state", (event) => log.states.push(event.detail));
  client.addEventListener("realtime:message", (event) => log.messages.push(event.detail));
  client.addEventListener("realtime:notice", (event) => log.notices.push(event.detail));
  client.addEventListener("realtime:error", (event) => log.errors.push({{
    code: event.detail.error.code, detail: event.detail.error.detail,
  }}));
  return log;
}}

// `promise`, or a rejection naming `what` after `ms`: a broken client fails the test, not hangs it.
function within(promise, what, ms = 5000) {{
  let timer;
  const late = new Promise((_, reject) => {{
    timer = setTimeout(() => reject(new Error(`${{what}}: nothing after ${{ms}} ms`)), ms);
  }});
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}}

// The settled outcome of a promise, as data page.evaluate can return.
async function outcome(promise, ms = 5000) {{
  try {{
    const value = await within(promise, "outcome", ms);
    return {{ok: true, value: value instanceof Realtime.Subscription ? value.channel : value ?? null}};
  }} catch (error) {{
    return {{
      ok: false,
      name: error.name,
      code: error.code,
      closeCode: error.closeCode ?? null,
      isRealtimeError: error instanceof Realtime.RealtimeError,
    }};
  }}
}}

// How many success replies socket `index` (negative counts from the end) has received.
function replies(index) {{
  return sockets.at(index).received.filter((text) => JSON.parse(text).ok === true).length;
}}

window.T = {{Realtime, TestSocket, sockets, record, outcome, replies, within}};
</script>
{body}
</body>
</html>
"""


def chromium_binary() -> str:
    """Debian's Chromium, installing its package when missing and allowed to."""
    path = os.environ.get("REALTIME_CHROMIUM", "/usr/bin/chromium")
    if Path(path).exists():
        return path
    if apt_install("chromium") and Path(path).exists():
        return path
    pytest.fail(
        f"The browser tests need Chromium at {path}. Install it (Debian/Ubuntu: "
        "`sudo apt-get install chromium`), or point REALTIME_CHROMIUM at a Chromium binary. "
        "Playwright's own browser downloads (`playwright install`) are not used.",
        pytrace=False,
    )


@pytest.fixture(scope="package")
def browser():
    """One Chromium for every browser test.

    Package-scoped rather than session-scoped on purpose: while Playwright's sync API is
    started it keeps an event loop running in this thread, so asyncio.run(), async tests
    and async_to_sync() would fail in any test that ran after these with it still open.
    """
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(
            "The browser tests need Playwright for Python: .venv/bin/pip install -r requirements.txt",
            pytrace=False,
        )
    executable = chromium_binary()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(autouse=True)
def orm_beside_playwright(monkeypatch):
    """Let the tests' ORM calls run beside the event loop Playwright holds in this thread.

    Django refuses ORM calls from a thread with a running loop unless this is set. Server
    processes never inherit it (``tests.services.AsgiServer.start`` leaves it out).
    """
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the item, so fixtures can tell whether the test failed."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def page(browser, request):
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(10_000)
    console: list[str] = []
    page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
    page.on("pageerror", lambda error: console.append(f"pageerror: {error}"))
    yield page
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        ARTIFACTS.mkdir(exist_ok=True)
        stem = re.sub(r"[^\w.-]+", "_", request.node.nodeid)
        try:
            page.screenshot(path=str(ARTIFACTS / f"{stem}.png"), full_page=True)
        except Exception as error:  # a crashed page cannot be captured; say so instead
            console.append(f"(no screenshot: {error})")
        (ARTIFACTS / f"{stem}.console.txt").write_text("\n".join(console) + "\n")
    context.close()


@pytest.fixture
def client_page(page):
    """Open the test page on ``origin`` (default: the server's own), with extra head/body HTML.

    The page and realtime.js (read from disk on every request) are served by page.route,
    so they share the origin of the live server without it serving any static files.
    """

    def open_page(server, *, origin: str | None = None, head: str = "", body: str = ""):
        origin = origin or server.http_url
        html = TEST_PAGE.format(head=head, body=body)
        page.route(
            f"{origin}/__client_test__",
            lambda route: route.fulfill(body=html, content_type="text/html; charset=utf-8"),
        )
        page.route(
            f"{origin}/static/realtime/realtime.js",
            lambda route: route.fulfill(
                body=CLIENT_JS.read_text(), content_type="text/javascript; charset=utf-8"
            ),
        )
        page.goto(f"{origin}/__client_test__")
        page.wait_for_function("window.T !== undefined")
        return page

    return open_page


@pytest.fixture
def static_page(page):
    """Open ``html`` as a page of its own on ``server``'s origin, with no test harness.

    ``/static/realtime/*`` is served from ``realtime/static/realtime/`` on disk, as
    Django's static files would serve it.
    """

    def open_page(server, html: str):
        origin = server.http_url

        def serve_static(route):
            name = route.request.url.rsplit("/", 1)[1]
            route.fulfill(body=(STATIC / name).read_text(), content_type="text/javascript; charset=utf-8")

        page.route(
            f"{origin}/__page__",
            lambda route: route.fulfill(body=html, content_type="text/html; charset=utf-8"),
        )
        page.route(f"{origin}/static/realtime/*.js", serve_static)
        page.goto(f"{origin}/__page__")
        return page

    return open_page
