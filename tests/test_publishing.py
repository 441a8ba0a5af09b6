"""realtime.publish() where nobody can hear it: the in-memory layer, in a process that
serves no WebSockets, warns once; a serving process, or Redis, never warns."""

import logging
import os
import subprocess
import sys
import warnings

import pytest
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_started

import realtime
from realtime import broker, publishing, runtime
from realtime.publishing import NotDeliveredWarning
from tests.services import ROOT

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def fresh_process(monkeypatch):
    """This process as a shell or a worker sees it: nothing served yet, nothing said yet."""
    monkeypatch.setattr(broker, "_serving", False)
    monkeypatch.setattr(publishing, "_warned", False)
    # The first ASGI request marks the process; the receiver disconnects itself after it.
    from realtime.apps import _served_over_asgi

    request_started.connect(_served_over_asgi, dispatch_uid="realtime.served_over_asgi")


@pytest.fixture
def news(make_channel):
    return make_channel("news", history_size=10)


def test_publish_outside_a_server_on_the_in_memory_layer_warns_once(fresh_process, news):
    with pytest.warns(NotDeliveredWarning, match="reach no one") as caught:
        publication = realtime.publish("news", "headline", {"n": 1})
    assert caught[0].filename == __file__  # it points at the call
    # It still publishes: validated, numbered in the (process-local) history.
    assert publication.offset == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert realtime.publish("news", "headline", {"n": 2}).offset == 2


@pytest.mark.asyncio
async def test_apublish_warns_the_same_way(fresh_process, news):
    with pytest.warns(NotDeliveredWarning) as caught:
        await realtime.apublish("news", "headline", 1)
    assert caught[0].filename == __file__


@pytest.mark.asyncio
async def test_no_warning_once_a_hub_serves_in_this_process(fresh_process, news, caplog):
    with caplog.at_level(logging.INFO, logger="realtime"):
        hub = await runtime.get_hub()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            await realtime.apublish("news", "headline", 1)
    finally:
        hub.stop()
    # The one line about the layer is said where serving starts.
    assert [r.getMessage() for r in caplog.records if "channel layer" in r.getMessage()] == [
        "realtime: no multi-process channel layer is configured (in-memory): this process is a server "
        "of its own; set REDIS_URL (CHANNEL_LAYERS) to run several"
    ]


def test_no_warning_after_a_request_through_an_asgi_server(fresh_process, news):
    request_started.send(sender=WSGIHandler, environ={})
    assert not broker.serving()  # a WSGI process serves no WebSockets
    request_started.send(sender=ASGIHandler, scope={})
    assert broker.serving()

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        realtime.publish("news", "headline", 1)


def test_no_warning_on_a_multi_process_layer(fresh_process, news, monkeypatch):
    class Broker:
        multi_process = True

    monkeypatch.setattr(publishing, "get_broker", lambda: Broker())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        publishing._warn_if_nobody_hears(1)
    assert not publishing._warned


@pytest.mark.live
def test_management_commands_say_nothing_about_the_layer(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "REALTIME_TEST_SETTINGS")}
    env.update(DJANGO_SETTINGS_MODULE="demo_site.settings", DATABASE_PATH=str(tmp_path / "db.sqlite3"))
    for command in (["help"], ["check"], ["realtime_channel", "--help"]):
        result = subprocess.run(
            [sys.executable, "manage.py", *command], cwd=ROOT, env=env, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr
        assert "channel layer" not in result.stdout + result.stderr
