"""Real services for the live tests: a redis-server and ASGI server processes.

Each binds a free loopback port, is waited for until it answers, and is stopped
(by its own PID) when the fixture that started it ends.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, log: Path, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listened on port {port} within {timeout}s:\n{log.read_text()[-3000:]}")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def apt_install(package: str) -> bool:
    """Install a Debian package when running as root with apt-get; False if not allowed."""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return False
    print(f"{package} is missing: installing Debian's {package} package", file=sys.stderr)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", package], check=True, env=env)
    return True


def redis_server_binary() -> str:
    """Path to redis-server, installing Debian's package when missing and allowed to."""
    found = shutil.which("redis-server")
    if found:
        return found
    if apt_install("redis-server"):
        found = shutil.which("redis-server")
        if found:
            return found
    pytest.fail(
        "The live tests need redis-server. Install it (Debian/Ubuntu: "
        "`sudo apt-get install redis-server`; macOS: `brew install redis`) and run again.",
        pytrace=False,
    )


class RedisServer:
    """A redis-server on a free loopback port (the same port again after a restart).

    ``persistent``: an append-only file synced on every write, so what Redis
    acknowledged survives SIGKILL. ``replica_of``: start as a replica of that server.
    """

    def __init__(
        self, workdir: Path, *, persistent: bool = False, replica_of: RedisServer | None = None
    ) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.persistent = persistent
        self.replica_of = replica_of
        self.process: subprocess.Popen | None = None

    def command(self) -> list[str]:
        command = [
            redis_server_binary(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--dir", str(self.workdir),
            "--dbfilename", f"dump-{self.port}.rdb",
        ]  # fmt: skip
        if self.persistent:
            command += ["--appendonly", "yes", "--appendfsync", "always"]
            command += ["--appendfilename", f"appendonly-{self.port}.aof"]
            command += ["--appenddirname", f"aof-{self.port}"]
        else:
            command += ["--appendonly", "no"]
        if self.replica_of is not None:
            command += ["--replicaof", "127.0.0.1", str(self.replica_of.port)]
        # A replica that (re)connects is synced at once, not after the default 5 s wait
        # for more replicas to share the transfer.
        command += ["--repl-diskless-sync-delay", "0"]
        return command

    def start(self) -> RedisServer:
        log = self.workdir / f"redis-{self.port}.log"
        self.process = subprocess.Popen(self.command(), stdout=log.open("a"), stderr=subprocess.STDOUT)
        wait_for_port(self.port, self.process, log)
        return self

    def client(self):
        import redis

        return redis.Redis.from_url(self.url, socket_timeout=5)

    def flush(self) -> None:
        """FLUSHALL: what losing Redis's data (not the server) looks like."""
        with self.client() as client:
            client.flushall()

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)

    def kill(self) -> None:
        """SIGKILL: Redis dies at once, without closing anything properly."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def pause(self) -> None:
        """SIGSTOP: a Redis that hangs (takes connections, never answers)."""
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)


class RedisSentinel:
    """A redis-server in Sentinel mode watching ``master`` under ``name``."""

    def __init__(
        self, workdir: Path, master: RedisServer, *, name: str = "mymaster", quorum: int = 2
    ) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.master = master
        self.name = name
        self.quorum = quorum
        self.process: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> RedisSentinel:
        config = self.workdir / f"sentinel-{self.port}.conf"
        config.write_text(
            f"port {self.port}\n"
            "bind 127.0.0.1\n"
            f"dir {self.workdir}\n"
            f"sentinel monitor {self.name} 127.0.0.1 {self.master.port} {self.quorum}\n"
            # Long enough that a busy machine's slow answer is not taken for a dead master.
            f"sentinel down-after-milliseconds {self.name} 3000\n"
            f"sentinel failover-timeout {self.name} 10000\n"
            f"sentinel parallel-syncs {self.name} 1\n"
        )
        log = self.workdir / f"sentinel-{self.port}.log"
        self.process = subprocess.Popen(
            [redis_server_binary(), str(config), "--sentinel"], stdout=log.open("a"), stderr=subprocess.STDOUT
        )
        wait_for_port(self.port, self.process, log)
        return self

    def master_address(self) -> tuple[str, int]:
        import redis

        with redis.Redis(port=self.port, socket_timeout=5, decode_responses=True) as client:
            host, port = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.name)
        return host, int(port)

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)


class AsgiServer:
    """``daphne``, ``uvicorn`` (``uvicorn-realtime``: with realtime's protocol classes),
    ``hypercorn`` or ``granian`` serving demo_site.asgi with the test settings."""

    def __init__(
        self,
        workdir: Path,
        *,
        database: str,
        redis_url: str = "",
        realtime: dict | None = None,
        server: str = "daphne",
        env: dict | None = None,
    ) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.database = database
        self.redis_url = redis_url
        self.realtime = realtime or {}
        self.server = server
        # More of the settings' environment (REDIS_SENTINELS, REALTIME_TEST_APPS, ...).
        self.env = env or {}
        self.process: subprocess.Popen | None = None
        self.log = workdir / f"{server}-{self.port}.log"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/realtime/ws"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        app, host, port = "demo_site.asgi:application", "127.0.0.1", str(self.port)
        commands = {
            "uvicorn": [
                str(VENV_BIN / "uvicorn"), app, "--host", host, "--port", port,
                "--ws", "websockets-sansio", "--lifespan", "off", "--log-level", "warning",
            ],
            # uvicorn with realtime's own protocol classes (docs/deployment.md#hardening),
            # which also offer the pre-framed fan-out (realtime.servers.uvicorn).
            "uvicorn-realtime": [
                str(VENV_BIN / "uvicorn"), app, "--host", host, "--port", port,
                "--http", "realtime.servers.uvicorn:HttpProtocol",
                "--ws", "realtime.servers.uvicorn:WebSocketProtocol",
                "--lifespan", "off", "--log-level", "warning",
            ],
            "daphne": [str(VENV_BIN / "daphne"), "-b", host, "-p", port, app],
            "hypercorn": [
                str(VENV_BIN / "hypercorn"), app, "--bind", f"{host}:{port}", "--log-level", "warning",
            ],
            # asginl: ASGI without lifespan events, which Django does not handle.
            "granian": [
                str(VENV_BIN / "granian"), "--interface", "asginl", app,
                "--host", host, "--port", port, "--log-level", "warning",
            ],
        }  # fmt: skip
        return commands[self.server]

    def start(self) -> AsgiServer:
        env = {
            # Servers keep Django's async-safety check even when a browser test relaxed it.
            **{k: v for k, v in os.environ.items() if k != "DJANGO_ALLOW_ASYNC_UNSAFE"},
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "DATABASE_PATH": self.database,
            "REDIS_URL": self.redis_url,
            "REALTIME_TEST_SETTINGS": json.dumps(self.realtime),
            "PYTHONPATH": str(ROOT),
            **self.env,
        }
        self.process = subprocess.Popen(
            self.command(), cwd=ROOT, env=env, stdout=self.log.open("w"), stderr=subprocess.STDOUT
        )
        wait_for_port(self.port, self.process, self.log)
        return self

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
