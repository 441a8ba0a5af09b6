"""Behind nginx configured as docs/deployment.md#hardening says: realtime counts each
client by the address nginx names in X-Forwarded-For (TRUSTED_PROXIES), a client cannot
choose its address by sending the header itself, and nginx refuses oversized bodies
before the server sees them."""

import http.client
import shutil
import subprocess
import time

import pytest

from tests.hostile import LIMITS, client, fresh_address, http_request
from tests.services import apt_install, free_port, stop, wait_for_port

pytestmark = [pytest.mark.live]

CONFIG = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
    limit_conn_zone $binary_remote_addr zone=per_address:1m;
    upstream realtime_app {{ server 127.0.0.1:{upstream}; }}
    server {{
        listen 127.0.0.1:{port};
        client_header_timeout 10s;
        client_body_timeout 10s;
        limit_conn per_address 20;
        location /realtime/ws {{
            proxy_pass http://realtime_app;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_read_timeout 1h;
            proxy_buffering off;
        }}
        location /realtime/api/publish {{
            client_max_body_size 4k;
            proxy_pass http://realtime_app;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }}
    }}
}}
"""


class Nginx:
    def __init__(self, workdir, upstream) -> None:
        self.dir = workdir / f"nginx-{upstream.port}"
        self.dir.mkdir(exist_ok=True)
        self.port = free_port()
        self.ws_url = f"ws://127.0.0.1:{self.port}/realtime/ws"
        self.config = self.dir / "nginx.conf"
        self.config.write_text(CONFIG.format(dir=self.dir, upstream=upstream.port, port=self.port))
        self.log = self.dir / "nginx-error.log"
        self.process = None

    def start(self):
        binary = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
        if binary is None and apt_install("nginx"):
            binary = shutil.which("nginx", path="/usr/sbin:/usr/bin")
        if binary is None:
            pytest.fail("The proxy tests need nginx (Debian: apt-get install nginx).", pytrace=False)
        self.process = subprocess.Popen(
            [binary, "-c", str(self.config), "-p", str(self.dir)],
            stdout=self.log.open("a"),
            stderr=subprocess.STDOUT,
        )
        wait_for_port(self.port, self.process, self.log)
        return self

    def stop(self):
        if self.process is not None:
            stop(self.process)


@pytest.fixture(scope="module")
def nginx(hardened_daphne, service_dir):
    """nginx in front of daphne, which trusts 127.0.0.1 (TRUSTED_PROXIES)."""
    proxy = Nginx(service_dir, hardened_daphne).start()
    yield proxy
    proxy.stop()


@pytest.fixture
def through(nginx):
    clients = []

    def open_client(address, **kwargs):
        conn = client(nginx, address, **kwargs)
        clients.append(conn)
        return conn

    yield open_client
    for conn in clients:
        conn.close()


def closed_with(conn) -> int:
    from websockets.exceptions import ConnectionClosed

    with pytest.raises(ConnectionClosed):
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            conn.recv(timeout=deadline - time.monotonic())
    return conn.close_code


def test_behind_nginx_each_client_is_counted_by_its_own_address(through):
    alice, bob = fresh_address(), fresh_address()
    for _ in range(LIMITS["MAX_CONNECTIONS_PER_ADDRESS"]):
        assert through(alice).request("ping")["ok"] is True
    assert closed_with(through(alice)) == 4008
    assert through(bob).request("ping")["ok"] is True  # not everybody behind the proxy


def test_behind_nginx_a_forwarded_header_from_the_client_changes_nothing(through):
    spoofer = fresh_address()
    for n in range(LIMITS["MAX_CONNECTIONS_PER_ADDRESS"]):
        forged = {"X-Forwarded-For": f"203.0.113.{n}"}
        assert through(spoofer, additional_headers=forged).request("ping")["ok"] is True
    assert closed_with(through(spoofer, additional_headers={"X-Forwarded-For": "203.0.113.99"})) == 4008


def test_nginx_refuses_an_oversized_body_before_the_server_sees_it(nginx, make_key):
    body = b'{"channel":"x","event":"e","data":"' + b"x" * 8192 + b'"}'
    connection = http.client.HTTPConnection("127.0.0.1", nginx.port, timeout=10)
    connection.request(
        "POST", "/realtime/api/publish", body=body, headers={"Authorization": f"Bearer {make_key()}"}
    )
    response = connection.getresponse()
    assert response.status == 413 and b"nginx" in response.read()
    connection.close()
    # ... while a small one goes through to realtime, with the client's address.
    status, _, answer = http_request(
        nginx, "POST", "/realtime/api/publish", b"{}", {"Authorization": "Bearer rt_wrong"}, fresh_address()
    )
    assert (status, answer["err"]) == (401, "invalid_credentials")
