"""realtime on a page as a Django developer writes one: the template tag's output and
classic (non-module) inline scripts, in real Chromium against a live daphne process."""

import pytest
from django.contrib.auth.models import AnonymousUser, User
from django.template import Context, Template
from django.test import RequestFactory

from tests.matchers import SERVER_TIME

pytestmark = [pytest.mark.live]


PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
{head}
</head>
<body>
{body}
</body>
</html>
"""


def page_html(head: str, body: str) -> str:
    return PAGE.format(head=head, body=body)


def rendered(template: str, server, user, settings) -> str:
    """``template`` rendered by Django for a request on ``server``'s host, as ``user``."""
    settings.ALLOWED_HOSTS = ["127.0.0.1"]
    request = RequestFactory().get("/", headers={"host": f"127.0.0.1:{server.port}"})
    request.user = user
    return Template(template).render(Context({"request": request}))


@pytest.fixture
def user(transactional_db, uid):
    return User.objects.create_user(f"reader-{uid}")


def test_two_lines_in_a_template_give_the_page_a_connected_client(
    static_page, server, connect, make_key, make_channel, user, settings, uid
):
    room = make_channel(f"room-{uid}")
    tag = rendered("{% load realtime %}\n{% realtime connect=True %}", server, user, settings)
    # The page's own code: a classic inline script, no import.
    script = f"""<script>
  window.ready = [];
  window.received = [];
  document.addEventListener("realtime:ready", (event) => {{
    ready.push([event.detail.client === window.realtime, event.detail.client.state]);
    event.detail.client.subscribe("{room.name}", (message) => received.push(message)).ready
      .then(() => {{ window.subscribed = true; }});
  }});
</script>"""
    page = static_page(server, page_html(tag, script))

    page.wait_for_function("window.subscribed === true")
    assert page.evaluate("ready") == [[True, "connected"]]
    assert page.evaluate("[realtime.state, realtime.authenticated, realtime.url]") == [
        "connected",
        True,  # with the token the tag put in the page
        server.ws_url,
    ]
    publisher = connect(server)
    publisher.auth(make_key())
    publisher.publish(room.name, "chat", {"text": "hi"})
    page.wait_for_function("received.length === 1")
    assert page.evaluate("received") == [
        {"channel": room.name, "event": "chat", "data": {"text": "hi"}, "time": SERVER_TIME}
    ]


def test_a_classic_inline_script_uses_window_realtime_once_the_document_is_parsed(
    static_page, server, connect, make_key, make_channel, user, settings, uid
):
    news = make_channel(f"news-{uid}", anonymous_read=True)
    tag = rendered("{% load realtime %}\n{% realtime %}", server, user, settings)
    script = f"""<script>
  // Module scripts run after the document is parsed: not yet here, but before DOMContentLoaded.
  window.whileParsing = typeof window.Realtime;
  window.received = [];
  document.addEventListener("DOMContentLoaded", () => {{
    const client = Realtime.RealtimeClient.fromPage();
    client.subscribe("{news.name}", (message) => received.push(message));
    client.connect().then(() => {{ window.client = client; }});
  }});
</script>"""
    page = static_page(server, page_html(tag, script))

    page.wait_for_function("window.client?.state === 'connected'")
    assert page.evaluate("whileParsing") == "undefined"
    assert page.evaluate("window.realtime") is None  # no client of its own without connect=True
    publisher = connect(server)
    publisher.auth(make_key())
    publisher.publish(news.name, "headline", "from Python")
    page.wait_for_function("received.length === 1")
    assert page.evaluate("received[0].data") == "from Python"


def test_an_anonymous_page_connects_at_once_without_asking_for_a_token(
    static_page, page, server, connect, make_key, make_channel, settings, uid
):
    # The default grant gives anonymous visitors no token: the page must not ask for one
    # (a refused token request is a 403 in the console on every page load).
    news = make_channel(f"news-{uid}", anonymous_read=True)
    tag = rendered("{% load realtime %}\n{% realtime connect=True %}", server, AnonymousUser(), settings)
    console, requests = [], []
    page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
    page.on("request", lambda request: requests.append(request.url))
    script = f"""<script>
  window.received = [];
  document.addEventListener("realtime:ready", (event) => {{
    event.detail.client.subscribe("{news.name}", (message) => received.push(message.data)).ready
      .then(() => {{ window.subscribed = true; }});
  }});
</script>"""
    page = static_page(server, page_html(tag, script))

    page.wait_for_function("window.subscribed === true")
    assert page.evaluate("[realtime.state, realtime.authenticated]") == ["connected", False]
    publisher = connect(server)
    publisher.auth(make_key())
    publisher.publish(news.name, "headline", "for everyone")
    page.wait_for_function("received.length === 1")
    assert page.evaluate("received") == ["for everyone"]
    assert [url for url in requests if "/realtime/token" in url] == []
    assert [line for line in console if line.startswith(("error", "warning"))] == []
