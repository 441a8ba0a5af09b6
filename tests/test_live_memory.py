"""The embedded default (`make run` without REDIS_URL): one process, no Redis."""

import pytest

from realtime.models import AccessKey

pytestmark = [pytest.mark.live]


def test_single_process_picks_up_revocations_made_by_other_processes(memory_server, connect, make_key):
    # This test process has no channel layer in common with the server: only the
    # periodic revalidation can tell it.
    client = connect(memory_server)
    client.auth(make_key(name="memory-revoked"))
    AccessKey.objects.filter(name="memory-revoked").update(is_active=False)
    assert client.next_message(timeout=5) == {"logout": {"reason": "key_revoked"}}


def test_single_process_logs_that_it_runs_without_a_multi_process_layer(memory_server):
    assert "no multi-process channel layer" in memory_server.log.read_text()
