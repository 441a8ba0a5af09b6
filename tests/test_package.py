"""The distribution `make dist` builds: django-realtime-channels, which installs `realtime`
and everything it needs at run time, and nothing else."""

import email
import tarfile
import zipfile

import pytest

import realtime
from tests.distribution import ROOT, build_dist

pytestmark = [pytest.mark.live]  # builds in a subprocess

PACKAGE = ROOT / "realtime"
# What a project needs besides the modules; listed so a missing glob in pyproject.toml
# says which file it lost.
DATA = [
    "realtime/py.typed",
    "realtime/static/realtime/realtime.js",
    "realtime/static/realtime/connect.js",
    "realtime/static/realtime/realtime.d.ts",
    "realtime/templates/admin/realtime/secret_shown_once.html",
    "realtime/templates/admin/realtime/regenerate_secret.html",
    "realtime/templates/admin/realtime/secret_change_form.html",
    "realtime/templates/admin/realtime/accesskey/change_form.html",
    "realtime/templates/admin/realtime/accesskey/secret.html",
    "realtime/templates/admin/realtime/accesskey/regenerate_confirmation.html",
    "realtime/migrations/0001_initial.py",
    "realtime/management/commands/realtime_key.py",
    "realtime/management/commands/realtime_channel.py",
    "realtime/management/commands/realtime_publish.py",
    "realtime/templatetags/realtime.py",
]


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    return build_dist(tmp_path_factory.mktemp("dist"))


@pytest.fixture(scope="module")
def wheel_names(dist):
    with zipfile.ZipFile(dist[1]) as wheel:
        return set(wheel.namelist())


@pytest.fixture(scope="module")
def metadata(dist):
    with zipfile.ZipFile(dist[1]) as wheel:
        (name,) = [name for name in wheel.namelist() if name.endswith(".dist-info/METADATA")]
        return email.message_from_bytes(wheel.read(name))


def package_files() -> set[str]:
    return {
        path.relative_to(ROOT).as_posix()
        for path in PACKAGE.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }


def test_the_wheel_holds_every_file_of_the_package(wheel_names):
    assert set(DATA) <= package_files()
    assert sorted(package_files() - wheel_names) == []


def test_the_wheel_holds_nothing_but_the_package_and_its_metadata(wheel_names):
    outside = sorted(
        name for name in wheel_names if not name.startswith(("realtime/", "django_realtime_channels-"))
    )
    assert outside == []
    dist_info = {name.split("/", 1)[0] for name in wheel_names if ".dist-info/" in name}
    assert dist_info == {f"django_realtime_channels-{realtime.__version__}.dist-info"}


def test_the_metadata_names_the_distribution_its_version_license_and_dependencies(metadata, wheel_names):
    assert metadata["Name"] == "django-realtime-channels"
    assert metadata["Version"] == realtime.__version__
    assert metadata["License-Expression"] == "BSD-3-Clause"
    assert f"django_realtime_channels-{realtime.__version__}.dist-info/licenses/LICENSE" in wheel_names
    assert metadata["Requires-Python"] == ">=3.11"
    assert "Framework :: Django :: 5.2" in metadata.get_all("Classifier")
    requires = metadata.get_all("Requires-Dist")
    for dependency in ["Django>=5.2", "channels>=4.3", "channels-redis>=4.3", "redis>=5.0", "msgpack>=1.0"]:
        assert dependency in requires
    assert set(metadata.get_all("Provides-Extra")) >= {"uvicorn", "daphne", "hypercorn", "granian"}
    assert metadata.get_payload().startswith("# realtime")  # the README


def test_the_sdist_holds_the_package_the_license_and_the_docs_but_not_the_demo(dist):
    with tarfile.open(dist[0]) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    assert {"pyproject.toml", "README.md", "LICENSE", "CHANGELOG.md", "docs/settings.md"} <= names
    assert set(DATA) <= names
    assert not [name for name in names if name.split("/")[0] in ("demo_site", "tests", "bench", "templates")]
