"""realtime.guard in process: realtime's HTTP endpoints refuse unread, with plain ASGI
calls (the live tests in tests/test_live_hostile.py send the same over real sockets)."""

import json

import pytest

from realtime.guard import guard
from realtime.models import AccessKey

pytestmark = pytest.mark.asyncio

LIMIT = 1024


@pytest.fixture(autouse=True)
def small_limit(settings):
    settings.REALTIME = {"MAX_MESSAGE_SIZE": LIMIT}


def http(path, method="POST", headers=()):
    return {
        "type": "http",
        "method": method,
        "path": path,
        "root_path": "",
        "headers": [(k.encode(), v.encode()) for k, v in headers],
        "client": ("192.0.2.10", 40000),
    }


class Inner:
    """The application behind the guard: records what reaches it."""

    def __init__(self):
        self.calls = []

    async def __call__(self, scope, receive, send):
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.calls.append((scope["path"], body))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"inner"})


class Client:
    """``receive`` over a list of body chunks, counting how many were taken."""

    def __init__(self, *chunks):
        self.chunks = list(chunks)
        self.taken = 0
        self.sent = []

    async def receive(self):
        if self.taken < len(self.chunks):
            chunk = self.chunks[self.taken]
            self.taken += 1
            return {"type": "http.request", "body": chunk, "more_body": self.taken < len(self.chunks)}
        return {"type": "http.disconnect"}

    async def send(self, message):
        self.sent.append(message)

    @property
    def status(self):
        return self.sent[0]["status"]

    @property
    def headers(self):
        return {k.decode(): v.decode() for k, v in self.sent[0]["headers"]}

    @property
    def json(self):
        return json.loads(self.sent[1]["body"])


async def test_other_paths_pass_through_untouched():
    inner, client = Inner(), Client(b"x" * (LIMIT * 4))
    await guard(inner)(http("/admin/login/"), client.receive, client.send)
    assert inner.calls == [("/admin/login/", b"x" * (LIMIT * 4))]


async def test_publishing_without_credentials_is_401_before_a_byte_is_read():
    inner, client = Inner(), Client(b"x" * 10**6)
    await guard(inner)(http("/realtime/api/publish"), client.receive, client.send)
    assert (client.status, client.json["err"]) == (401, "invalid_credentials")
    assert client.headers["www-authenticate"] == 'Bearer realm="realtime"'
    assert client.headers["connection"] == "close"
    assert client.taken == 0 and inner.calls == []


async def test_publishing_with_an_unknown_key_is_401_before_a_byte_is_read(transactional_db):
    inner, client = Inner(), Client(b"{}")
    headers = [("authorization", "Bearer rt_nosuchkey"), ("content-length", "2")]
    await guard(inner)(http("/realtime/api/publish", headers=headers), client.receive, client.send)
    assert (client.status, client.json["err"], client.taken) == (401, "invalid_credentials", 0)


def secret(access="read-write"):
    return AccessKey.objects.create_key(name=f"guard-{access}", access=access, all_channels=True)[1]


async def test_a_read_only_key_is_403_before_a_byte_is_read(transactional_db):
    from asgiref.sync import sync_to_async

    key = await sync_to_async(secret)("read-only")
    inner, client = Inner(), Client(b"{}")
    await guard(inner)(
        http("/realtime/api/publish", headers=[("authorization", f"Bearer {key}")]),
        client.receive,
        client.send,
    )
    assert (client.status, client.json["err"], client.taken) == (403, "access_denied", 0)


async def test_a_declared_length_over_the_limit_is_413_unread(transactional_db):
    from asgiref.sync import sync_to_async

    key = await sync_to_async(secret)()
    inner, client = Inner(), Client(b"x" * (LIMIT + 1))
    headers = [("authorization", f"Bearer {key}"), ("content-length", str(LIMIT + 1))]
    await guard(inner)(http("/realtime/api/publish", headers=headers), client.receive, client.send)
    assert (client.status, client.json["err"], client.taken) == (413, "message_too_large", 0)


async def test_a_chunked_body_is_counted_and_refused_as_soon_as_it_passes_the_limit(transactional_db):
    from asgiref.sync import sync_to_async

    key = await sync_to_async(secret)()
    inner, client = Inner(), Client(*[b"x" * 400] * 100)
    headers = [("authorization", f"Bearer {key}")]
    await guard(inner)(http("/realtime/api/publish", headers=headers), client.receive, client.send)
    assert (client.status, client.json["err"]) == (413, "message_too_large")
    assert client.taken == 3 and inner.calls == []


async def test_a_body_within_the_limit_reaches_django_whole_and_disconnects_still_arrive():
    seen = []

    async def inner(scope, receive, send):
        seen.append(await receive())
        seen.append(await receive())

    client = Client(b'{"a":', b"1}")
    await guard(inner)(http("/realtime/log/news", method="GET"), client.receive, client.send)
    assert seen == [
        {"type": "http.request", "body": b'{"a":1}', "more_body": False},
        {"type": "http.disconnect"},
    ]


async def test_the_bayeux_endpoint_answers_in_bayeux_s_format():
    client = Client()
    headers = [("content-length", str(LIMIT * 10))]
    await guard(Inner())(http("/realtime/bayeux/handshake", headers=headers), client.receive, client.send)
    assert client.status == 413
    assert client.json == [
        {"channel": "/meta/unknown", "successful": False, "error": f"413:{LIMIT}:message_too_large"}
    ]


async def test_a_client_that_leaves_mid_body_reaches_nothing():
    inner = Inner()

    class Leaving(Client):
        async def receive(self):
            self.taken += 1
            if self.taken == 1:
                return {"type": "http.request", "body": b"x", "more_body": True}
            return {"type": "http.disconnect"}

    client = Leaving()
    await guard(inner)(http("/realtime/bayeux"), client.receive, client.send)
    assert inner.calls == [] and client.sent == []


async def test_websockets_and_lifespan_pass_through():
    reached = []

    async def inner(scope, receive, send):
        reached.append(scope["type"])

    for kind in ("websocket", "lifespan"):
        await guard(inner)({"type": kind, "path": "/realtime/ws"}, None, None)
    assert reached == ["websocket", "lifespan"]
