"""realtime.js and its type declarations agree with the Python side on every wire constant."""

import re
from pathlib import Path

import pytest

from realtime.errors import CloseCode, ErrorCode
from realtime.protocol import PROTOCOL_VERSION

STATIC = Path(__file__).resolve().parent.parent / "realtime" / "static" / "realtime"
CLIENT_JS = (STATIC / "realtime.js").read_text()
CLIENT_DTS = (STATIC / "realtime.d.ts").read_text()


def js_object(source: str, name: str) -> dict[str, str]:
    """The NAME: value entries of ``export [declare] const <name> ... {...}``, values as written."""
    match = re.search(rf"export (?:declare )?const {name}\b[^{{]*\{{(.*?)\}}", source, re.DOTALL)
    assert match, f"no `export const {name}` found"
    entries = re.findall(r"^\s*([A-Z_]+):\s*([^,;\n]+)[,;]?\s*$", match.group(1), re.MULTILINE)
    assert entries, f"{name} has no entries"
    return {key: value.strip() for key, value in entries}


def strings(entries: dict[str, str]) -> dict[str, str]:
    return {key: value.strip('"') for key, value in entries.items()}


@pytest.mark.parametrize("source", [CLIENT_JS, CLIENT_DTS], ids=["realtime.js", "realtime.d.ts"])
def test_error_codes_are_the_servers(source):
    assert strings(js_object(source, "ERROR_CODES")) == {code.name: code.value for code in ErrorCode}


@pytest.mark.parametrize("source", [CLIENT_JS, CLIENT_DTS], ids=["realtime.js", "realtime.d.ts"])
def test_close_codes_are_the_servers(source):
    codes = {key: int(value) for key, value in js_object(source, "CLOSE_CODES").items()}
    assert codes == {code.name: code.value for code in CloseCode}


@pytest.mark.parametrize("source", [CLIENT_JS, CLIENT_DTS], ids=["realtime.js", "realtime.d.ts"])
def test_client_error_codes_never_collide_with_server_codes(source):
    client_codes = set(strings(js_object(source, "CLIENT_ERROR_CODES")).values())
    assert {"timeout", "disconnected", "closed"} <= client_codes
    assert not client_codes & {code.value for code in ErrorCode}


def test_protocol_version_is_the_servers():
    assert re.findall(r"export const PROTOCOL_VERSION = (\d+);", CLIENT_JS) == [str(PROTOCOL_VERSION)]
    assert re.findall(r"export declare const PROTOCOL_VERSION: (\d+);", CLIENT_DTS) == [str(PROTOCOL_VERSION)]


def test_client_does_not_reconnect_after_the_final_close_codes():
    # Retrying after 4002 (auth failures), 4003 (origin) or 4101 (an operator's disconnect
    # for good) would fail again: docs/protocol.md.
    line = re.search(r"const FINAL_CLOSE_CODES = new Set\(\[(.*?)\]\)", CLIENT_JS, re.DOTALL).group(1)
    names = [name.strip() for name in line.split(",") if name.strip()]
    finals = {CloseCode[name.removeprefix("CLOSE_CODES.")] for name in names}
    assert finals == {
        CloseCode.TOO_MANY_AUTH_FAILURES,
        CloseCode.ORIGIN_NOT_ALLOWED,
        CloseCode.DISCONNECTED_FOR_GOOD,
    }
