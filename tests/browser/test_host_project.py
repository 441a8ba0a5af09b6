"""The host-project path, as a new user takes it: the wheel `make dist` builds, installed in
a clean virtualenv; `django-admin startproject`; the README's "Add it to your project"
steps, taken from README.md as they are written; then uvicorn on a real Redis, a real
WebSocket client, a publication from another process, and a page in real Chromium.

Nothing from the checkout is importable in the project's processes: they run the
virtualenv's python with a clean environment, so they use the installed wheel.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import urllib.request
from pathlib import Path

import pytest

from realtime.testing import RealtimeClient
from tests.distribution import build_dist, install, make_venv, readme_section, run, snippet
from tests.services import free_port, stop, wait_for_port

pytestmark = [pytest.mark.live]

STEPS = readme_section("Add it to your project")
# What the test adds for itself, beyond the README: a page that renders the README's
# template at /live/ (a project has templates of its own; startproject has none).
PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>live</title><link rel="icon" href="data:,"></head>
<body>
{template}
</body>
</html>
"""
TEST_SETTINGS = (
    '\n# The test\'s own page (no README step).\nTEMPLATES[0]["DIRS"] = [BASE_DIR / "templates"]\n'
)
TEST_URLS = """
# The test's own page (no README step).
from django.views.generic import TemplateView  # noqa: E402

urlpatterns.append(path("live/", TemplateView.as_view(template_name="live.html")))
"""


class HostProject:
    def __init__(self, directory: Path, python: Path, redis_url: str) -> None:
        self.directory = directory
        self.python = python
        self.bin = python.parent
        # Only what a shell would have: no DJANGO_SETTINGS_MODULE, no PYTHONPATH to the checkout.
        self.env = {
            "PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}",
            "HOME": os.environ.get("HOME", str(directory)),
            "LANG": "C.UTF-8",
            "REDIS_URL": redis_url,
        }

    def command(self, line: str) -> list[str]:
        """A README command line, run with the virtualenv's programs."""
        words = shlex.split(line.split("  #", 1)[0])
        if words[0] == "python":
            words[0] = str(self.python)
        else:
            words[0] = str(self.bin / words[0])
        return words

    def run(self, line: str, **env) -> subprocess.CompletedProcess:
        return run(*self.command(line), cwd=self.directory, env={**self.env, **env})

    def shell(self, code: str, **env) -> subprocess.CompletedProcess:
        return run(self.python, "manage.py", "shell", "-c", code, cwd=self.directory, env={**self.env, **env})


def eventually(page, predicate, state, seconds: float = 5.0) -> None:
    """Wait for ``predicate`` while Playwright delivers the page's events (bounded)."""
    for _ in range(int(seconds * 20)):
        if predicate():
            return
        page.wait_for_timeout(50)
    raise AssertionError(f"not within {seconds}s: {state}")


def shell_lines(block: str) -> list[str]:
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


@pytest.fixture(scope="module")
def project(tmp_path_factory, redis_server):
    base = tmp_path_factory.mktemp("host")
    _, wheel = build_dist(base / "dist")

    # pip install "django-realtime-channels[...]", with the README's extras, from the wheel.
    (pip_line,) = [line for line in snippet(readme_section("Install"), "pip install").splitlines()]
    extras = re.fullmatch(r'pip install "django-realtime-channels(\[[\w,]+\])"', pip_line).group(1)
    python = make_venv(base / "venv")
    install(f"{wheel}{extras}", python)

    directory = base / "project"
    directory.mkdir()
    host = HostProject(directory, python, redis_server.url)
    run(host.bin / "django-admin", "startproject", "mysite", directory, env=host.env)
    package = directory / "mysite"

    settings = package / "settings.py"
    settings.write_text(settings.read_text() + "\n" + snippet(STEPS, "# mysite/settings.py: add at the end"))
    (package / "asgi.py").write_text(snippet(STEPS, "# mysite/asgi.py: the whole file"))
    (package / "urls.py").write_text(snippet(STEPS, "# mysite/urls.py: the whole file"))
    settings.write_text(settings.read_text() + TEST_SETTINGS)
    (package / "urls.py").write_text((package / "urls.py").read_text() + TEST_URLS)
    (directory / "templates").mkdir()
    template = snippet(STEPS, "<!-- a template -->")
    (directory / "templates" / "live.html").write_text(PAGE.format(template=template))

    outputs = [host.run(line).stdout for line in shell_lines(snippet(STEPS, "# set up"))]
    host.secret = outputs[-1].strip().splitlines()[-1]  # realtime_key create: the secret, last
    return host


