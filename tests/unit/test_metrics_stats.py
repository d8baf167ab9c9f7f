"""The metrics' counts and their exposition, without a socket: ``_stats`` and the collector."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from trio_httpws import Config, ConfigError
from trio_httpws._config import settings_from_env
from trio_httpws._metrics_export import registry_for, render
from trio_httpws._outcome import Outcome
from trio_httpws._stats import (
    SECONDS_BUCKETS,
    Flow,
    Histogram,
    Phase,
    Refused,
    Stats,
    WsKind,
    payload_size,
    status_class,
)


def samples(stats: Stats) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a scrape of ``stats``, by name and labels."""
    text = render(registry_for(stats)).decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(
    found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return found[(name, frozenset(labels.items()))]


def test_payload_is_counted_in_bytes_as_sent() -> None:
    assert payload_size("hello") == 5
    assert payload_size("héllo ✓") == len("héllo ✓".encode())  # 7 characters, 10 bytes
    assert payload_size(b"\x00\xff") == 2
    assert payload_size(bytearray(3)) == 3
    assert payload_size(memoryview(b"abcd")[1:]) == 3


@pytest.mark.parametrize(
    ("status", "index"), [(101, 0), (200, 1), (304, 2), (499, 3), (503, 4), (None, 5), (99, 5)]
)
def test_status_classes(status: int | None, index: int) -> None:
    assert status_class(status) == index


@given(st.lists(st.floats(min_value=0, max_value=1000, allow_nan=False)))
def test_a_histogram_holds_every_observation_once(values: list[float]) -> None:
    histogram = Histogram()
    for v in values:
        histogram.observe(v)
    cumulative = histogram.cumulative()
    assert cumulative[-1] == histogram.count == len(values)
    assert cumulative == sorted(cumulative)
    for bound, below in zip(SECONDS_BUCKETS, cumulative, strict=False):
        assert below == sum(1 for v in values if v <= bound)  # Prometheus's "le"
    assert histogram.sum == pytest.approx(sum(values))


def test_every_series_is_there_at_zero_and_no_label_holds_a_path() -> None:
    found = samples(Stats())
    ours = {key: v for key, v in found.items() if key[0].startswith("trio_httpws_")}
    assert all(v == 0 for v in ours.values())
    assert value(found, "trio_httpws_requests_total", flow="tunnel", status_class="5xx") == 0
    assert value(found, "trio_httpws_refusals_total", reason="head_timeout") == 0
    assert value(found, "trio_httpws_websockets_total", kind="diagnose", outcome="shutdown") == 0
    assert value(found, "trio_httpws_backend_timeouts_total", phase="slot") == 0
    assert value(found, "trio_httpws_backend_first_byte_seconds_count") == 0
    labels = {name for (_, pairs) in ours for name, _ in pairs}
    assert labels == {
        "flow",
        "status_class",
        "direction",
        "reason",
        "kind",
        "outcome",
        "phase",
        "le",
    }
    # 2 flows x 6 classes, 2 x 2 body, 7 reasons, 4 kinds x (1 + 13 outcomes + 2 directions),
    # 2 gauges, 1 counter, 4 phases, 2 histograms x (18 buckets + sum + count).
    assert len(ours) == 12 + 4 + 7 + 4 * (1 + len(Outcome) + 2) + 2 + 1 + 4 + 2 * 20
    # The library's default collectors: the process's own.
    assert any(name.startswith("process_") for name, _ in found)
    assert any(name.startswith("python_gc_") for name, _ in found)


def test_counts_reach_the_scrape() -> None:
    stats = Stats()
    stats.request(Flow.REVERSE, 200, 120, 0)
    stats.request(Flow.REVERSE, 404, 10, 5)
    stats.request(Flow.TUNNEL, None, 0, 0)
    stats.refused(Refused.ORIGIN)
    stats.pool.open, stats.pool.idle = 3, 2
    stats.pool.timeouts[Phase.READ] += 1
    stats.pool.first_byte.observe(0.003)
    stats.pool.first_byte.observe(400)
    found = samples(stats)
    assert value(found, "trio_httpws_requests_total", flow="reverse", status_class="2xx") == 1
    assert value(found, "trio_httpws_requests_total", flow="reverse", status_class="4xx") == 1
    assert value(found, "trio_httpws_requests_total", flow="tunnel", status_class="none") == 1
    assert (
        value(found, "trio_httpws_http_body_bytes_total", flow="reverse", direction="to_client")
        == 130
    )
    assert (
        value(found, "trio_httpws_http_body_bytes_total", flow="reverse", direction="from_client")
        == 5
    )
    assert value(found, "trio_httpws_refusals_total", reason="origin") == 1
    assert value(found, "trio_httpws_backend_connections_open") == 3
    assert value(found, "trio_httpws_backend_connections_idle") == 2
    assert value(found, "trio_httpws_backend_timeouts_total", phase="read") == 1
    first_byte = "trio_httpws_backend_first_byte_seconds"
    assert value(found, first_byte + "_bucket", le="0.0025") == 0
    assert value(found, first_byte + "_bucket", le="0.005") == 1
    assert value(found, first_byte + "_bucket", le="300.0") == 1
    assert value(found, first_byte + "_bucket", le="+Inf") == 2
    assert value(found, first_byte + "_count") == 2
    assert value(found, first_byte + "_sum") == pytest.approx(400.003)


def test_a_websocket_is_counted_open_live_and_by_how_it_ended() -> None:
    stats = Stats()
    tally = stats.ws_opened(WsKind.RELAY)
    tally.to_client.payload += 100
    tally.from_client.payload += 7
    found = samples(stats)
    assert value(found, "trio_httpws_websockets_open", kind="relay") == 1
    # An open socket's payload shows while it is open, not only once it ends.
    bytes_name = "trio_httpws_websocket_payload_bytes_total"
    assert value(found, bytes_name, kind="relay", direction="to_client") == 100
    tally.to_client.payload += 1
    stats.ws_closed(tally, Outcome.BACKEND_CLOSE)
    other = stats.ws_opened(WsKind.RELAY)
    other.from_client.payload += 2
    stats.ws_refused(WsKind.TUNNEL, Refused.BAD_REQUEST)
    found = samples(stats)
    assert value(found, "trio_httpws_websockets_open", kind="relay") == 1
    assert value(found, "trio_httpws_websockets_total", kind="relay", outcome="backend_close") == 1
    assert value(found, bytes_name, kind="relay", direction="to_client") == 101
    assert value(found, bytes_name, kind="relay", direction="from_client") == 9
    assert value(found, "trio_httpws_websockets_total", kind="tunnel", outcome="bad_request") == 1
    assert value(found, "trio_httpws_websockets_open", kind="tunnel") == 0
    assert value(found, "trio_httpws_refusals_total", reason="bad_request") == 1


def test_each_proxy_has_a_registry_of_its_own() -> None:
    # The default registry refuses a second collector of the same names: a program (or a
    # test run) with many proxies must not share one.
    first, second = Stats(), Stats()
    first.refused(Refused.HOST)
    assert value(samples(first), "trio_httpws_refusals_total", reason="host") == 1
    assert value(samples(second), "trio_httpws_refusals_total", reason="host") == 0


def test_the_metrics_settings() -> None:
    assert Config().metrics_port is None
    assert Config().metrics_host == "127.0.0.1"
    env = {"TRIO_HTTPWS_METRICS_PORT": "9100", "TRIO_HTTPWS_METRICS_HOST": "0.0.0.0"}
    assert settings_from_env(env) == {"metrics_port": 9100, "metrics_host": "0.0.0.0"}
    with pytest.raises(ConfigError, match="TRIO_HTTPWS_METRICS_PORT"):
        settings_from_env({"TRIO_HTTPWS_METRICS_PORT": "70000"})
    with pytest.raises(ConfigError, match="metrics_port"):
        Config(metrics_port=-1)
