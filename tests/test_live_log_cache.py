"""Logs a CDN can cache: complete pages are immutable, the head is revalidated.

First against the server itself (headers, conditional requests, HEAD), then through a
real caching proxy: Debian's nginx with ``proxy_cache`` in front of a daphne process,
whose access log shows which reads reached Django.
"""

import json
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from django.utils.http import http_date

import realtime
from tests.services import apt_install, free_port, stop, wait_for_port

pytestmark = [pytest.mark.live, pytest.mark.usefixtures("redis_layer")]

YEAR = 365 * 24 * 3600


def get(url, headers=None, method="GET"):
    request = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


@pytest.fixture
def public_log(make_channel, uid):
    channel = make_channel(f"feed-{uid}", anonymous_read=True, history_size=100, history_ttl=0)
    for n in range(5):
        realtime.publish(channel.name, "n", n)
    return channel


def epoch_of(server, name):
    return json.loads(get(f"{server.http_url}/realtime/log/{name}")[2])["epoch"]


def test_a_complete_page_is_immutable_and_the_head_is_revalidated(servers, public_log):
    base = f"{servers[0].http_url}/realtime/log/{public_log.name}"
    epoch = epoch_of(servers[0], public_log.name)

    status, full, body = get(f"{base}?since=0&limit=3&epoch={epoch}")
    assert status == 200 and [p["data"] for p in json.loads(body)["publications"]] == [0, 1, 2]
    assert full["Cache-Control"] == f"public, max-age={YEAR}, immutable"
    assert "Vary" not in full
    assert full["Link"] == f'</realtime/log/{public_log.name}?since=3&limit=3&epoch={epoch}>; rel="next"'

    _, head, _ = get(f"{base}?since=3&limit=3&epoch={epoch}")  # two of three: still filling
    assert head["Cache-Control"] == "public, max-age=0, must-revalidate"

    # A full page says nothing that changes later: where it ends, and where the next begins,
    # even when nothing follows yet.
    status, last, last_body = get(f"{base}?since=2&limit=3&epoch={epoch}")
    assert json.loads(last_body)["offset"] == 5 and json.loads(last_body)["next"] == 5
    assert last["Link"] == f'</realtime/log/{public_log.name}?since=5&limit=3&epoch={epoch}>; rel="next"'
    realtime.publish(public_log.name, "n", 5)
    _, again, again_body = get(f"{base}?since=2&limit=3&epoch={epoch}")
    assert (again["ETag"], again_body) == (last["ETag"], last_body)
    _, unpinned, _ = get(f"{base}?since=0&limit=3")  # no epoch named: a new epoch would change it
    assert unpinned["Cache-Control"] == "public, max-age=0, must-revalidate"


def test_private_channels_are_cached_privately_and_vary_by_credentials(servers, make_key, make_channel, uid):
    channel = make_channel(f"private-{uid}", history_size=10, history_ttl=600)
    for n in range(3):
        realtime.publish(channel.name, "n", n)
    auth = {"Authorization": f"Bearer {make_key(access='read-only')}"}
    base = f"{servers[0].http_url}/realtime/log/{channel.name}"
    epoch = json.loads(get(base, auth)[2])["epoch"]

    _, full, _ = get(f"{base}?since=0&limit=3&epoch={epoch}", auth)
    assert full["Cache-Control"] == "private, max-age=600, immutable"  # no longer than the history keeps it
    assert full["Vary"] == "Authorization"
    _, head, _ = get(f"{base}?since=0&limit=4&epoch={epoch}", auth)
    assert head["Cache-Control"] == "private, no-cache"


def test_conditional_requests_and_head(servers, public_log):
    url = f"{servers[0].http_url}/realtime/log/{public_log.name}?since=0&limit=3"
    _, headers, body = get(url)
    etag, modified = headers["ETag"], headers["Last-Modified"]
    assert etag.startswith('"')

    for condition in ({"If-None-Match": etag}, {"If-None-Match": f"W/{etag}"},
                      {"If-None-Match": f'"other", W/{etag}'}, {"If-None-Match": "*"},
                      {"If-Modified-Since": modified}):  # fmt: skip
        status, answer, empty = get(url, condition)
        assert (status, empty) == (304, b""), condition
        assert answer["Content-Type"] == "application/json"
        assert answer["ETag"] == etag and answer["Cache-Control"] == "public, max-age=0, must-revalidate"
    earlier = http_date(time.time() - 3600)
    assert get(url, {"If-Modified-Since": earlier})[0] == 200
    # If-None-Match decides when both are sent (RFC 9110 section 13.2.2).
    assert get(url, {"If-None-Match": '"other"', "If-Modified-Since": modified})[0] == 200

    status, head, nothing = get(url, method="HEAD")
    assert (status, nothing) == (200, b"")
    assert head["Content-Length"] == str(len(body)) and head["ETag"] == etag
    assert head["Content-Type"] == "application/json"