@pytest.fixture(scope="module")
def served(project, tmp_path_factory):
    """The README's uvicorn line, on a free port."""
    (line,) = [line for line in shell_lines(snippet(STEPS, "# serve")) if line.startswith("uvicorn")]
    port = free_port()
    command = project.command(line)
    command[command.index("--port") + 1] = str(port)
    log = tmp_path_factory.mktemp("uvicorn") / "uvicorn.log"
    process = subprocess.Popen(
        command, cwd=project.directory, env=project.env, stdout=log.open("w"), stderr=subprocess.STDOUT
    )
    try:
        wait_for_port(port, process, log)
        yield f"127.0.0.1:{port}", log
    finally:
        stop(process)


def test_the_installed_project_passes_its_checks(project):
    result = project.run("python manage.py check --fail-level WARNING")
    assert "System check identified no issues" in result.stdout
    # The project imports the installed wheel, not the checkout.
    where = project.shell("import realtime; print(realtime.__file__)").stdout
    assert str(project.python.parent.parent) in where


def test_a_websocket_client_receives_a_publication_from_another_process(project, served):
    address, _ = served
    publish = snippet(STEPS, "# a view, a signal handler, a task")
    with RealtimeClient(f"ws://{address}/realtime/ws") as client:
        assert client.auth(project.secret)["ok"] is True
        assert client.subscribe("news")["ok"] is True
        project.shell(publish)  # manage.py shell: a process of its own, through Redis
        message = client.next_message()["message"]
    assert (message["channel"], message["event"], message["data"]) == ("news", "headline", {"title": "Hello"})
    assert message["offset"] >= 1  # --history 100: numbered and kept


def test_publishing_from_a_shell_on_the_in_memory_layer_warns_that_it_reaches_no_one(project):
    result = project.shell(snippet(STEPS, "# a view, a signal handler, a task"), REDIS_URL="")
    assert "NotDeliveredWarning" in result.stderr and "reach no one" in result.stderr
    assert result.stderr.count("reach no one") == 1


def test_a_page_with_the_tag_connects_and_receives_in_chromium(project, served, page):
    address, log = served
    console, failures, frames = [], [], {"sent": [], "received": []}
    page.on("console", lambda message: console.append((message.type, message.text)))
    page.on("response", lambda response: response.status >= 400 and failures.append(response.url))
    page.on("requestfailed", lambda request: failures.append(request.url))

    def watch(ws):
        ws.on("framesent", lambda payload: frames["sent"].append(json.loads(payload)))
        ws.on("framereceived", lambda payload: frames["received"].append(json.loads(payload)))

    page.on("websocket", watch)
    page.goto(f"http://{address}/live/")

    # connect.js came from /static/ (staticfiles_urlpatterns under uvicorn) and connected.
    page.wait_for_function("window.realtime?.state === 'connected'")

    def subscribed() -> bool:
        ids = [frame.get("id") for frame in frames["sent"] if "subscribe" in frame]
        return any(frame.get("id") in ids and frame.get("ok") for frame in frames["received"])

    eventually(page, subscribed, frames)  # the README's realtime:ready handler subscribed
    with RealtimeClient(f"ws://{address}/realtime/ws") as publisher:
        publisher.auth(project.secret)
        assert publisher.publish("news", "headline", {"title": "To the page"})["ok"] is True
    eventually(page, lambda: ("log", "news: To the page") in console, console)
    assert failures == []
    assert [text for kind, text in console if kind in ("error", "warning")] == []
    assert "Traceback" not in log.read_text()


def test_runserver_serves_the_websocket_and_the_scripts_in_development(project, tmp_path):
    (line,) = [line for line in shell_lines(snippet(STEPS, "# serve")) if "runserver" in line]
    port = free_port()
    log = tmp_path / "runserver.log"
    process = subprocess.Popen(
        [*project.command(line), f"127.0.0.1:{port}", "--noreload"],
        cwd=project.directory,
        env={**project.env, "REDIS_URL": ""},  # development: the in-memory layer
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port, process, log)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/static/realtime/connect.js", timeout=10) as got:
            assert got.status == 200 and "RealtimeClient.fromPage()" in got.read().decode()
        with RealtimeClient(f"ws://127.0.0.1:{port}/realtime/ws") as client:
            assert client.auth(project.secret)["ok"] is True
            assert client.subscribe("news")["ok"] is True
            assert client.publish("news", "headline", "from runserver")["ok"] is True
            assert client.next_message()["message"]["data"] == "from runserver"
    finally:
        stop(process)
    assert "daphne" in log.read_text().lower()  # daphne's runserver, not Django's WSGI one
