"""docs/deployment.md#hardening says what the live tests run: the uvicorn command line, and
protocol classes that nothing else in realtime imports (so realtime needs no uvicorn)."""

import re
from pathlib import Path

from tests.hostile import UVICORN_FLAGS
from tests.test_imports import GRAPH

ROOT = Path(__file__).resolve().parent.parent
HARDENING = (ROOT / "docs" / "deployment.md").read_text().split("## Hardening", 1)[1].split("\n## ", 1)[0]


def documented_command() -> list[str]:
    block = re.search(r"```sh\n(uvicorn .*?)```", HARDENING, re.DOTALL).group(1)
    return block.replace("\\\n", " ").split()


def test_the_documented_uvicorn_command_is_the_one_the_live_tests_run():
    words = documented_command()
    flags = words[words.index("--host") :]
    assert "realtime.servers.uvicorn:HttpProtocol" == flags[flags.index("--http") + 1]
    assert "realtime.servers.uvicorn:WebSocketProtocol" == flags[flags.index("--ws") + 1]
    pairs = dict(zip(UVICORN_FLAGS[::2], UVICORN_FLAGS[1::2], strict=True))
    for flag, value in pairs.items():
        assert flags[flags.index(flag) + 1] == value, flag


def test_the_protocol_classes_are_uvicorn_s_own_subclassed():
    from uvicorn.protocols.http.h11_impl import H11Protocol
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

    from realtime.servers.uvicorn import HttpProtocol, WebSocketProtocol

    assert issubclass(WebSocketProtocol, WebSocketsSansIOProtocol)
    assert issubclass(HttpProtocol, H11Protocol)


def test_nothing_in_realtime_imports_the_server_integrations():
    importers = {
        name for name, targets in GRAPH.items() if any(t.startswith("realtime.servers") for t in targets)
    }
    assert importers <= {"realtime.servers"}
