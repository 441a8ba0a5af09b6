"""The distribution as a user gets it: the sdist and wheel that `make dist` builds, a
clean virtualenv with the wheel installed, and the README's steps for a host project.

Runtime dependencies are installed from a wheelhouse kept beside the suite's virtualenv
(``<venv>/wheelhouse``), filled from the package index on first use only, so that the
host-project test installs offline and fast after the first run.
"""

from __future__ import annotations

import re
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
REQUIREMENTS = ROOT / "requirements.txt"
WHEELHOUSE = Path(sys.prefix) / "wheelhouse"


def run(*args, **kwargs) -> subprocess.CompletedProcess:
    """Run a command; fail with its output if it fails."""
    kwargs.setdefault("timeout", 300)
    result = subprocess.run([str(arg) for arg in args], capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, args))} exited with {result.returncode}:\n{result.stdout}\n{result.stderr}"
        )
    return result


def build_dist(outdir: Path) -> tuple[Path, Path]:
    """`make dist` into ``outdir``: the sdist, and the wheel built from it. Returns both."""
    run(sys.executable, "-m", "build", "--no-isolation", "--outdir", outdir, ROOT, cwd=ROOT)
    (sdist,) = outdir.glob("*.tar.gz")
    (wheel,) = outdir.glob("*.whl")
    return sdist, wheel


def readme_section(title: str) -> str:
    text = README.read_text()
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", text, re.MULTILINE | re.DOTALL)
    assert match, f"README.md has no section {title!r}"
    return match.group(1)


def code_blocks(section: str) -> list[tuple[str, str]]:
    """(language, code) of each fenced block in ``section``."""
    return re.findall(r"^```(\w*)\n(.*?)^```", section, re.MULTILINE | re.DOTALL)


def snippet(section: str, first_line: str) -> str:
    """The code block of ``section`` whose first line starts with ``first_line``."""
    found = [code for _, code in code_blocks(section) if code.startswith(first_line)]
    assert len(found) == 1, f"README.md: expected one block starting {first_line!r}, found {len(found)}"
    return found[0]


def pip(*args, python: Path) -> subprocess.CompletedProcess:
    """The suite's pip, installing into the environment of ``python`` (a fresh venv has none)."""
    return run(sys.executable, "-m", "pip", "--python", python, *args, "--disable-pip-version-check")


def make_venv(path: Path) -> Path:
    """A clean virtualenv, without pip (the suite's pip installs into it); its python."""
    venv.EnvBuilder(with_pip=False, clear=True).create(path)
    return path / "bin" / "python"


def install(requirement: str, python: Path) -> None:
    """Install ``requirement`` into ``python``'s environment, with requirements.txt's pins
    as constraints, from the wheelhouse (filled from the index when something is missing).

    ``--no-compile``: byte-compiling Django, Twisted and the rest up front takes most of an
    install's time; the project's processes compile what they import instead."""
    WHEELHOUSE.mkdir(exist_ok=True)
    offline = ["--no-index", "--find-links", WHEELHOUSE, "-c", REQUIREMENTS, "--only-binary", ":all:"]
    try:
        pip("install", "--quiet", "--no-compile", *offline, requirement, python=python)
    except AssertionError:
        # The wheelhouse holds third-party wheels only: pip download would take a copy of
        # this project's wheel built earlier (same version) for the one asked for, and
        # fetch that copy's dependencies, not the new ones.
        _forget_own_wheels()
        run(
            sys.executable, "-m", "pip", "download", "--quiet", "--dest", WHEELHOUSE,
            "-c", REQUIREMENTS, "--only-binary", ":all:", requirement,
        )  # fmt: skip
        _forget_own_wheels()
        pip("install", "--quiet", "--no-compile", *offline, requirement, python=python)


def _forget_own_wheels() -> None:
    for wheel in WHEELHOUSE.glob("django_realtime_channels-*"):
        wheel.unlink()
