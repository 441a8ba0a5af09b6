"""realtime.js and the server's stale timeout (STALE_TIMEOUT, close code 4006), in Chromium."""

import pytest

from tests.hostile import LIMITS

pytestmark = [pytest.mark.live]


def test_a_client_closed_as_stale_waits_until_it_is_used_then_reconnects(
    client_page, hardened, make_channel, uid
):
    news = make_channel(f"news-{uid}", anonymous_read=True)
    page = client_page(hardened)
    page.evaluate(
        """async (url) => {
            const options = {WebSocket: T.TestSocket, reconnect: {minDelay: 20, maxDelay: 50}};
            window.client = new T.Realtime.RealtimeClient(url, options);
            window.log = T.record(client);
            window.received = [];
            await T.within(client.connect(), "connect()");
        }""",
        hardened.ws_url,
    )
    # Holding nothing, it is closed with 4006, and does not reconnect to be closed again.
    page.wait_for_function("T.sockets.length === 1 && client.state === 'disconnected'", timeout=10_000)
    page.wait_for_timeout(int(LIMITS["STALE_TIMEOUT"] * 2000))
    assert page.evaluate("[client.state, T.sockets.length, log.states.at(-1).code]") == [
        "disconnected",
        1,
        4006,
    ]
    # Subscribing needs the connection again: it reconnects, and the subscription works.
    page.evaluate(
        """async (channel) => {
            const subscription = client.subscribe(channel, (m) => received.push(m));
            await T.within(subscription.ready, "subscription ready");
        }""",
        news.name,
    )
    assert page.evaluate("[client.state, T.sockets.length]") == ["connected", 2]