# Through nginx -----------------------------------------------------------------------------

NGINX_CONF = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    proxy_cache_path {dir}/cache levels=1:2 keys_zone=realtime:1m max_size=10m inactive=10m use_temp_path=off;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://127.0.0.1:{upstream};
            proxy_http_version 1.1;
            proxy_cache realtime;
            proxy_cache_revalidate on;
            add_header X-Cache-Status $upstream_cache_status always;
        }}
    }}
}}
"""


def nginx_binary() -> str:
    for candidate in (shutil.which("nginx"), "/usr/sbin/nginx"):
        if candidate and Path(candidate).exists():
            return candidate
    if apt_install("nginx"):
        return "/usr/sbin/nginx"
    pytest.fail("The cache tests need nginx (Debian: `apt-get install nginx`).", pytrace=False)


@pytest.fixture(scope="module")
def nginx(servers):
    # Not under pytest's private tmp: a worker started by root runs as nobody and must
    # reach its cache directory.
    directory = Path(tempfile.mkdtemp(prefix="realtime-nginx-"))
    directory.chmod(0o777)
    port = free_port()
    conf = directory / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=directory, port=port, upstream=servers[0].port))
    log = directory / "nginx.out"
    process = subprocess.Popen([nginx_binary(), "-c", str(conf), "-p", str(directory)],
                               stdout=log.open("w"), stderr=subprocess.STDOUT)  # fmt: skip
    wait_for_port(port, process, log)
    yield f"http://127.0.0.1:{port}"
    stop(process)
    shutil.rmtree(directory, ignore_errors=True)


def django_reads(server, name: str) -> int:
    """How many requests for ``name``'s log daphne served (its access log, which leaves
    out query strings)."""
    time.sleep(0.2)  # the access line is written after the response
    lines = server.log.read_text().splitlines()
    return sum(f'"GET /realtime/log/{name}?' in line for line in lines)


def test_a_second_read_of_a_complete_page_never_reaches_django(servers, nginx, public_log):
    epoch = epoch_of(servers[1], public_log.name)  # not through the one behind nginx
    path = f"/realtime/log/{public_log.name}?since=0&limit=3&epoch={epoch}"

    status, first, body = get(nginx + path)
    assert (status, first["X-Cache-Status"]) == (200, "MISS")
    for _ in range(3):
        status, again, cached = get(nginx + path)
        assert (status, again["X-Cache-Status"], cached) == (200, "HIT", body)
    assert django_reads(servers[0], public_log.name) == 1


def test_the_head_of_the_log_is_never_served_from_the_cache(servers, nginx, public_log):
    epoch = epoch_of(servers[1], public_log.name)
    path = f"/realtime/log/{public_log.name}?since=3&limit=3&epoch={epoch}"

    status, first, body = get(nginx + path)
    assert (status, first["X-Cache-Status"]) == (200, "MISS")
    assert [p["data"] for p in json.loads(body)["publications"]] == [3, 4]
    # nginx keeps nothing that must be revalidated at once: the next read reaches Django.
    status, again, _ = get(nginx + path)
    assert (status, again["X-Cache-Status"]) == (200, "MISS")
    realtime.publish(public_log.name, "n", 5)
    status, fresh, body = get(nginx + path)
    assert (status, fresh["X-Cache-Status"]) == (200, "MISS")
    assert [p["data"] for p in json.loads(body)["publications"]] == [3, 4, 5]
    assert fresh["Cache-Control"] == f"public, max-age={YEAR}, immutable"  # full now
    assert get(nginx + path)[1]["X-Cache-Status"] == "HIT"
    assert django_reads(servers[0], public_log.name) == 3  # the HIT did not
