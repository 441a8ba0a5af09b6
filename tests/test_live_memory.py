"""The embedded default (`make run` without REDIS_URL): one process, no Redis."""

import pytest

from realtime.models import AccessKey
from tests.test_live_publish import http_publish

pytestmark = [pytest.mark.live]


def test_single_process_without_redis_delivers_publications(
    memory_server, connect, make_key, make_channel, uid
):
    news = make_channel(f"news-{uid}")
    reader, writer = connect(memory_server), connect(memory_server)
    reader.auth(make_key(access="read-only"))
    writer.auth(make_key())
    reader.subscribe(news.name)

    writer.publish(news.name, "ws", 1)
    status, _, _ = http_publish(memory_server, {"channel": news.name, "event": "http", "data": 2}, make_key())

    assert status == 200
    assert [reader.next_message()["message"]["data"] for _ in range(2)] == [1, 2]


def test_single_process_picks_up_revocations_made_by_other_processes(memory_server, connect, make_key):
    # This test process has no channel layer in common with the server: only the
    # periodic revalidation can tell it.
    client = connect(memory_server)
    client.auth(make_key(name="memory-revoked"))
    AccessKey.objects.filter(name="memory-revoked").update(is_active=False)
    assert client.next_message(timeout=5) == {"logout": {"reason": "key_revoked"}}


def test_single_process_logs_that_it_runs_without_a_multi_process_layer(memory_server):
    assert "no multi-process channel layer" in memory_server.log.read_text()
