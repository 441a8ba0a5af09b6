"""Soak: minutes of connection churn and publishing, with one Redis restart in the middle.

    .venv/bin/python bench/soak.py              # 10 minutes (make soak)
    .venv/bin/python bench/soak.py --minutes 2  # a quick one

It starts its own redis-server (an append-only file synced on every write, so what
Redis acknowledged survives the restart) and two uvicorn processes on loopback, and
runs, from this process:

* publishers, one per server process, publishing one at a time in turn on a channel
  with history and on one without, each publication with an idempotency key
  (``unknown_outcome`` is retried with it until Redis answers for the key);
* steady subscribers on both processes, which recover the channel with history after a
  ``missed`` notice, as the JS client does;
* churning connections: each connects, authenticates, subscribes to a channel with
  presence and to one of its own, stays a few seconds and leaves, while as many others
  keep coming;
* one Redis SIGKILL and restart half-way through.

At the end it checks, with exact accounting, that every acknowledged publication on the
channel with history reached every steady subscriber once and in order, that none
answered ``unavailable`` was delivered, that publications lost on the channel without
history were all announced by a ``missed`` notice, that no presence entry outlived its
connection, and that the servers' RSS stayed flat after warming up. It prints a short
report and exits non-zero if a check failed. It is not part of ``make test``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import rss_kib  # noqa: E402
from tests.accounting import Connection, Publisher, Subscriber, delivery_report  # noqa: E402
from tests.services import AsgiServer, RedisServer  # noqa: E402

KEPT, PLAIN, ROOM = "soak/kept", "soak/plain", "soak/room"
PRESENCE_TTL = 6
# RSS growth allowed between the warmed-up part of the run and its end.
FLAT = 0.05
VERBOSE = False


def prepare(workdir: Path, history_size: int) -> tuple[str, str]:
    database = str(workdir / "soak.sqlite3")
    env = {**os.environ, "DATABASE_PATH": database, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    script = (
        "import django; django.setup();"
        "from django.core.management import call_command; call_command('migrate', verbosity=0);"
        "from realtime.models import AccessKey, Channel;"
        f"Channel.objects.create(name='{KEPT}', history_size={history_size}, history_ttl=0);"
        f"Channel.objects.create(name='{PLAIN}');"
        f"Channel.objects.create(name='{ROOM}', presence=True, join_leave=True, include_subchannels=True);"
        "print(AccessKey.objects.create_key(name='soak', access='read-write', all_channels=True)[1])"
    )
    out = subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True, text=True)
    out.check_returncode()
    return database, out.stdout.strip().splitlines()[-1]


class Churn:
    """Keeps ``size`` short-lived connections coming and going."""

    def __init__(self, urls: list[str], secret: str, size: int, lifetime: tuple[float, float]) -> None:
        self.urls = urls
        self.secret = secret
        self.size = size
        self.lifetime = lifetime
        self.opened = self.closed = self.failed = 0
        self.refusals: dict[str, int] = {}
        self.ids = itertools.count(1)
        self.stopping = asyncio.Event()

    async def run(self) -> None:
        await asyncio.gather(*(self._one_after_another(slot) for slot in range(self.size)))

    async def _one_after_another(self, slot: int) -> None:
        await asyncio.sleep(random.uniform(0, self.lifetime[1]))
        while not self.stopping.is_set():
            connection = Connection(self.urls[slot % len(self.urls)])
            try:
                await connection.open()
                self.opened += 1
                replies = [
                    await connection.request("auth", {"secret": self.secret}, timeout=30),
                    await connection.request("subscribe", {"channel": ROOM}, timeout=30),
                    await connection.request(
                        "subscribe", {"channel": f"{ROOM}/{next(self.ids)}"}, timeout=30
                    ),
                ]
                for reply in replies:
                    if not reply.get("ok"):
                        self.refusals[reply["err"]] = self.refusals.get(reply["err"], 0) + 1
                try:
                    await asyncio.wait_for(self.stopping.wait(), random.uniform(*self.lifetime))
                except TimeoutError:
                    pass
            except Exception:
                self.failed += 1
                await asyncio.sleep(1)
            finally:
                await connection.close()
                self.closed += 1


async def publish_steadily(publisher: Publisher, rate: float, stopping: asyncio.Event) -> None:
    count = 0
    while not stopping.is_set():
        started = time.monotonic()
        for name in (KEPT, PLAIN):
            count += 1
            await publisher.publish(name, f"{publisher.tag}:{count}", retries=200)
        await asyncio.sleep(max(0.0, 2 / rate - (time.monotonic() - started)))


async def soak(options, urls, secret, redis, servers) -> dict:
    seconds = options.minutes * 60
    subscribers = []
    for index in range(options.subscribers):
        subscriber = Subscriber(urls[index % len(urls)], secret, {KEPT: True, PLAIN: False})
        subscribers.append(await subscriber.start())
    publishers = [await Publisher(url, secret, f"p{n}").start() for n, url in enumerate(urls)]
    stopping = asyncio.Event()
    churn = Churn(urls, secret, options.churn, (1.0, 8.0))
    tasks = [
        asyncio.create_task(publish_steadily(p, options.rate / len(publishers), stopping)) for p in publishers
    ]
    tasks.append(asyncio.create_task(churn.run()))
    samples = []
    started = time.monotonic()
    restarted = None
    while time.monotonic() - started < seconds:
        await asyncio.sleep(5)
        elapsed = time.monotonic() - started
        samples.append((elapsed, [rss_kib(server.process.pid) for server in servers]))
        if restarted is None and elapsed >= seconds / 2:
            redis.kill()
            redis.start()
            restarted = elapsed
            print(f"  {elapsed:5.0f}s  Redis killed and restarted", flush=True)
        if len(samples) % 12 == 0:
            rss = ", ".join(f"{kib / 1024:.0f}" for kib in samples[-1][1])
            print(f"  {elapsed:5.0f}s  RSS {rss} MiB; {churn.opened} connections so far", flush=True)
    stopping.set()
    churn.stopping.set()
    await asyncio.gather(*tasks)
    await asyncio.sleep(5)  # deliveries in flight
    await asyncio.sleep(PRESENCE_TTL)  # entries whose removal Redis missed expire
    checker = await Connection(urls[0]).open()
    await checker.request("auth", {"secret": secret})
    presence = await checker.request("presence", {"channel": ROOM})
    await checker.close()
    for client in [*publishers, *subscribers]:
        await client.connection.close()
    return {
        "subscribers": subscribers,
        "publishers": publishers,
        "churn": churn,
        "samples": samples,
        "restarted": restarted,
        "presence": presence,
        "seconds": time.monotonic() - started,
    }


def report(result: dict) -> bool:
    ok = True
    publishers, subscribers, churn = result["publishers"], result["subscribers"], result["churn"]
    print(f"\nSoak: {result['seconds'] / 60:.1f} minutes, Redis restarted at {result['restarted']:.0f}s")
    print(
        f"Churn: {churn.opened} connections opened, {churn.closed} closed, {churn.failed} failed to open; "
        f"refusals {churn.refusals or 'none'}"
    )
    replies: dict[str, int] = {}
    unresolved = 0
    for publisher in publishers:
        for code, count in publisher.counts().items():
            replies[code] = replies.get(code, 0) + count
        unresolved += sum(1 for o in publisher.outcomes if o.final == "unknown_outcome")
    total = sum(len(p.outcomes) for p in publishers)
    print(f"Publications: {total}; replies {replies}; still unknown after retries: {unresolved}")
    ok &= unresolved == 0
    for name in (KEPT, PLAIN):
        totals = {"lost": 0, "unexplained": 0, "twice": 0, "out_of_order": 0, "refused_delivered": 0}
        received = notices = 0
        for subscriber in subscribers:
            for publisher in publishers:
                events = [
                    e
                    for e in subscriber.events[name]
                    if e[0] != "pub" or e[1].startswith(publisher.tag + ":")
                ]
                acknowledged = sorted(
                    (o for o in publisher.outcomes if o.channel == name and o.final == "ok"),
                    key=lambda o: o.offset or 0,
                )
                r = delivery_report([o.data for o in acknowledged], publisher.refused(name), events)
                received += r["received"]
                for key in totals:
                    totals[key] += len(r[key]) if isinstance(r[key], list) else r[key]
            notices += len(subscriber.notices(name))
            if VERBOSE:
                number, got = subscribers.index(subscriber) + 1, len(subscriber.received(name))
                print(
                    f"    subscriber {number}: {got} received, "
                    f"dropped {subscriber.dropped}, notices {subscriber.notices(name)}"
                )
        acknowledged = sum(len(p.acknowledged(name)) for p in publishers)
        print(
            f"{name}: {acknowledged} acknowledged x {len(subscribers)} subscribers, {received} received; "
            f"lost {totals['lost']} (unexplained {totals['unexplained']}), twice {totals['twice']}, "
            f"out of order {totals['out_of_order']}, refused yet delivered {totals['refused_delivered']}; "
            f"notices {notices}"
        )
        bad = totals["unexplained"] + totals["twice"] + totals["out_of_order"] + totals["refused_delivered"]
        if name == KEPT:
            bad += totals["lost"]
        ok &= bad == 0
    members = result["presence"].get("presence", {}).get("members")
    print(f"Presence entries left on {ROOM} after every churning connection left: {members}")
    ok &= members == []
    samples = result["samples"]
    warm = [s for s in samples if s[0] >= samples[-1][0] * 0.2]
    if len(warm) >= 4:
        for index in range(len(samples[0][1])):
            early = statistics.median(s[1][index] for s in warm[: len(warm) // 3])
            late = statistics.median(s[1][index] for s in warm[-(len(warm) // 3) :])
            peak = max(s[1][index] for s in samples)
            growth = (late - early) / early
            print(
                f"Server {index + 1} RSS: {samples[0][1][index] / 1024:.0f} MiB at first, "
                f"{early / 1024:.0f} MiB warmed up, {late / 1024:.0f} MiB at the end "
                f"({growth:+.1%}), peak {peak / 1024:.0f} MiB"
            )
            ok &= growth <= FLAT
    print("Verdict:", "nothing lost, RSS flat" if ok else "FAILED (see above)")
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--rate", type=float, default=20, help="publications per second, all publishers")
    parser.add_argument("--churn", type=int, default=150, help="churning connections at any time")
    parser.add_argument("--subscribers", type=int, default=4, help="steady subscribers")
    parser.add_argument("--verbose", action="store_true", help="what each steady subscriber got")
    options = parser.parse_args()
    global VERBOSE
    VERBOSE = options.verbose
    os.environ.update(
        DJANGO_DEBUG="0", DJANGO_ALLOWED_HOSTS="127.0.0.1,localhost", REALTIME_LOG_LEVEL="WARNING"
    )
    workdir = Path(tempfile.mkdtemp(prefix="realtime-soak-"))
    history = int(options.rate * options.minutes * 60 * 1.5) + 1000
    database, secret = prepare(workdir, history)
    redis = RedisServer(workdir, persistent=True).start()
    realtime = {
        "PRESENCE_TTL": PRESENCE_TTL,
        "REDIS_TIMEOUT": 2,
        "REDIS_CLOCK_SKEW": 0.5,
        "RECOVERY_LIMIT": 5000,
        "MAX_PENDING_FRAMES": 10000,
    }
    servers = [
        AsgiServer(
            workdir, database=database, redis_url=redis.url, realtime=realtime, server="uvicorn"
        ).start()
        for _ in range(2)
    ]
    ports = [server.port for server in servers]
    print(f"Soak for {options.minutes:g} minutes in {workdir}: Redis {redis.port}, servers {ports}")
    try:
        result = asyncio.run(soak(options, [server.ws_url for server in servers], secret, redis, servers))
        passed = report(result)
    finally:
        for server in servers:
            server.stop()
        redis.stop()
    sys.exit(0 if passed else 1)


if __name__ == "__main__":
    main()
