"""The docs list every error code, close code, setting and check id the code has."""

import re
from pathlib import Path

import pytest

from realtime.bayeux.protocol import ERRORS
from realtime.conf import DEFAULTS
from realtime.errors import CloseCode, ErrorCode

ROOT = Path(__file__).resolve().parent.parent
PROTOCOL = (ROOT / "docs" / "protocol.md").read_text()
SETTINGS = (ROOT / "docs" / "settings.md").read_text()
CHECKS = "".join((ROOT / "realtime" / name).read_text() for name in ("checks.py", "conf.py"))
CHECK_IDS = sorted(set(re.findall(r"realtime\.[EW]\d{3}", CHECKS)))


@pytest.mark.parametrize("code", list(ErrorCode), ids=str)
def test_every_error_code_is_in_the_protocol_docs(code):
    assert f"`{code.value}`" in PROTOCOL


@pytest.mark.parametrize("code", list(CloseCode), ids=lambda code: code.name)
def test_every_close_code_is_in_the_protocol_docs(code):
    assert re.search(rf"^\| {int(code)} \| `{code.name}` \|", PROTOCOL, re.MULTILINE)


@pytest.mark.parametrize("key", sorted(DEFAULTS))
def test_every_setting_is_in_the_settings_docs(key):
    assert f"| `{key}` |" in SETTINGS


def test_checks_py_has_check_ids():
    assert CHECK_IDS


@pytest.mark.parametrize("check_id", CHECK_IDS)
def test_every_check_id_is_in_the_settings_docs(check_id):
    assert f"`{check_id}`" in SETTINGS


def test_the_docs_list_no_error_code_the_code_lacks():
    table = PROTOCOL.split("## Error codes", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| `([a-z_]+)` \|", table, re.MULTILINE))
    assert listed == {code.value for code in ErrorCode}


def test_the_docs_list_no_check_id_the_code_lacks():
    assert set(re.findall(r"realtime\.[EW]\d{3}", SETTINGS)) == set(CHECK_IDS)


BAYEUX = (ROOT / "docs" / "bayeux.md").read_text()


@pytest.mark.parametrize("text", ERRORS)
def test_every_bayeux_error_is_in_the_bayeux_docs(text):
    assert re.search(rf"`\d{{3}}:[^`]*:{text}`", BAYEUX)


TESTING = (ROOT / "docs" / "testing.md").read_text()


def test_the_example_in_the_testing_docs_is_the_test_file_that_runs():
    example = TESTING.split("## An example", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    assert example == (ROOT / "tests" / "test_docs_example.py").read_text()


def test_the_readme_links_every_page_in_docs():
    for page in (ROOT / "docs").glob("*.md"):
        assert f"(docs/{page.name})" in (ROOT / "README.md").read_text(), page.name
