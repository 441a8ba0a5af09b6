"""The process-local caches: loads shared by concurrent misses, and the channel rows kept
whole (realtime.cache, realtime.registry)."""

import asyncio

import pytest
from asgiref.sync import sync_to_async
from django.db import connection
from django.test.utils import CaptureQueriesContext

from realtime import registry
from realtime.cache import TTLCache
from realtime.models import Channel


@pytest.mark.asyncio
async def test_concurrent_misses_for_one_key_share_one_load():
    cache, calls = TTLCache(10), []

    async def load():
        calls.append(1)
        await asyncio.sleep(0.01)
        return "value"

    assert await asyncio.gather(*(cache.load("k", load) for _ in range(50))) == ["value"] * 50
    assert calls == [1]
    assert await cache.load("k", load) == "value" and calls == [1]  # kept


@pytest.mark.asyncio
async def test_a_failed_load_reaches_every_waiter_and_is_not_kept():
    cache = TTLCache(10)

    async def fail():
        await asyncio.sleep(0.01)
        raise LookupError("no")

    results = await asyncio.gather(*(cache.load("k", fail) for _ in range(3)), return_exceptions=True)
    assert all(isinstance(result, LookupError) for result in results)
    assert cache.get("k", None) is None


@pytest.mark.asyncio
async def test_a_load_that_began_before_a_clear_is_not_kept():
    cache = TTLCache(10)

    async def load():
        await asyncio.sleep(0.01)
        return "stale"

    pending = asyncio.ensure_future(cache.load("k", load))
    await asyncio.sleep(0)
    cache.clear()  # the data changed while it was being read
    assert await pending == "stale"
    assert cache.get("k", None) is None


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_names_never_seen_before_resolve_without_a_query_once_the_rows_are_held():
    rooms = await sync_to_async(Channel.objects.create)(name="rooms", include_subchannels=True)
    registry.cache.clear()
    assert (await registry.aresolve("rooms/1")).id == rooms.pk

    def count_queries():
        with CaptureQueriesContext(connection) as queries:
            resolved = asyncio.run(resolve_all())
        return len(queries), resolved

    async def resolve_all():
        return [await registry.aresolve(f"rooms/{n}") for n in range(2, 200)]

    queries, resolved = await sync_to_async(count_queries, thread_sensitive=False)()
    assert queries == 0
    assert {info.id for info in resolved} == {rooms.pk}


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_a_channel_created_after_the_rows_were_read_resolves_at_once():
    await sync_to_async(Channel.objects.create)(name="old")
    assert (await registry.aresolve("old")).name == "old"
    # Created behind the cache's back (no announcement has cleared it yet).
    await sync_to_async(Channel.objects.bulk_create)([Channel(name="new")])
    assert (await registry.aresolve("new")).name == "new"


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_with_more_rows_than_the_snapshot_holds_names_resolve_one_by_one(monkeypatch):
    monkeypatch.setattr(registry, "SNAPSHOT_MAX_ROWS", 1)
    for name in ("a", "b"):
        await sync_to_async(Channel.objects.create)(name=name)
    registry.cache.clear()
    assert (await registry.aresolve("a")).name == "a"
    assert await registry.aresolve("a/1") is None
    assert registry.cache.get("a") is not None  # kept by name
