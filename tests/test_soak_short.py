"""A few seconds of the soak (tests/soak.py) in the default suite, against the session's Jupyter.

The full soak (200 sockets x 10 in flight for 60 s, RSS and fd flatness) is ``nox -s soak``.
"""

from __future__ import annotations

from .conftest import Jupyter
from .soak import Backend, SoakConfig, run_soak


async def test_short_soak(jupyter: Jupyter) -> None:
    cfg = SoakConfig(
        sockets=10, in_flight=4, duration=4.0, kernels=1, big_size=1024 * 1024, request_timeout=60
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
    assert stats.ws_lost == stats.ws_mistagged == stats.ws_failed == 0, report
    assert result.check("fds back to baseline after the run").ok, report
    assert result.check("proxy stopped cleanly on SIGTERM").ok, report
