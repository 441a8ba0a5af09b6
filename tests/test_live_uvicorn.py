"""realtime is server-neutral: the same protocol works under uvicorn as under daphne."""

import pytest

pytestmark = [pytest.mark.live, pytest.mark.usefixtures("redis_layer")]


def test_uvicorn_and_daphne_processes_share_publications(
    uvicorn_server, server, connect, make_key, make_channel, uid
):
    news = make_channel(f"news-{uid}")
    on_uvicorn, on_daphne = connect(uvicorn_server), connect(server)
    on_uvicorn.auth(make_key())
    on_daphne.auth(make_key())
    on_uvicorn.subscribe(news.name)
    on_daphne.subscribe(news.name)

    on_daphne.publish(news.name, "from", "daphne")
    on_uvicorn.publish(news.name, "from", "uvicorn")

    for client in (on_uvicorn, on_daphne):
        got = [client.next_message()["message"]["data"] for _ in range(2)]
        assert sorted(got) == ["daphne", "uvicorn"]


def test_uvicorn_refuses_garbage_and_keeps_the_connection(uvicorn_server, connect):
    client = connect(uvicorn_server)
    client.send_raw("{")
    assert client.recv()["err"] == "invalid_data"
    client.send_raw(b"\x00")
    assert client.recv()["err"] == "invalid_data"
    assert client.logout()["ok"] is True
