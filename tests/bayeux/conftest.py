"""Real Bayeux client libraries for the tests: npm ``faye`` and ``cometd`` (driven
through driver.mjs), and PyPI ``aiocometd-noloop`` (in the virtualenv)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.bayeux.driver import BayeuxDriver

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="session")
def node_clients():
    """``npm ci`` once per run, from the lock file beside driver.mjs."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail(
            "The Bayeux client tests need Node.js 20+ and npm (Debian: `apt-get install nodejs npm`).",
            pytrace=False,
        )
    installed = HERE / "node_modules" / ".package-lock.json"
    lock = HERE / "package-lock.json"
    if not installed.exists() or installed.stat().st_mtime < lock.stat().st_mtime:
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=HERE, check=True, timeout=300)
    return HERE


@pytest.fixture
def driver(node_clients):
    """Start real client libraries; every driver is closed when the test ends."""
    started = []

    def start(library: str) -> BayeuxDriver:
        started.append(BayeuxDriver(library))
        return started[-1]

    yield start
    for one in started:
        one.close()
