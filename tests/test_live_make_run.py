"""The `make run` path: migrate, seed_demo and daphne's runserver on a fresh SQLite file,
with the demo settings and no Redis, as a new checkout gets it."""

import os
import re
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from realtime.testing import RealtimeClient
from tests.matchers import SERVER_TIME
from tests.services import ROOT, free_port, stop, wait_for_port

pytestmark = [pytest.mark.live]


@pytest.fixture
def demo_env(tmp_path):
    # Nothing from the test run leaks in: no Redis, no test settings.
    leaks = {"REDIS_URL", "REALTIME_TEST_SETTINGS", "DJANGO_ALLOW_ASYNC_UNSAFE", "DATABASE_PATH"}
    env = {k: v for k, v in os.environ.items() if k not in leaks and not k.startswith("DJANGO_")}
    env.update(
        DJANGO_SETTINGS_MODULE="demo_site.settings",
        DATABASE_PATH=str(tmp_path / "db.sqlite3"),
        PYTHONPATH=str(ROOT),
    )
    return env


def manage(env, *args):
    result = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.fixture
def runserver(demo_env, tmp_path):
    """`make run`: migrate, seed_demo, then runserver; yields (base URL, seed_demo's output)."""
    manage(demo_env, "migrate", "--noinput")
    seeded = manage(demo_env, "seed_demo")
    port = free_port()
    log = tmp_path / "runserver.log"
    process = subprocess.Popen(
        [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
        cwd=ROOT,
        env=demo_env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port, process, log)
        yield f"127.0.0.1:{port}", seeded
    finally:
        stop(process)


def fetch(url):
    """(status, headers, body) without following redirects."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(url, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def test_make_run_serves_the_client_the_pages_and_the_websocket(runserver):
    address, seeded = runserver

    status, headers, body = fetch(f"http://{address}/static/realtime/realtime.js")
    assert status == 200 and "javascript" in headers["Content-Type"]
    assert b"export class RealtimeClient" in body
    assert fetch(f"http://{address}/")[0] == 200
    assert fetch(f"http://{address}/dashboard/")[0] == 200
    status, headers, _ = fetch(f"http://{address}/chat/")
    assert status == 302 and headers["Location"].startswith("/login/")

    secrets = dict(re.findall(r"^ +(\S+) \(.*\): (rt_\S+)$", seeded, re.MULTILINE))
    with RealtimeClient(f"ws://{address}/realtime/ws") as client:
        assert client.request("ping") == {"ok": True, "id": 1}
        assert client.auth(secrets["demo-publisher"])["ok"] is True
        assert client.subscribe("news")["ok"] is True
        assert client.publish("news", "headline", {"title": "make run works"})["ok"] is True
        assert client.next_message() == {
            "message": {
                "channel": "news",
                "event": "headline",
                "data": {"title": "make run works"},
                "time": SERVER_TIME,
            }
        }
