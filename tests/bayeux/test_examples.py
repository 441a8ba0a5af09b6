"""The client examples in docs/bayeux.md run as written against a live server."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.bayeux.conftest import HERE
from tests.bayeux.wire import bayeux_url
from tests.services import ROOT

pytestmark = [pytest.mark.live]

DOC = (ROOT / "docs" / "bayeux.md").read_text()


def example(name: str) -> tuple[str, str]:
    """The fenced block after ``<!-- example: name -->``: (language, code)."""
    found = re.search(rf"<!-- example: {name} -->\n```(\w+)\n(.*?)\n```", DOC, re.DOTALL)
    assert found, f"docs/bayeux.md has no example {name!r}"
    return found.group(1), found.group(2) + "\n"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("faye", ['received {"text":"hello from Faye"}']),
        ("cometd", ['received {"text":"hello from CometD"}', 'echo {"echo":{"ping":1},"user":null}']),
        ("aiocometd", ["received {'text': 'hello from aiocometd'}"]),
    ],
)
def test_the_documented_client_example_runs(node_clients, servers, make_channel, make_key, name, expected):
    make_channel("tour", include_subchannels=True)
    secret = make_key(name="tour", channels=[])
    language, code = example(name)
    # Beside node_modules, so that the example's imports resolve as in a project.
    script = HERE / (f"_example_{name}.mjs" if language == "js" else f"_example_{name}.py")
    script.write_text(code)
    command = ["node", str(script)] if language == "js" else [sys.executable, str(script)]
    env = {**os.environ, "REALTIME_URL": bayeux_url(servers[0]), "SECRET": secret}
    try:
        done = subprocess.run(command, cwd=HERE, env=env, capture_output=True, text=True, timeout=30)
    finally:
        script.unlink()
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == expected, done.stderr
