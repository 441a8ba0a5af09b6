"""Helpers for the hostile-client tests: servers run the way docs/deployment.md#hardening
says, raw sockets for what no well-behaved client library would send, and a distinct
loopback source address per test so the per-address limits of one test never meet
another's (all of 127.0.0.0/8 reaches the loopback interface on Linux)."""

from __future__ import annotations

import base64
import http.client
import itertools
import json
import os
import socket
import time

import pytest

from realtime.testing import RealtimeClient
from tests.services import VENV_BIN, AsgiServer

_hosts = itertools.count(2)


def fresh_address() -> str:
    """A loopback address no other test in this run uses (127.0.<n>.<m>)."""
    n = next(_hosts)
    return f"127.0.{n // 250}.{n % 250 + 2}"


# The uvicorn flags docs/deployment.md#hardening recommends (tests/test_hardening_docs.py
# keeps the two the same), besides the protocol classes.
UVICORN_FLAGS = (
    "--ws-max-size", "131072", "--ws-ping-interval", "20", "--ws-ping-timeout", "20",
    "--timeout-keep-alive", "5", "--limit-concurrency", "12000",
)  # fmt: skip


class HardenedServer(AsgiServer):
    """uvicorn with realtime's protocol classes (or daphne), with extra server flags."""

    def __init__(self, *args, flags: tuple[str, ...] = (), log_level: str = "info", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.flags = list(flags)
        self.log_level = log_level

    def command(self) -> list[str]:
        if self.server != "uvicorn":
            return super().command() + self.flags
        return [
            str(VENV_BIN / "uvicorn"), "demo_site.asgi:application",
            "--host", "127.0.0.1", "--port", str(self.port),
            "--http", "realtime.servers.uvicorn:HttpProtocol",
            "--ws", "realtime.servers.uvicorn:WebSocketProtocol",
            *UVICORN_FLAGS,
            "--lifespan", "off", "--log-level", self.log_level, "--no-access-log",
            *self.flags,
        ]  # fmt: skip

    def start(self) -> HardenedServer:
        super().start()
        return self

    def rss_mib(self) -> float:
        """The server process's resident memory, from /proc."""
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")


def client(server, address: str, **kwargs) -> RealtimeClient:
    return RealtimeClient(server.ws_url, source_address=(address, 0), **kwargs)


def upgrade(
    server, address: str = "127.0.0.1", path: str = "/realtime/ws", rcvbuf: int | None = None
) -> socket.socket:
    """A raw WebSocket after its handshake (the 101 is read)."""
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(5)
    sock.bind((address, 0))
    sock.connect(("127.0.0.1", server.port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def frame(opcode: int, payload: bytes) -> bytes:
    """A client frame (masked, with a zero mask, so the payload goes as it is)."""
    assert len(payload) < 126
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + b"\0\0\0\0" + payload


def read_frames(sock: socket.socket, timeout: float = 5) -> list[tuple[int, bytes]]:
    """Server frames until the server closes (opcode 8 included), as (opcode, payload)."""
    sock.settimeout(timeout)
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        data += chunk
    frames = []
    while len(data) >= 2:
        opcode, length, offset = data[0] & 0x0F, data[1] & 0x7F, 2
        if length == 126:
            length, offset = int.from_bytes(data[2:4], "big"), 4
        elif length == 127:
            length, offset = int.from_bytes(data[2:10], "big"), 10
        frames.append((opcode, data[offset : offset + length]))
        data = data[offset + length :]
    return frames


def close_code(frames) -> int | None:
    closes = [payload for opcode, payload in frames if opcode == 8]
    return int.from_bytes(closes[0][:2], "big") if closes else None


def http_request(
    server,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict | None = None,
    address="127.0.0.1",
):
    """(status, headers, JSON body) from ``address``."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10, source_address=(address, 0))
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        raw = response.read()
        return response.status, response.headers, json.loads(raw) if raw else None
    finally:
        connection.close()


# Servers -----------------------------------------------------------------------------

# Tiny limits, so tests reach each one quickly.
LIMITS = {
    "STALE_TIMEOUT": 1.5,
    "MAX_CONNECTIONS_PER_ADDRESS": 3,
    "MAX_SUBSCRIPTIONS_PER_ADDRESS": 4,
    "MAX_BAYEUX_SESSIONS_PER_ADDRESS": 2,
    "AUTH_FAILURES_PER_ADDRESS": 4,
    "AUTH_FAILURE_WINDOW": 600,
    "MAX_AUTH_FAILURES": 3,
    "MAX_ANONYMOUS_TOPICS": 20,
    "MAX_MESSAGE_SIZE": 4096,
    "HANDSHAKE_TIMEOUT": 1,
    "REVALIDATE_INTERVAL": 1,
    "BAYEUX_MAX_INTERVAL": 3,
    "BAYEUX_TIMEOUT": 2,
}


def start(request, service_dir, **kwargs) -> HardenedServer:
    server = HardenedServer(service_dir, **kwargs).start()
    request.addfinalizer(server.stop)
    return server


@pytest.fixture(scope="session")
def hardened(request, service_dir, redis_server, test_database):
    """uvicorn as docs/deployment.md#hardening runs it, with tiny limits, on Redis."""
    return start(
        request,
        service_dir,
        database=test_database,
        redis_url=redis_server.url,
        realtime=LIMITS,
        server="uvicorn",
    )


@pytest.fixture(scope="session")
def hardened_daphne(request, service_dir, redis_server, test_database):
    """daphne with the same limits, behind a (pretend) proxy on 127.0.0.1."""
    realtime = {**LIMITS, "TRUSTED_PROXIES": ["127.0.0.1"]}
    return start(request, service_dir, database=test_database, redis_url=redis_server.url, realtime=realtime)
