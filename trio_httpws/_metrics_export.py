"""The Prometheus side of the metrics: the one module that imports prometheus_client.

A custom collector turns one proxy's ``Stats`` (plain integers, counted on the hot path
without a lock) into metric families when the metrics listener is scraped; the library writes
the exposition format. Each proxy gets a registry of its own, holding that collector and the
library's default ones (process, platform, garbage collector): a program (or a test) may run
many proxies, and one registry refuses a metric name twice.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from ._stats import (
    DIRECTIONS,
    OUTCOMES,
    STATUS_CLASSES,
    Flow,
    Histogram,
    Phase,
    Refused,
    Stats,
    WsKind,
    label,
)

#: The Content-Type of ``render``'s bytes.
CONTENT_TYPE = CONTENT_TYPE_LATEST
PREFIX = "trio_httpws_"


def _histogram(name: str, documentation: str, histogram: Histogram) -> HistogramMetricFamily:
    bounds = [repr(float(bound)) for bound in histogram.bounds] + ["+Inf"]
    cumulative = histogram.cumulative()
    return HistogramMetricFamily(
        PREFIX + name,
        documentation,
        buckets=list(zip(bounds, cumulative, strict=True)),
        sum_value=histogram.sum,
    )


class StatsCollector:
    """Reads one proxy's ``Stats`` at each scrape (in the proxy's trio thread)."""

    def __init__(self, stats: Stats) -> None:
        self._stats = stats

    def describe(self) -> Iterator[Metric]:
        return self.collect()

    def collect(self) -> Iterator[Metric]:
        stats = self._stats
        requests = CounterMetricFamily(
            PREFIX + "requests",
            "HTTP requests answered, by flow (reverse: on the proxy's port; tunnel: inside "
            "/http_over_websocket) and status class (none: ended without a status)",
            labels=["flow", "status_class"],
        )
        body = CounterMetricFamily(
            PREFIX + "http_body_bytes",
            "HTTP message body bytes, by flow and direction (the client's side of the proxy)",
            labels=["flow", "direction"],
        )
        for flow in Flow:
            for index, status_class in enumerate(STATUS_CLASSES):
                requests.add_metric([label(flow), status_class], stats.requests[flow][index])
            for index, direction in enumerate(DIRECTIONS):
                body.add_metric([label(flow), direction], stats.body_bytes[flow][index])
        yield requests
        yield body

        refusals = CounterMetricFamily(
            PREFIX + "refusals",
            "Requests, WebSockets and tunnelled messages the proxy refused itself, by reason",
            labels=["reason"],
        )
        for reason in Refused:
            refusals.add_metric([label(reason)], stats.refusals[reason])
        yield refusals

        open_now = GaugeMetricFamily(
            PREFIX + "websockets_open",
            "Client WebSockets being served now (from the upgrade request on), by kind",
            labels=["kind"],
        )
        ended = CounterMetricFamily(
            PREFIX + "websockets",
            "Client WebSockets that ended, by kind and outcome (the access line's outcome)",
            labels=["kind", "outcome"],
        )
        payload = CounterMetricFamily(
            PREFIX + "websocket_payload_bytes",
            "Payload of WebSocket data messages (text as UTF-8), by kind and direction, on the "
            "client's side of the proxy; open sockets included",
            labels=["kind", "direction"],
        )
        ws_bytes = stats.ws_bytes()
        for kind in WsKind:
            open_now.add_metric([label(kind)], stats.ws_open[kind])
            for index, outcome in enumerate(OUTCOMES):
                ended.add_metric([label(kind), outcome.value], stats.ws_ended[kind][index])
            for index, direction in enumerate(DIRECTIONS):
                payload.add_metric([label(kind), direction], ws_bytes[kind][index])
        yield open_now
        yield ended
        yield payload

        pool = stats.pool
        yield GaugeMetricFamily(
            PREFIX + "backend_connections_open",
            "Pooled HTTP connections to the backend now open, in use or idle",
            value=pool.open,
        )
        yield GaugeMetricFamily(
            PREFIX + "backend_connections_idle",
            "Pooled HTTP connections to the backend now idle (kept alive for reuse)",
            value=pool.idle,
        )
        yield CounterMetricFamily(
            PREFIX + "backend_connect_failures",
            "Connections to the backend that failed (refused, unreachable, TLS), timeouts apart",
            value=pool.connect_failures,
        )
        timeouts = CounterMetricFamily(
            PREFIX + "backend_timeouts",
            "Waits on the backend that ran out, by phase (slot: for one of max_connections)",
            labels=["phase"],
        )
        for phase in Phase:
            timeouts.add_metric([label(phase)], pool.timeouts[phase])
        yield timeouts
        yield _histogram(
            "backend_first_byte_seconds",
            "Seconds from taking (or opening) a backend connection for a request to its "
            "response head, per HTTP request sent to the backend",
            pool.first_byte,
        )
        yield _histogram(
            "backend_slot_wait_seconds",
            "Seconds a request waited for one of max_connections slots, for those that waited",
            pool.slot_wait,
        )


def registry_for(stats: Stats) -> CollectorRegistry:
    """A registry of its own for one proxy: its counts and the process's."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    registry.register(StatsCollector(stats))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """The Prometheus text format of everything in ``registry``."""
    return generate_latest(registry)
