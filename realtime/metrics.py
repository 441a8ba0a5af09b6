"""Prometheus metrics of one server process: ``GET /realtime/metrics``.

The numbers are read when Prometheus scrapes, by a custom collector: gauges from the
live hubs (connections, subscriptions), counters from ``realtime.stats`` (plain
integers the serving code adds to). Nothing on the fan-out path touches
``prometheus_client``. Each server process answers for itself, so Prometheus scrapes
every process on its own port (see docs/operations.md); ``prometheus_client``'s
multiprocess mode is not used, because these values live in each process's memory,
not in files.

Who may read: the addresses in ``REALTIME["METRICS_ALLOWED_IPS"]``, a request with
``Authorization: Bearer`` an admin key or a read-write key on all channels, or a staff
user's session.
"""

from __future__ import annotations

import ipaddress
import threading

from django.http import HttpResponse

from . import __version__, operations, runtime, stats
from .api_views import operator, serve_here
from .conf import settings
from .errors import AccessDenied, ErrorCode, InvalidCredentials
from .views import error_boundary, error_response

PROTOCOLS = ("native", "bayeux")


class RealtimeCollector:
    """Collects realtime's metrics (register it on a ``CollectorRegistry``)."""

    def collect(self):
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        counters = stats.counters
        connections = dict.fromkeys(PROTOCOLS, 0)
        authenticated = dict.fromkeys(PROTOCOLS, 0)
        subscriptions = channels = 0
        for hub in runtime.hubs():
            counted = operations.counts(hub)
            for kind, count in counted["connections"].items():
                connections[kind] = connections.get(kind, 0) + count
            for kind, count in counted["authenticated"].items():
                authenticated[kind] = authenticated.get(kind, 0) + count
            subscriptions += counted["subscriptions"]
            channels += counted["channels"]

        info = GaugeMetricFamily(
            "realtime_build_info", "The realtime version this process runs.", labels=["version"]
        )
        info.add_metric([__version__], 1)
        yield info
        yield _labelled(
            GaugeMetricFamily, "realtime_connections", "Open connections.", "protocol", connections
        )
        yield _labelled(
            GaugeMetricFamily,
            "realtime_connections_authenticated",
            "Open connections that are authenticated.",
            "protocol",
            authenticated,
        )
        yield GaugeMetricFamily(
            "realtime_subscriptions", "Subscriptions held (patterns included).", subscriptions
        )
        yield GaugeMetricFamily("realtime_channels", "Channels with local subscribers.", channels)
        simple = [
            (
                "realtime_publications",
                "Publications this process took from publishers and handed to the broker.",
                counters.published,
            ),
            ("realtime_deliveries", "Frames handed to local subscribers.", counters.delivered),
            (
                "realtime_deliveries_dropped",
                "Frames not sent: a slow reader's discarded queue, or a connection already closing.",
                counters.dropped,
            ),
            (
                "realtime_slow_consumer_closes",
                "Connections closed for reading too slowly (close code 4004).",
                counters.too_slow,
            ),
            (
                "realtime_rate_limited_frames",
                "Client frames refused with rate_limited.",
                counters.rate_limited,
            ),
            (
                "realtime_redis_errors",
                "Redis commands that failed and broker probes that did not come back.",
                counters.redis_errors,
            ),
            (
                "realtime_broker_outage_seconds",
                "Seconds this process found the broker unreachable.",
                counters.outage_seconds,
            ),
            ("realtime_history_reads", "Reads of a channel's history.", counters.history_reads),
        ]
        for name, documentation, value in simple:
            yield CounterMetricFamily(name, documentation, value)
        closes = CounterMetricFamily(
            "realtime_connections_closed",
            "Closed connections, by who closed them and the close code.",
            labels=["initiator", "code"],
        )
        for (initiator, code), count in sorted(dict(counters.closes).items()):
            closes.add_metric([initiator, code], count)
        yield closes
        yield _labelled(
            CounterMetricFamily,
            "realtime_auth_failures",
            "Failed authentications.",
            "protocol",
            {"native": 0, "bayeux": 0, "http": 0, **counters.auth_failures},
        )
        yield _labelled(
            CounterMetricFamily,
            "realtime_api_commands",
            "Server API commands this process carried out.",
            "call",
            dict(counters.commands),
        )
        if counters.broker_up is not None:
            yield GaugeMetricFamily(
                "realtime_broker_up", "1 if the last broker probe came back, else 0.", counters.broker_up
            )
        trip = counters.round_trip
        yield HistogramMetricFamily(
            "realtime_broker_round_trip_seconds",
            "Round trips of the broker probe (once a second) through Redis and back.",
            buckets=trip.cumulative(),
            sum_value=trip.total,
        )
        # Webhook deliveries and failures (realtime_webhook_deliveries_total,
        # realtime_webhook_failures_total) belong here once webhooks exist.


def _labelled(family, name: str, documentation: str, label: str, values: dict):
    metric = family(name, documentation, labels=[label])
    for key, value in sorted(values.items()):
        metric.add_metric([key], value)
    return metric


_registry = None
_lock = threading.Lock()


def registry():
    """The registry the endpoint serves: realtime's collector and the process's own
    (CPU, memory, file descriptors, garbage collection)."""
    global _registry
    from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector

    with _lock:
        if _registry is None:
            made = CollectorRegistry()
            made.register(RealtimeCollector())
            ProcessCollector(registry=made)
            PlatformCollector(registry=made)
            GCCollector(registry=made)
            _registry = made
    return _registry


def address_allowed(address: str | None) -> bool:
    """Whether ``address`` is in ``METRICS_ALLOWED_IPS``."""
    networks = settings.METRICS_ALLOWED_IPS
    if not networks or not address:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(network, strict=False) for network in networks)


async def _may_read(request) -> None:
    if address_allowed(request.META.get("REMOTE_ADDR")):
        return
    if "Authorization" in request.headers:
        await operator(request)
        return
    user = await request.auser() if hasattr(request, "auser") else getattr(request, "user", None)
    if user is not None and user.is_active and user.is_staff:
        return
    if user is not None and user.is_authenticated:
        raise AccessDenied("the metrics need a staff user")
    # Asking for credentials: a 401 with WWW-Authenticate.
    raise InvalidCredentials("send Authorization: Bearer <secret>, or log in as staff")


@error_boundary
async def metrics_view(request) -> HttpResponse:
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    if request.method not in ("GET", "HEAD"):
        response = error_response(ErrorCode.INVALID_DATA, 405, "use GET")
        response["Allow"] = "GET, HEAD"
        return response
    await _may_read(request)
    await serve_here(request)
    response = HttpResponse(generate_latest(registry()), content_type=CONTENT_TYPE_LATEST)
    response["Cache-Control"] = "no-store"
    return response
