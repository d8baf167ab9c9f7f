"""A few seconds of the soak (bench/soak.py) in the default suite, against the session's Jupyter.

The full soak (200 sockets x 10 in flight for 60 s, RSS and fd flatness) is ``nox -s soak``.
"""

from __future__ import annotations

import random

import pytest

from bench.soak import Backend, Check, Sample, SoakConfig, resource_checks, run_soak

from ..support.jupyter import Jupyter


async def test_short_soak(jupyter: Jupyter) -> None:
    cfg = SoakConfig(
        sockets=10,
        in_flight=4,
        duration=4.0,
        kernels=1,
        big_size=1024 * 1024,
        request_timeout=60,
        reverse_clients=2,
    )
    lines: list[str] = []
    result = await run_soak(cfg, Backend(jupyter.url, jupyter.token), echo=lines.append)
    report = "\n".join(lines) + result.summary()
    stats = result.stats
    assert stats.lost == 0, report
    assert stats.mistagged == 0, report
    assert stats.failed == 0, report
    assert stats.sockets_broken == 0, report
    assert stats.responses > 0, report
    assert all(stats.kinds[kind] > 0 for kind in ("status", "list", "small", "big")), report
    assert stats.ws_replies > 0, report
    # Both kernel sockets (proxied_ws and the plain relay) and every kind of reverse-proxy GET.
    assert set(stats.ws_per_socket) == {"proxied 0", "plain 0"}, report
    assert all(n > 0 for n in stats.ws_per_socket.values()), report
    assert result.check("reverse-proxy HTTP answered").ok, report
    assert all(stats.reverse[kind] > 0 for kind in ("status", "list", "small", "big")), report
    assert stats.ws_lost == stats.ws_mistagged == stats.ws_failed == 0, report
    assert result.check("fds back to baseline after the run").ok, report
    assert result.check("proxy stopped cleanly on SIGTERM").ok, report


# -- the RSS verdict, on made-up series (60 samples, one a second) -------------------------------


def series(rss_mb: list[float], fds: int | list[int] = 300) -> list[Sample]:
    fd_list = fds if isinstance(fds, list) else [fds] * len(rss_mb)
    return [
        Sample(float(t), int(mb * 1024), fd, t * 100, t)
        for t, (mb, fd) in enumerate(zip(rss_mb, fd_list, strict=True))
    ]


def verdict(rss_mb: list[float], fds: int | list[int] = 300) -> dict[str, bool | None]:
    checks: list[Check] = resource_checks(series(rss_mb, fds), SoakConfig())
    return {c.name: c.ok for c in checks}


ALL_PASS = {
    "RSS flat through the last third": True,
    "RSS peak bounded": True,
    "fds bounded": True,
}


def test_a_plateau_passes() -> None:
    # The shape of the 60 s run in the README: a climb while buffers fill, a plateau with some
    # noise, and a one-time step while the last requests drain, which the old "peak within 10 MB
    # of the warm-up's end" check failed.
    climb = [100 + 65 * t / 15 for t in range(15)]
    noise = random.Random(1)
    plateau = [165 + noise.uniform(-1.5, 1.5) for _ in range(40)]
    assert verdict(climb + plateau + [176] * 3) == ALL_PASS


def test_a_slow_warm_up_then_a_plateau_passes() -> None:
    # A real run on a loaded machine (50 sockets x 4 in flight, 30 s of load, 60 s with the
    # drain): RSS still rose through the middle third and was flat for the last 25 samples.
    rss = [44] * 7 + [45, 48, 53, 55, 58, 63, 67, 71, 76, 82, 86, 89, 92, 95, 96, 99, 101, 104]
    rss += [105, 107, 108, 109, 110, 112, 113, 115, 116, 118] + [120] * 25
    assert verdict(rss) == ALL_PASS


@pytest.mark.parametrize("mb_per_s", [0.25, 0.5, 2.0])
def test_steady_growth_fails(mb_per_s: float) -> None:
    result = verdict([100 + mb_per_s * t for t in range(60)])
    assert result["RSS flat through the last third"] is False
    assert result["fds bounded"] is True


def test_growth_that_continues_after_a_plateau_fails() -> None:
    # Flat for a while, then a leak starts: 0.3 MB/s through the last third.
    result = verdict([150.0] * 40 + [150 + 0.3 * t for t in range(1, 21)])
    assert result["RSS flat through the last third"] is False


def test_a_late_runaway_fails_on_its_peak() -> None:
    result = verdict([165.0] * 55 + [165 + 10 * t for t in range(1, 6)])
    assert result["RSS peak bounded"] is False


def test_growing_fds_fail() -> None:
    assert verdict([165.0] * 60, fds=[300 + t for t in range(60)])["fds bounded"] is False


def test_too_short_a_run_is_not_judged() -> None:
    assert set(verdict([165.0] * 14).values()) == {None}
