"""The benchmark: ``nox -s bench`` (or ``python bench/run.py
--original-python PATH`` from an environment with trio_httpws installed).

One Notebook 6 server (Python 3.11, the original ``jupyter_http_over_ws`` 0.0.8 enabled, plus
``bench_ext`` for the test endpoints) is the backend of every seat (a column of the table):

- ``trio_httpws``: hypercorn's trio worker serving ``trio_httpws:app`` in front of it (the
  "hypercorn door");
- ``door``: the ``trio-httpws`` command on its own door (``--server trio``), default logging;
- ``original``: the extension inside that very server;
- ``chp``, ``nginx``, ``splice``: configurable-http-proxy 4, nginx (1 worker) and a bare trio
  TCP splice (``bare_splice.py``) in front of it, in the reverse-proxy and relay units only;
- ``direct``: the server itself over plain HTTP/1.1 and WebSocket (the limit).

Six units also run ``hypercorn alone``: the same hypercorn serving ``empty_app.py``, no
backend, reached as the unit reaches trio_httpws (the tunnel, or plain HTTP and WebSockets);
its extra rows and notes show the ceiling hypercorn sets.

Every scenario runs each of its seats in turn, rotating the order every round, ``--runs`` rounds
(at least 3); a cell is the median. Prints one table and writes ``results.json`` and
``results.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import trio
from bench_client import BenchFailure, login_cookie, start_kernel
from bench_procs import (
    CHP_DEFAULT,
    EMPTY_APP,
    HERE,
    REPO,
    Process,
    check_original,
    machine_info,
    peer_versions,
    raise_fd_limit,
    start_chp,
    start_door,
    start_nginx,
    start_notebook,
    start_proxy,
    start_splice,
)
from bench_scenarios import (
    MB,
    MiB,
    Settings,
    Stalled,
    Target,
    big_message,
    download,
    huge_ws_echo,
    idle_sockets,
    kernel_round_trip,
    many_sockets,
    paused_reader,
    paused_ws_reader,
    ping_pong,
    sanity,
    small_requests,
    ws_echo,
)

#: The seats, in the table's column order.
TARGETS = ("ours", "door", "door_m", "original", "chp", "nginx", "splice", "direct")
#: The door with its metrics listener on, scraped every ``SCRAPE_EVERY`` s while it is measured:
#: only with ``--metrics``, in the small-GET units, against the door (what counting costs).
METRICS_SEAT = "door_m"
METRICS_UNITS = ("r1_c1", "r1_c16")
SCRAPE_EVERY = 1.0
#: Peers: other proxies in front of the same backend, reverse flow only.
PEERS = ("chp", "nginx", "splice")
#: The seats a unit runs by default, by flow; RELAY: the units that compare with the peers.
TUNNEL = ("ours", "door", "original", "direct")
REVERSE = ("ours", "door", "direct")
RELAY = ("ours", "door", *PEERS, "direct")
#: The deflate-offered units leave the door out (what compression costs is a trio_httpws
#: setting, measured under hypercorn): 2.5 minutes of a full run.
TUNNEL_Z = ("ours", "original", "direct")
REVERSE_Z = ("ours", "direct")
#: hypercorn's trio worker serving empty_app.py, no backend: its own cost. Only the
#: units marked ``ceiling`` run it; its cells are extra rows, not a column of TARGETS.
ALONE = "hypercorn"
TITLES = {"ours": "trio_httpws", "door": "door", "door_m": "door+metrics",
          "original": "original", "chp": "chp",
          "nginx": "nginx", "splice": "splice", "direct": "direct",
          ALONE: "hypercorn alone"}  # fmt: skip
#: How each seat logs (the door's targets must hold with the command's default logging).
LOGGING = {
    "ours": "hypercorn defaults: no access log",
    "door": "CLI default: info+access, to file",
    "door_m": f"as door, --metrics-port, scraped every {SCRAPE_EVERY:g} s",
    "original": "Notebook default (info), to file",
    "chp": "info (its default), to file",
    "nginx": "access + error logs, to files",
    "splice": "none",
    "direct": "Notebook default (info), to file",
}
#: The seats whose cells also carry their ratio to direct (trio_httpws has its own column).
INLINE_RATIO = ("door", METRICS_SEAT, *PEERS)

Scenario = Callable[[Target, Settings], Awaitable[dict[str, float]]]


@dataclass(frozen=True)
class Unit:
    """One measurement: a scenario function, its timeout per target and run."""

    name: str
    run: Scenario
    timeout: Callable[[Settings], float]
    #: "tunnel": ours through /http_over_websocket; "reverse": ours as plain HTTP/WebSocket on
    #: its port (Colab's current flow), against direct only (the original has no such path).
    flow: str = "tunnel"
    #: Also run against hypercorn alone (the empty app), for the ceiling a proxy can reach.
    ceiling: bool = False
    #: The seats it runs (default: TUNNEL or REVERSE, by flow).
    only_seats: tuple[str, ...] = ()

    @property
    def seats(self) -> tuple[str, ...]:
        return self.only_seats or (TUNNEL if self.flow == "tunnel" else REVERSE)


def _kernel_timeout(s: Settings) -> float:
    return 120 + s.kernel_round_trips * 0.2


UNITS = [
    Unit("s1_c1", small_requests(1), lambda s: s.duration + 60, ceiling=True),
    Unit("s1_c16", small_requests(16), lambda s: s.duration + 60, ceiling=True),
    Unit("s2", many_sockets, lambda s: s.duration + 90),
    Unit("s3_big", download(lambda s: s.big_download, "s3_big"), lambda s: 180),
    Unit("s3_small", download(lambda s: s.small_download, "s3_small"), lambda s: 120),
    Unit("s4", paused_reader, lambda s: s.pause + 60),
    Unit("s5_small", ws_echo(100, 64, "s5_small_msgs"), lambda s: s.duration + 60),
    Unit("s5_big", ws_echo(MB, 4, "s5_big_mbps"), lambda s: s.duration + 60),
    Unit("s5_bin", ws_echo(MB, 4, "s5_bin_mbps", binary=True), lambda s: s.duration + 60),
    Unit("s7", big_message, lambda s: 180),
    # Browsers always offer permessage-deflate: the same, with the offer.
    Unit("s3_small_z", download(lambda s: s.small_download, "s3_small_z", deflate=True),
         lambda s: 120, only_seats=TUNNEL_Z),
    Unit("s5_small_z", ws_echo(100, 64, "s5_small_z_msgs", deflate=True),
         lambda s: s.duration + 60, only_seats=TUNNEL_Z),
    # The paths Colab's direct flow uses.
    Unit("r1_c1", partial(many_sockets, sockets=1, key="r1_c1", warmup=20),
         lambda s: s.duration + 60, "reverse", ceiling=True,
         only_seats=(*RELAY, METRICS_SEAT)),
    Unit("r1_c16", partial(many_sockets, sockets=16, key="r1_c16", warmup=20),
         lambda s: s.duration + 60, "reverse", ceiling=True,
         only_seats=(*RELAY, METRICS_SEAT)),
    Unit("r3_big", download(lambda s: s.big_download, "r3_big"), lambda s: 180, "reverse",
         only_seats=RELAY),
    Unit("r4", partial(paused_reader, key="r4_growth"), lambda s: s.pause + 60, "reverse"),
    Unit("w_small", ws_echo(100, 64, "w_small_msgs"), lambda s: s.duration + 60, "reverse",
         ceiling=True, only_seats=RELAY),
    Unit("w_big", ws_echo(64 * 1024, 16, "w_big_mbps"), lambda s: s.duration + 60, "reverse",
         ceiling=True, only_seats=RELAY),
    # One message in flight, and a reader that stops on a relayed socket.
    Unit("w_ping", ping_pong, lambda s: 60 + s.ping_round_trips * 0.02, "reverse",
         only_seats=RELAY),
    Unit("w_pause", paused_ws_reader, lambda s: s.pause + 60, "reverse",
         only_seats=("ours", "door")),
    Unit("w_small_z", ws_echo(100, 64, "w_small_z_msgs", deflate=True),
         lambda s: s.duration + 60, "reverse", only_seats=REVERSE_Z),
    Unit("w_big_z", ws_echo(64 * 1024, 16, "w_big_z_mbps", deflate=True),
         lambda s: s.duration + 60, "reverse", only_seats=REVERSE_Z),
    Unit("w7", huge_ws_echo, lambda s: 180, "reverse"),
    Unit("k_tunnel", kernel_round_trip("k_tunnel", deflate=False), _kernel_timeout),
    Unit("k_tunnel_z", kernel_round_trip("k_tunnel_z", deflate=True), _kernel_timeout,
         only_seats=TUNNEL_Z),
    Unit("k_flow", kernel_round_trip("k_flow", deflate=False), _kernel_timeout, "reverse"),
    Unit("k_flow_z", kernel_round_trip("k_flow_z", deflate=True), _kernel_timeout, "reverse",
         only_seats=REVERSE_Z),
]  # fmt: skip
# Memory first: the shared backend's heap has been churned least by then.
UNITS[:0] = [
    Unit("s6", idle_sockets, lambda s: 180),
    Unit("w_idle", partial(idle_sockets, websockets=True, key="w_idle_kb"), lambda s: 180,
         "reverse", only_seats=RELAY),
]  # fmt: skip


@dataclass(frozen=True)
class Row:
    unit: str
    key: str
    scenario: str
    metric: str
    better: str | None  # "higher", "lower", or None: no ratio
    digits: int
    target: str = ""
    #: (ours, original, direct) cells -> met? (None: not applicable / cannot tell)
    check: Callable[[Any, Any, Any], bool | None] | None = None
    #: The cell is the worst run, not the median (memory: a warm heap understates growth).
    worst: bool = False
    #: The ratio to the original the target asks for (to tell when direct itself falls short).
    need_vs_original: float | None = None
    #: Followed by a row of hypercorn alone and a note of the ceiling it sets (ceiling units).
    ceiling: bool = False
    #: That ceiling is a bound, not only a guide: one request at a time, so nothing overlaps.
    bound: bool = False
    #: The door's target, and its check on all the row's cells (by seat).
    door_target: str = ""
    door_check: Callable[[dict[str, Any]], bool | None] | None = None
    #: The seats' cells show what they add to direct's (seat - direct); direct's its own.
    added: bool = False


def _num(cell: Any) -> float | None:
    return cell if isinstance(cell, float) else None


def _ratio(ours: Any, other: Any, better: str | None) -> float | None:
    a, b = _num(ours), _num(other)
    if better is None or a is None or b is None or a <= 0 or b <= 0:
        return None
    return a / b if better == "higher" else b / a


def _at_least(vs_original: float | None, vs_direct: float | None) -> Callable[..., bool | None]:
    def check(ours: Any, original: Any, direct: Any) -> bool | None:
        if ours is None:
            return None  # not run
        if _num(ours) is None:
            return False
        verdicts = []
        if vs_original is not None:
            if _num(original) is None:
                verdicts.append(True)  # the original fails where we deliver
            else:
                verdicts.append(ours / original >= vs_original)
        if vs_direct is not None:
            if _num(direct) is None:
                return None
            verdicts.append(ours / direct >= vs_direct)
        return all(verdicts)

    return check


def _at_most(limit: float) -> Callable[..., bool | None]:
    def check(ours: Any, original: Any, direct: Any) -> bool | None:
        if ours is None:
            return None  # not run
        value = _num(ours)
        return value is not None and value <= limit

    return check


def _completes(ours: Any, original: Any, direct: Any) -> bool | None:
    return None if ours is None else _num(ours) is not None


DoorCheck = Callable[[dict[str, Any]], bool | None]


def _door(check: Callable[[float, dict[str, Any]], bool | None]) -> DoorCheck:
    """``check(door's number, all cells)``; not run: None; a failed door: missed."""

    def verdict(cells: dict[str, Any]) -> bool | None:
        if cells.get("door") is None:
            return None
        door = _num(cells["door"])
        return False if door is None else check(door, cells)

    return verdict


def _door_vs_direct(need: float, *, peers: bool = False) -> DoorCheck:
    """>= ``need`` x direct; with ``peers``, also >= 0.9 of configurable-http-proxy's ratio
    to direct, or >= 0.95 of the bare splice's where chp's beats the splice's."""

    def check(door: float, cells: dict[str, Any]) -> bool | None:
        ratio = _ratio(door, cells["direct"], "higher")
        if ratio is None:
            return None
        if not peers or ratio < need:
            return ratio >= need
        chp = _ratio(cells.get("chp"), cells["direct"], "higher")
        splice = _ratio(cells.get("splice"), cells["direct"], "higher")
        if chp is None:
            return None  # met about direct; nothing to say about the peer here
        peer = 0.95 * splice if splice is not None and chp > splice else 0.9 * chp
        return ratio >= peer

    return _door(check)


def _door_vs_best_peer(share: float) -> DoorCheck:
    """>= ``share`` of the better of configurable-http-proxy and nginx, in this run."""

    def check(door: float, cells: dict[str, Any]) -> bool | None:
        peers = [v for v in (_num(cells.get("chp")), _num(cells.get("nginx"))) if v is not None]
        return door >= share * max(peers) if peers else None

    return _door(check)


def _door_at_most(limit: float, *, added: bool = False) -> DoorCheck:
    """<= ``limit``; with ``added``, what the door adds to direct's value."""

    def check(door: float, cells: dict[str, Any]) -> bool | None:
        if not added:
            return door <= limit
        direct = _num(cells["direct"])
        return None if direct is None else door - direct <= limit

    return _door(check)


def _door_vs_ours(better: str) -> DoorCheck:
    """No worse than trio_httpws under hypercorn in this run."""

    def check(door: float, cells: dict[str, Any]) -> bool | None:
        ours = _num(cells["ours"])
        if ours is None:
            return None
        return door >= ours if better == "higher" else door <= ours

    return _door(check)


def rows(s: Settings) -> list[Row]:
    big, small, paused = s.big_download // MB, s.small_download // MB, s.paused_download // MB
    # The targets: 8x the original, and 0.6x direct at 1 in flight, 0.9x at 16.
    c1_target, c16_target = ">= 8x original, >= 0.6x direct", ">= 8x original, >= 0.9x direct"
    table = [
        Row("s1_c1", "s1_c1_rps", "1. small requests", "1 in flight: req/s", "higher", 0,
            c1_target, _at_least(8, 0.6), need_vs_original=8, ceiling=True, bound=True),
        Row("s1_c1", "s1_c1_p50", "1. small requests", "1 in flight: p50 ms", "lower", 2),
        Row("s1_c1", "s1_c1_p99", "1. small requests", "1 in flight: p99 ms", "lower", 2),
        Row("s1_c16", "s1_c16_rps", "1. small requests", "16 in flight: req/s", "higher", 0,
            c16_target, _at_least(8, 0.9), need_vs_original=8, ceiling=True),
        Row("s1_c16", "s1_c16_p50", "1. small requests", "16 in flight: p50 ms", "lower", 2),
        Row("s1_c16", "s1_c16_p99", "1. small requests", "16 in flight: p99 ms", "lower", 2),
        Row("s2", "s2_rps", f"2. {s.sockets} sockets", "1 in flight each: req/s", "higher", 0),
        Row("s2", "s2_p99", f"2. {s.sockets} sockets", "1 in flight each: p99 ms", "lower", 2),
        Row("s3_big", "s3_big_mbps", "3. download", f"{big} MB: MB/s", "higher", 1,
            "trio_httpws completes", _completes),
        Row("s3_big", "s3_big_frame", "3. download", f"{big} MB: max frame KB", None, 1),
        Row("s3_small", "s3_small_mbps", "3. download", f"{small} MB: MB/s", "higher", 1,
            ">= 2.5x original", _at_least(2.5, None), need_vs_original=2.5),
        Row("s3_small", "s3_small_frame", "3. download", f"{small} MB: max frame KB", None, 1),
        Row("s4", "s4_growth", "4. paused reader",
            f"{paused} MB, {s.pause:.0f} s pause: RSS growth MB (worst run)", "lower", 1,
            "<= 16 MB", _at_most(16), worst=True),
        Row("s5_small", "s5_small_msgs", "5. proxied WS echo", "100 B text, 64 in flight: msg/s",
            "higher", 0, ">= 2x original", _at_least(2, None), need_vs_original=2),
        Row("s5_big", "s5_big_mbps", "5. proxied WS echo", "1 MB text, 4 in flight: MB/s",
            "higher", 1),
        Row("s5_bin", "s5_bin_mbps", "5. proxied WS echo", "1 MB binary, 4 in flight: MB/s",
            "higher", 1),
        Row("s6", "s6_kb", "6. idle sockets",
            f"{s.idle_sockets} sockets: RSS KB/socket (worst run)", "lower", 1, "<= 50 KB",
            _at_most(50), worst=True),
        Row("s7", "s7_max_ms", "7. huge message",
            f"small requests while {s.big_message // MiB} MiB is POSTed: max ms", "lower", 1),
        Row("s7", "s7_p50_ms", "7. huge message",
            f"small requests while {s.big_message // MiB} MiB is POSTed: p50 ms", "lower", 2),
        Row("s7", "s7_loop_ms", "7. huge message",
            "diagnose echo (the proxy alone) meanwhile: max ms", "lower", 1, "< 50 ms",
            _at_most(50)),
        Row("s3_small_z", "s3_small_z_mbps", "3. download", f"{small} MB, deflate offered: MB/s",
            "higher", 1),
        Row("s5_small_z", "s5_small_z_msgs", "5. proxied WS echo",
            "100 B text, 64 in flight, deflate offered: msg/s", "higher", 0),
        Row("r1_c1", "r1_c1_rps", "8. reverse proxy", "GET, 1 keep-alive socket: req/s",
            "higher", 0, ">= 0.45x direct", _at_least(None, 0.45), ceiling=True, bound=True,
            door_target=">= 0.5x direct", door_check=_door_vs_direct(0.5)),
        Row("r1_c1", "r1_c1_p50", "8. reverse proxy", "GET, 1 keep-alive socket: p50 ms",
            "lower", 2),
        Row("r1_c1", "r1_c1_p99", "8. reverse proxy", "GET, 1 keep-alive socket: p99 ms",
            "lower", 2),
        Row("r1_c16", "r1_c16_rps", "8. reverse proxy",
            "GET, 16 keep-alive sockets: req/s", "higher", 0,
            ">= 0.6x direct", _at_least(None, 0.6), ceiling=True,
            door_target=">= 0.75x direct", door_check=_door_vs_direct(0.75)),
        Row("r1_c16", "r1_c16_p99", "8. reverse proxy",
            "GET, 16 keep-alive sockets: p99 ms", "lower", 2),
        Row("r3_big", "r3_big_mbps", "8. reverse proxy", f"{big} MB download: MB/s", "higher", 1,
            ">= 0.5x direct", _at_least(None, 0.5),
            door_target=">= 0.95 of the best of chp, nginx",
            door_check=_door_vs_best_peer(0.95)),
        Row("r4", "r4_growth", "8. reverse proxy",
            f"{paused} MB paused reader: RSS growth MB (worst run)", "lower", 1, "<= 16 MB",
            _at_most(16), worst=True, door_target="<= 16 MB", door_check=_door_at_most(16)),
        Row("w_small", "w_small_msgs", "9. plain WS relay", "100 B text, 64 in flight: msg/s",
            "higher", 0, ">= 0.45x direct", _at_least(None, 0.45), ceiling=True,
            door_target=peer_target(0.8), door_check=_door_vs_direct(0.8, peers=True)),
        Row("w_small_z", "w_small_z_msgs", "9. plain WS relay",
            "100 B text, 64 in flight, deflate offered: msg/s", "higher", 0),
        Row("w_big", "w_big_mbps", "9. plain WS relay", "64 KB text, 16 in flight: MB/s",
            "higher", 1, ">= 0.22x direct", _at_least(None, 0.22), ceiling=True,
            door_target=peer_target(0.5), door_check=_door_vs_direct(0.5, peers=True)),
        Row("w_big_z", "w_big_z_mbps", "9. plain WS relay",
            "64 KB text, 16 in flight, deflate offered: MB/s", "higher", 1),
        Row("w7", "w7_max_ms", "9. plain WS relay",
            f"small echoes while {s.huge_message // MiB} MiB is echoed: max ms", "lower", 1),
        Row("w7", "w7_p50_ms", "9. plain WS relay",
            f"small echoes while {s.huge_message // MiB} MiB is echoed: p50 ms", "lower", 2),
        Row("w_pause", "w_pause_growth", "9. plain WS relay",
            f"{paused} MB pushed, paused reader: RSS growth MB (worst run)", "lower", 1,
            "<= 16 MB", _at_most(16), worst=True, door_target="<= 16 MB",
            door_check=_door_at_most(16)),
        *(Row(unit, f"{unit}_{pct}", "10. kernel round trip", f"{how}: {pct} ms", "lower", 2)
          for unit, how in (("k_tunnel", "tunnel (proxied_ws)"),
                            ("k_tunnel_z", "tunnel, deflate offered"),
                            ("k_flow", "direct flow (kernel WS on our port)"),
                            ("k_flow_z", "direct flow, deflate offered"))
          for pct in ("p50", "p99")),
        Row("w_ping", "w_ping_p50", "11. WS ping-pong",
            "100 B, 1 in flight: p50 us (seats: + direct's)", "lower", 0, added=True,
            door_target="<= +250 us", door_check=_door_at_most(250, added=True)),
        Row("w_ping", "w_ping_p99", "11. WS ping-pong",
            "100 B, 1 in flight: p99 us (seats: + direct's)", "lower", 0, added=True,
            door_target="<= +350 us", door_check=_door_at_most(350, added=True)),
        Row("w_idle", "w_idle_kb", "12. idle relayed WS",
            f"{s.idle_sockets} WebSockets: RSS KB/socket (worst run)", "lower", 1, worst=True,
            door_target="<= 20 KB", door_check=_door_at_most(20)),
    ]  # fmt: skip
    # The tunnel on the new door: reported, and no slower than under hypercorn.
    tunnel = {u.name for u in UNITS if u.flow == "tunnel"}
    return [
        replace(r, door_target="no worse than trio_httpws", door_check=_door_vs_ours(r.better))
        if r.unit in tunnel and r.better and not r.door_target and not r.key.endswith("_p99")
        else r
        for r in table
    ]


def peer_target(need: float) -> str:
    return f">= {need:g}x direct, >= 0.9 of chp's*"


# -- running ----------------------------------------------------------------------------------


def selected(only: str) -> list[Unit]:
    """The units ``--only`` names (all of them without it), in the order they run."""
    wanted = set(only.split(",")) if only else None
    return [u for u in UNITS if wanted is None or u.name in wanted]


def run_order(run: int, keys: Sequence[str]) -> list[str]:
    """The seats of round ``run`` (from 0) of a unit that runs ``keys`` (in column order,
    hypercorn alone last), turned by one each round, so each goes first in turn. For a unit of
    trio_httpws, original and direct alone it is the rotation the benchmark always had."""
    turn = run % len(keys)
    return [*keys[turn:], *keys[:turn]]


def wanted_seats(args: argparse.Namespace) -> list[str]:
    """The seats some selected unit runs, that ``--seats`` allows, in column order."""
    allowed = set(args.seats.split(",")) if args.seats else set(TARGETS)
    if not args.metrics:
        allowed.discard(METRICS_SEAT)
    used = {k for u in selected(args.only) for k in u.seats}
    return [k for k in TARGETS if k in used and k in allowed]


def _reason(exc: BaseException) -> str:
    # trio's nurseries wrap errors in exception groups (the driver runs on Python >= 3.11).
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:  # noqa: F821
        exc = exc.exceptions[0]
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, OSError | trio.BrokenResourceError):
        text = f"{type(exc).__name__}: {text}"
    return " ".join(text.split())[:200]


def _is_hang(exc: BaseException) -> bool:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:  # noqa: F821
        exc = exc.exceptions[0]
    return isinstance(exc, Stalled | TimeoutError)


class Results:
    def __init__(self, planned: int) -> None:
        self.planned = planned
        self.values: dict[str, dict[str, list[float]]] = {}
        self.failures: dict[str, dict[str, list[str]]] = {}
        self.attempts: dict[str, dict[str, int]] = {}

    def add(self, unit: str, target: str, values: dict[str, float]) -> None:
        self.attempts.setdefault(unit, {}).setdefault(target, 0)
        self.attempts[unit][target] += 1
        for key, value in values.items():
            self.values.setdefault(key, {}).setdefault(target, []).append(value)

    def fail(self, unit: str, target: str, reason: str) -> None:
        self.attempts.setdefault(unit, {}).setdefault(target, 0)
        self.attempts[unit][target] += 1
        self.failures.setdefault(unit, {}).setdefault(target, []).append(reason)

    def cell(self, unit: str, key: str, target: str, worst: bool) -> float | str | None:
        failed = self.failures.get(unit, {}).get(target, [])
        if failed:
            runs = self.attempts[unit][target]
            if runs < self.planned:
                return f"fails ({failed[0]}; a hang: not retried)"
            return f"fails ({failed[0]})" + (f" in {len(failed)}/{runs} runs" if runs > 1 else "")
        values = self.values.get(key, {}).get(target)
        if not values:
            return None
        return max(values) if worst else statistics.median(values)


async def drive(
    notebook: Process,
    seats: dict[str, Seat],
    empty: Seat | None,
    token: str,
    args: argparse.Namespace,
) -> tuple[Results, dict[str, str]]:
    settings = Settings.quick() if args.quick else Settings()
    if args.duration:
        settings.duration = args.duration
    cookie = await login_cookie(notebook.base, token)

    def fresh(seat: Seat) -> Callable[[], Awaitable[None]]:
        async def restart() -> None:
            await trio.to_thread.run_sync(seat.restart)

        return restart

    wanted = wanted_seats(args)
    targets = {
        key: Target(key, token, seat.base, seat.rss, fresh=fresh(seat))
        for key, seat in seats.items()
    }
    if "original" in wanted:
        targets["original"] = Target("original", token, lambda: notebook.base, notebook.rss_bytes)
    if "direct" in wanted:
        targets["direct"] = Target(
            "direct", token, lambda: notebook.base, notebook.rss_bytes, cookie
        )
    units = selected(args.only)
    if any(u.name.startswith("k_") for u in units):
        kernel = await start_kernel(notebook.base, cookie)
        targets = {k: replace(t, kernel=kernel) for k, t in targets.items()}
    # The proxies' reverse flow: plain HTTP and WebSockets on their port (the peers have no
    # other); direct is the same in both flows.
    reverse = {k: t if k == "direct" else replace(t, reverse=True) for k, t in targets.items()}
    flows = {
        "tunnel": {k: targets[k] for k in TARGETS if k in targets and k not in PEERS},
        "reverse": {k: reverse[k] for k in TARGETS if k in reverse and k != "original"},
    }
    # Reached by each flow's own client: plain HTTP and WebSocket like the reverse flow's, with
    # no login (the empty app has no Jupyter behind it, and answers every path, /api/status and
    # /bench/ws-echo, by itself), or the tunnel like ours (the auth URL it carries is ignored).
    # Not in ``targets``: the sanity checks need the backend's endpoints.
    alone: dict[str, Target] = {}
    if empty is not None:
        plain = Target(ALONE, token, empty.base, empty.rss, reverse=True, anonymous=True)
        alone = {"reverse": plain, "tunnel": replace(plain, reverse=False)}
    results = Results(args.runs)
    sanity_report: dict[str, str] = {}
    for key in wanted:
        # trio_httpws and original through the tunnel, as always; the rest as they are used.
        target = targets[key] if key in ("ours", "original", "direct") else reverse[key]
        try:
            with trio.fail_after(60):
                await sanity(target, settings)
            sanity_report[key] = "ok"
        except Exception as exc:
            sanity_report[key] = f"fails ({_reason(exc)})"
        _progress(f"sanity {TITLES[key]}: {sanity_report[key]}")

    for unit in units:
        runs_on = {k: flows[unit.flow][k] for k in unit.seats if k in flows[unit.flow]}
        if unit.ceiling and alone:
            runs_on[ALONE] = alone[unit.flow]
        timed_out: set[str] = set()
        for run in range(args.runs):
            for key in run_order(run, list(runs_on)):
                if key in timed_out:
                    continue  # a hang costs its timeout once, not once per run
                limit = unit.timeout(settings)
                started = time.perf_counter()
                try:
                    with trio.move_on_after(limit) as scope:
                        async with scraping(seats.get(key) if key == METRICS_SEAT else None):
                            values = await unit.run(runs_on[key], settings)
                    if scope.cancelled_caught:
                        raise TimeoutError(f"no result within {limit:.0f} s")
                except Exception as exc:
                    if _is_hang(exc):
                        timed_out.add(key)
                    results.fail(unit.name, key, _reason(exc))
                    shown = f"fails ({_reason(exc)})"
                else:
                    results.add(unit.name, key, values)
                    shown = ", ".join(f"{k}={v:.4g}" for k, v in values.items())
                took = time.perf_counter() - started
                _progress(
                    f"{unit.name} run {run + 1}/{args.runs} {TITLES[key]}: {shown} [{took:.1f}s]"
                )
                await trio.sleep(0.3)  # let the previous target's sockets close
    return results, sanity_report


#: Scrapes of the door+metrics seat's listener that answered with its metrics.
SCRAPES = [0]


@contextlib.asynccontextmanager
async def scraping(seat: Seat | None) -> AsyncIterator[None]:
    """While the block runs, scrape ``seat``'s metrics every ``SCRAPE_EVERY`` s (None: not)."""
    if seat is None:
        yield
        return
    url = seat.metrics_url()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_scrape_forever, url)
        yield
        nursery.cancel_scope.cancel()


async def _scrape_forever(url: str) -> None:
    host, _, port = url.removeprefix("http://").rpartition(":")
    request = f"GET /metrics HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n"
    while True:
        async with await trio.open_tcp_stream(host, int(port)) as stream:
            await stream.send_all(request.encode())
            answer = bytearray()
            while chunk := await stream.receive_some(65536):
                answer += chunk
        if not answer.startswith(b"HTTP/1.1 200") or b"trio_httpws_requests_total" not in answer:
            raise BenchFailure(f"metrics scrape failed: {bytes(answer[:80])!r}")
        SCRAPES[0] += 1
        await trio.sleep(SCRAPE_EVERY)


class Seat:
    """A proxy process in front of the backend (hypercorn, the door, a peer); if it cannot
    start, its cells say why."""

    def __init__(self, name: str, start: Callable[[], Process]) -> None:
        self.name = name
        self._start = start
        self._process: Process | None = None
        self._error = "not started"

    def restart(self) -> None:
        self.stop()
        try:
            self._process = self._start()
        except RuntimeError as exc:
            lines = [line for line in str(exc).splitlines() if line.strip()]
            self._error = f"{self.name} did not start: {lines[-1].strip() if lines else exc}"
            _progress(str(exc))

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop()
            self._process = None

    def _running(self) -> Process:
        if self._process is None:
            raise BenchFailure(self._error)
        return self._process

    def base(self) -> str:
        return self._running().base

    def metrics_url(self) -> str:
        metrics = self._running().metrics
        if metrics is None:
            raise BenchFailure(f"{self.name} serves no metrics")
        return metrics

    def rss(self) -> int:
        return self._running().rss_bytes()


def _progress(line: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)


# -- output -----------------------------------------------------------------------------------


def _fmt(cell: Any, digits: int) -> str:
    if cell is None:
        return "-"
    if isinstance(cell, str):
        return cell
    return f"{cell:,.{digits}f}"


def _fmt_ratio(ours: Any, other: Any, row: Row) -> str:
    if row.better is None:
        return "-"
    ratio = _ratio(ours, other, row.better)
    if ratio is not None:
        return f"{ratio:.2f}x"
    if _num(ours) is not None and isinstance(other, str):
        return "other fails"
    if isinstance(ours, str):
        return "ours fails"
    return "-"


def _seat_cell(row: Row, key: str, cells: dict[str, Any]) -> str:
    """A seat's cell: its number; what it adds to direct's (``added`` rows); for the door and
    the peers, with its ratio to direct (memory rows have none: direct's growth is the
    backend's, not a proxy's)."""
    cell, direct = cells[key], _num(cells["direct"])
    value = _num(cell)
    if row.added and key != "direct" and value is not None and direct is not None:
        return f"{value - direct:+,.{row.digits}f}"
    text = _fmt(cell, row.digits)
    if key in INLINE_RATIO and not row.worst and not row.added:
        ratio = _ratio(cell, direct, row.better)
        if ratio is not None:
            text += f" ({ratio:.2f}x)"
    return text


def build_table(
    results: Results, sanity_report: dict[str, str], s: Settings
) -> list[dict[str, Any]]:
    table: list[dict[str, Any]] = [
        {
            "scenario": "0. seats",
            "metric": "logging (the notes say more)",
            "key": "logging",
            "values": {k: LOGGING[k] if k in sanity_report else None for k in TARGETS},
            "cells": {TITLES[k]: LOGGING[k] if k in sanity_report else "-" for k in TARGETS},
            "vs_original": "-",
            "vs_direct": "-",
            "target": "",
            "met": None,
        },
        {
            "scenario": "0. sanity",
            "metric": "auth URL flow, XSRF POST, bytes, WS echo",
            "key": "sanity",
            "values": {k: sanity_report.get(k) for k in TARGETS},
            "cells": {TITLES[k]: sanity_report.get(k, "-") for k in TARGETS},
            "vs_original": "-",
            "vs_direct": "-",
            "target": "all answer",
            "met": all(v == "ok" for v in sanity_report.values()),
        },
    ]
    for row in rows(s):
        if row.unit not in results.attempts:
            continue  # not selected (--only)
        cells = {k: results.cell(row.unit, row.key, k, row.worst) for k in TARGETS}
        met = row.check(cells["ours"], cells["original"], cells["direct"]) if row.check else None
        runs = {k: results.values.get(row.key, {}).get(k, []) for k in TARGETS}
        table.append(
            {
                "scenario": row.scenario,
                "metric": row.metric,
                "key": row.key,
                "better": row.better,
                "values": cells,
                "runs": runs,
                "failures": {k: results.failures.get(row.unit, {}).get(k, []) for k in TARGETS},
                "cells": {TITLES[k]: _seat_cell(row, k, cells) for k in TARGETS},
                "vs_original": _fmt_ratio(cells["ours"], cells["original"], row),
                "vs_direct": "-" if row.added else _fmt_ratio(cells["ours"], cells["direct"], row),
                "vs_direct_by_seat": {
                    k: _ratio(cells[k], cells["direct"], row.better)
                    for k in TARGETS
                    if k != "direct" and not row.added
                },
                "target": row.target,
                "met": met,
                "door_target": row.door_target,
                "door_met": row.door_check(cells) if row.door_check else None,
                "direct_vs_original": _ratio(cells["direct"], cells["original"], row.better),
                "need_vs_original": row.need_vs_original,
            }
        )
        if row.ceiling:
            table.append(_alone_entry(results, row, cells["direct"], cells["ours"]))
    return table


def series(a: float, b: float) -> float:
    """The rate of two stages in series, each costing its own time per request: 1/(1/a + 1/b)."""
    return 1 / (1 / a + 1 / b)


def _alone_entry(results: Results, row: Row, direct: Any, ours: Any) -> dict[str, Any]:
    """The row of hypercorn alone under ``row``: its cell in the trio_httpws column (the
    metric says whose it is), direct's again for the ratio, and the series ceiling."""
    alone = results.cell(row.unit, row.key, ALONE, row.worst)
    what, _, unit = row.metric.rpartition(": ")
    a, d, o = _num(alone), _num(direct), _num(ours)
    ceiling = series(a, d) if a is not None and d is not None and a > 0 and d > 0 else None
    return {
        "scenario": row.scenario,
        "metric": f"{what}, {TITLES[ALONE]} (empty app): {unit}",
        "key": f"{row.key}_{ALONE}",
        "better": row.better,
        "values": {ALONE: alone, "direct": direct},
        "runs": {k: results.values.get(row.key, {}).get(k, []) for k in (ALONE, "direct")},
        "failures": {ALONE: results.failures.get(row.unit, {}).get(ALONE, [])},
        "cells": {
            **{TITLES[k]: "-" for k in TARGETS},
            TITLES["ours"]: _fmt(alone, row.digits),
            TITLES["direct"]: _fmt(direct, row.digits),
        },
        "vs_original": "-",
        "vs_direct": _fmt_ratio(alone, direct, row),
        "target": "",
        "met": None,
        "direct_vs_original": None,
        "need_vs_original": None,
        # For the note: what a proxy in series under hypercorn can reach, and what ours did.
        "ceiling": {
            "rate": ceiling,
            "vs_direct": None if ceiling is None or not d else ceiling / d,
            "of": row.metric,
            # The ceiling is a ratio to direct: a part of the target about the original (s1's
            # ">= 8x original") has nothing to say next to it.
            "target": ", ".join(p for p in row.target.split(", ") if "direct" in p),
            "bound": row.bound,
            "digits": row.digits,
            "ours_vs_ceiling": None if ceiling is None or o is None else o / ceiling,
        },
    }


def alone_notes(table: list[dict[str, Any]]) -> list[str]:
    """Per ceiling row measured: the rate a proxy in series under hypercorn can reach, here."""
    notes = []
    for entry in table:
        found = entry.get("ceiling")
        if found is None or entry["values"][ALONE] is None:
            continue  # the unit did not run
        what = f"{entry['scenario']} / {found['of']}"
        alone, direct = entry["values"][ALONE], entry["values"]["direct"]
        if found["rate"] is None:
            notes.append(
                f"Hypercorn ceiling, {what}: not computed (hypercorn alone: "
                f"{entry['cells']['trio_httpws']}; direct: {entry['cells']['direct']})."
            )
            continue
        digits, unit = found["digits"], found["of"].rpartition(": ")[2]
        ours = (
            ""
            if found["ours_vs_ceiling"] is None
            else f"; trio_httpws reached {found['ours_vs_ceiling']:.2f}x of it"
        )
        target = f"target {found['target']}; " if found["target"] else ""
        kind = (
            "a bound: one request at a time"
            if found["bound"]
            else "a guide: with many in flight the processes overlap"
        )
        notes.append(
            f"Hypercorn ceiling, {what}: for a proxy in series under hypercorn, "
            f"1/(1/hypercorn_alone + 1/direct) = 1/(1/{alone:,.{digits}f} + "
            f"1/{direct:,.{digits}f}) = {found['rate']:,.{digits}f} {unit} = "
            f"{found['vs_direct']:.2f}x direct ({target}{kind}){ours}."
        )
    return notes


def ceiling_notes(table: list[dict[str, Any]]) -> list[str]:
    """Targets that ask for more than direct itself achieves over the original, in this run."""
    notes = []
    for entry in table:
        need, limit = entry.get("need_vs_original"), entry.get("direct_vs_original")
        if need is not None and limit is not None and limit < need:
            notes.append(
                f"Ceiling: {entry['scenario']} / {entry['metric']}: direct itself is only "
                f"{limit:.2f}x the original here, so '>= {need:g}x original' asks trio_httpws to "
                "beat the backend without a proxy."
            )
    return notes


#: "vs original", "vs direct", "target" and "met?" are trio_httpws's (under hypercorn);
#: "door target" and "door met?" are the door's.
def columns(seats: Sequence[str]) -> list[str]:
    return ["scenario", "metric", *(TITLES[k] for k in seats), "vs original", "vs direct",
            "target", "met?", "door target", "door met?"]  # fmt: skip


VERDICTS = {True: "yes", False: "NO", None: "-"}


def shown_seats(table: list[dict[str, Any]]) -> list[str]:
    """The seats with a cell in some row (a run with ``--only``/``--seats`` has fewer)."""
    return [k for k in TARGETS if any(e["cells"][TITLES[k]] != "-" for e in table)]


def _row_cells(entry: dict[str, Any], width: int | None, seats: Sequence[str]) -> list[str]:
    def cut(text: str) -> str:
        return text if width is None or len(text) <= width else text[: width - 1] + "…"

    met = VERDICTS[entry["met"]] if entry["target"] else ""
    door_target = entry.get("door_target", "")
    door_met = VERDICTS[entry.get("door_met")] if door_target else ""
    return [
        entry["scenario"],
        entry["metric"],
        *(cut(entry["cells"][TITLES[k]]) for k in seats),
        entry["vs_original"],
        entry["vs_direct"],
        entry["target"],
        met,
        door_target,
        door_met,
    ]


def render_text(table: list[dict[str, Any]]) -> str:
    seats = shown_seats(table)
    header = columns(seats)
    lines = [header, *(_row_cells(e, 34, seats) for e in table)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for n, line in enumerate(lines):
        out.append(" | ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)).rstrip())
        if n == 0:
            out.append("-+-".join("-" * w for w in widths))
    return "\n".join(out)


def render_markdown(table: list[dict[str, Any]], info: dict[str, str], notes: list[str]) -> str:
    out = [
        "# trio_httpws benchmark",
        "",
        "Produced by `nox -s bench`.",
        "",
        "## Machine",
        "",
    ]
    out += [f"- {k}: {v}" for k, v in info.items()]
    seats = shown_seats(table)
    header = columns(seats)
    out += ["", "## Results", "", "| " + " | ".join(header) + " |"]
    out.append("|" + "---|" * len(header))
    for entry in table:
        cells = [c.replace("|", "\\|") for c in _row_cells(entry, None, seats)]
        out.append("| " + " | ".join(cells) + " |")
    out += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(out) + "\n"


def notes_for(args: argparse.Namespace, s: Settings, elapsed: float) -> list[str]:
    seats = wanted_seats(args)
    notes = [
        f"Each cell: median of {args.runs} runs; seats alternate within every round, "
        "rotating which goes first. All share one Notebook 6 backend process.",
        "Ratios ('vs original', 'vs direct'): how many times better trio_httpws (under "
        "hypercorn) is (ours/other for throughput, other/ours for latency and memory); > 1 "
        "means trio_httpws is better. 'target' and 'met?' are trio_httpws's; "
        "'door target' and 'door met?' are the door's.",
        "trio_httpws and original are driven as a browser front end drives them: WebSocket "
        "with Origin https://colab.research.google.com, min_version=0.0.7 and "
        "jupyter_http_over_ws_auth_url=<server's own token URL>; a minimal protocol client, "
        "wsproto on a trio socket (bench/bench_client.py).",
        "direct: plain HTTP/1.1 on one keep-alive socket per client socket, with the login "
        "cookies the token URL sets (the same cookie + XSRF auth the proxies forward); N in "
        "flight on one socket = HTTP pipelining. Direct WebSocket echo: ws://backend/bench/ws-echo.",
        f"Throughput runs last {s.duration:g} s each after a warm-up; downloads time the body only "
        "(the auth URL is fetched before); the client decodes every frame (pybase64) and checks "
        "the body byte for byte.",
        "Original: its tornado HTTP client has a 100 MiB body limit; past it, it sends no frame "
        "at all (the client sees a hang, reported after 15 s without data). It relays binary "
        "backend WebSocket messages as text frames, which standard clients refuse.",
        "RSS: VmRSS of the proxy process tree (hypercorn parent + worker; the door's process; "
        "chp: node; nginx: its worker only; for original and direct the Notebook process). "
        "Memory rows show the worst run. In the memory units (4, 6, r4, w_pause, 12) every "
        "proxy seat runs on a freshly started process each run; original and direct share the "
        "long-running Notebook process, whose heap reuses memory freed by earlier runs, so their "
        "growth is understated (direct runs after original has already grown that heap).",
        "Scenario 4 reads 4 MiB, stops reading for the pause (RSS sampled every 0.2 s, growth = "
        "peak - before), then reads once more to check the download survived, and closes.",
        "Scenario 6 sockets each served one GET /api/status before going idle; growth is taken "
        "after 20 warm-up sockets were opened and closed.",
        f"Machine load is shared: loadavg at end {' '.join(f'{x:.2f}' for x in os.getloadavg())}. "
        f"Total bench time {elapsed:.0f} s.",
    ]
    notes.append(
        "trio_httpws ran with ws_compression="
        f"{os.environ.get('TRIO_HTTPWS_WS_COMPRESSION', 'default (off)')} "
        "(TRIO_HTTPWS_WS_COMPRESSION). 'deflate offered' rows: the client offers "
        "permessage-deflate as browsers do; the Notebook backend never accepts it (tornado's "
        "default), trio_httpws only with ws_compression on."
    )
    if any(u.ceiling for u in selected(args.only)):
        notes.append(
            f"'{TITLES[ALONE]} (empty app)' rows: the trio_httpws column holds the same "
            "hypercorn command line serving bench/empty_app.py instead (200 and a body "
            "the size of /api/status for every request, every WebSocket message echoed, and "
            "on /http_over_websocket each request answered with the one frame of that "
            "answer; no backend, no login), driven by the unit's own client (the tunnel's "
            "for s1_*), in the same rounds. 'Hypercorn ceiling' notes add up "
            "the two costs a proxy served by hypercorn pays per request or message at least: "
            "hypercorn's own for an app that does nothing, and the backend's; what the app "
            "itself does is on top, so the real ceiling is lower still. That holds for one "
            "request at a time (s1_c1, r1_c1), where every step waits for the one before (the sum "
            "counts the bench client twice, standing in for the proxy's own client to the "
            "backend); with many in flight the three processes overlap on the cores and a "
            "proxy can pass it, so there it is a guide, not a bound."
        )
    notes += seat_notes(args, s, seats)
    if args.app != "trio_httpws:app":
        notes.append(f"hypercorn served {args.app!r} instead of the documented trio_httpws:app.")
    if args.quick:
        notes.append(
            "QUICK MODE: counts and sizes scaled down "
            f"({s.big_download // MB}/{s.small_download // MB} MB downloads, "
            f"{s.paused_download // MB} MB paused for {s.pause:g} s, {s.sockets} sockets, "
            f"{s.idle_sockets} idle sockets); not the full-size figures."
        )
    return notes


def seat_notes(args: argparse.Namespace, s: Settings, seats: Sequence[str]) -> list[str]:
    notes = []
    if "door" in seats:
        flag = f" --server {args.door_server}" if args.door_server else " (no --server flag)"
        notes.append(
            "door: python -m trio_httpws --backend URL --host 127.0.0.1 --port P"
            f"{flag} --allow-origin '*' --log-file F, with the command's default logging (one "
            "access line per request or socket in the log file, warnings on stderr); a fresh "
            "process for every memory run, as for trio_httpws. It runs every unit trio_httpws "
            "runs, the tunnel's too (door target there: no worse than trio_httpws in this run)."
        )
    if any(k in seats for k in PEERS):
        notes.append(
            "Peers (reverse-proxy and relay units only, a fresh process for every memory run): "
            "chp = configurable-http-proxy (node) --default-target <backend>, its default log "
            "level info (no line per request; PROXY lines are debug); nginx = 1 worker in the "
            "foreground, upstream block with keepalive 32, proxy_http_version 1.1, Host "
            '$http_host, Connection "" (or upgrade via a map on $http_upgrade), '
            "proxy_buffering off, access_log and error_log (level error) to files in its "
            "prefix, RSS of its worker; splice = bench/bare_splice.py, a trio TCP splice, "
            "one task per direction, 64 KiB reads, no logging. door and peer cells carry their "
            "ratio to direct in brackets (none on memory rows)."
        )
        notes.append(
            "Door targets against the peers are computed on the medians of this run: the relay "
            "echo rows ask >= 0.9 of chp's ratio to direct (*: or >= 0.95 of the splice's "
            "where chp's beats the splice's); the download asks >= 0.95 of the better of chp "
            "and nginx."
        )
    if any(u.name == "w_ping" for u in selected(args.only)):
        notes.append(
            f"11. WS ping-pong: one relayed WebSocket to /bench/ws-echo, {s.ping_round_trips} "
            "round trips of one 100 B text message after 50 warm-up ones (trio-websocket "
            "client); direct's cells are its own p50/p99, every other seat's is its p50/p99 "
            "minus direct's (the latency it adds)."
        )
    if any(u.name == "w_idle" for u in selected(args.only)):
        notes.append(
            f"12. idle relayed WS: {s.idle_sockets} WebSockets to /bench/ws-echo, each echoed "
            "one message, held open; RSS growth of the seat's process per socket after 20 "
            "warm-up sockets were opened and closed (door and trio_httpws: the process tree; "
            "chp: node; nginx: its worker; direct: the Notebook process itself)."
        )
    if any(u.name == "w_pause" for u in selected(args.only)):
        notes.append(
            f"w_pause: the backend pushes {s.paused_download // MB} MB of 64 KiB text "
            "messages on a relayed WebSocket (/bench/ws-flood, each once the one before is "
            f"written); the client reads 4 MiB and stops for {s.pause:g} s (RSS sampled every "
            "0.2 s, growth = peak - before), then reads once more."
        )
    return notes


def metrics_cost(results: Results) -> list[str]:
    """The door with and without its metrics listener, round by round: each seat's median and
    spread, and the median and spread of the per-round ratios (the rounds interleave the two,
    so a ratio compares runs made moments apart on the same machine)."""
    notes = [
        f"Metrics cost ({TITLES[METRICS_SEAT]} against door): the same command with "
        f"--metrics-port, its /metrics scraped every {SCRAPE_EVERY:g} s by the driver while "
        f"measured ({SCRAPES[0]} scrapes answered). Counting itself is always on (plain "
        "integers, no switch): these rows measure the listener and its scrapes; the profile in "
        "docs/metrics.md measures the counting."
    ]
    for row in rows(Settings()):
        if row.unit not in METRICS_UNITS or row.better is None:
            continue
        off = results.values.get(row.key, {}).get("door", [])
        on = results.values.get(row.key, {}).get(METRICS_SEAT, [])
        if not off or not on:
            continue
        ratios = [r for r in (_ratio(a, b, row.better) for a, b in zip(on, off, strict=False)) if r]

        def spread(values: Sequence[float], digits: int = row.digits) -> str:
            return (
                f"median {statistics.median(values):,.{digits}f} "
                f"(spread {min(values):,.{digits}f}-{max(values):,.{digits}f}, n={len(values)})"
            )

        notes.append(
            f"Metrics cost, {row.metric}: door {spread(off)}; {TITLES[METRICS_SEAT]} "
            f"{spread(on)}; {TITLES[METRICS_SEAT]} vs door, round by round (> 1: better with "
            f"metrics): {spread(ratios, 3)}."
        )
    return notes


def against_previous(table: list[dict[str, Any]], previous: Path) -> list[str]:
    """trio_httpws's 'vs direct' next to the one in the results.md this run replaces: the hypercorn
    door must get no slower. A note lists the rows that fell by more
    than a tenth (runs differ by about that on a shared machine)."""
    try:
        lines = previous.read_text().splitlines()
    except OSError:
        return []
    before: dict[tuple[str, str], float] = {}
    header: list[str] = []
    for line in lines:
        if not line.startswith("| "):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if "vs direct" in cells:
            header = cells
            continue
        if not header or len(cells) != len(header):
            continue
        ratio = cells[header.index("vs direct")]
        if ratio.endswith("x"):
            with contextlib.suppress(ValueError):
                before[(cells[0], cells[1])] = float(ratio[:-1])
    fell = []
    for entry in table:
        old = before.get((entry["scenario"], entry["metric"]))
        now = entry.get("vs_direct", "-")
        if old is None or not now.endswith("x"):
            continue
        if float(now[:-1]) < 0.9 * old:
            fell.append(f"{entry['scenario']} / {entry['metric']}: {old:.2f}x -> {now}")
    if not before:
        return []
    if not fell:
        return [
            f"trio_httpws (hypercorn door) against the replaced {previous.name}: no 'vs direct' "
            "ratio fell by more than a tenth."
        ]
    return [
        f"trio_httpws (hypercorn door) against the replaced {previous.name}, 'vs direct' fell "
        "by more than a tenth in: " + "; ".join(fell) + "."
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--original-python",
        default=os.environ.get(
            "BENCH_ORIGINAL_PYTHON", str(REPO / ".nox/bench-original/bin/python")
        ),
        help="Python 3.11 with jupyter_http_over_ws==0.0.8, notebook<7, tornado<6.5",
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="scaled-down sizes, for trying it out")
    parser.add_argument("--duration", type=float, default=0.0, help="seconds per throughput run")
    parser.add_argument(
        "--only", default="", help="comma list of units: " + ",".join(u.name for u in UNITS)
    )
    parser.add_argument(
        "--app", default="trio_httpws:app", help="what hypercorn serves (default: as documented)"
    )
    parser.add_argument(
        "--seats", default="", help="comma list of seats to run (default all): " + ",".join(TARGETS)
    )
    parser.add_argument(
        "--door-server",
        default="trio",
        help="the door seat's --server value (empty: leave the flag out); default trio",
    )
    parser.add_argument(
        "--chp",
        default=os.environ.get("BENCH_CHP", str(CHP_DEFAULT)),
        help="configurable-http-proxy's bin script (nox -s bench installs it under .nox)",
    )
    parser.add_argument(
        "--metrics",
        action="store_true",
        help="what the metrics cost: the door with and without --metrics-port (scraped every "
        f"{SCRAPE_EVERY:g} s) in {' and '.join(METRICS_UNITS)}, at least 5 interleaved rounds "
        "(defaults: --only and --seats to those units and door,door_m,direct)",
    )
    parser.add_argument("--out", type=Path, default=HERE, help="where results.json/.md go")
    args = parser.parse_args(argv)
    if args.metrics:
        args.runs = max(args.runs, 5)
        args.only = args.only or ",".join(METRICS_UNITS)
        args.seats = args.seats or f"door,{METRICS_SEAT},direct"
    unknown = set(args.seats.split(",")) - set(TARGETS) if args.seats else set()
    if unknown:
        parser.error(f"unknown seats: {', '.join(sorted(unknown))}")
    if args.runs < 1:
        parser.error("--runs must be >= 1")
    settings = Settings.quick() if args.quick else Settings()
    if args.duration:
        settings.duration = args.duration

    # Absolute, not resolved: a venv's python is a symlink that must stay one.
    args.original_python = os.path.abspath(args.original_python)
    check_original(args.original_python)
    fds = raise_fd_limit()
    info = machine_info(args.original_python)
    info["fd_limit"] = str(fds)
    if any(k in PEERS for k in wanted_seats(args)):
        info.update(peer_versions(args.chp))
    _progress(f"machine: {info}")
    token = "bench-" + secrets.token_hex(12)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="trio-httpws-bench-") as tmp:
        workdir = Path(tmp)
        _progress("starting the Notebook 6 backend (original extension + bench_ext)")
        notebook = start_notebook(args.original_python, token, workdir)
        backend = notebook.base
        makers = {
            "ours": ("hypercorn", partial(start_proxy, backend, workdir, args.app)),
            "door": ("door", partial(start_door, backend, workdir, args.door_server)),
            METRICS_SEAT: (
                "door with --metrics-port",
                partial(start_door, backend, workdir, args.door_server, metrics=True),
            ),
            "chp": ("configurable-http-proxy", partial(start_chp, args.chp, backend, workdir)),
            "nginx": ("nginx", partial(start_nginx, backend, workdir)),
            "splice": ("bare_splice.py", partial(start_splice, backend, workdir)),
        }
        seats = {k: Seat(*makers[k]) for k in wanted_seats(args) if k in makers}
        empty = None
        if "ours" in seats and any(u.ceiling for u in selected(args.only)):
            empty = Seat(
                "hypercorn (empty app)",
                partial(start_proxy, backend, workdir, EMPTY_APP, "hypercorn-empty"),
            )
        try:
            for key, seat in seats.items():
                _progress(f"starting {TITLES[key]}: {seat.name}")
                seat.restart()
            if empty is not None:
                _progress(f"starting python -m hypercorn --worker-class trio {EMPTY_APP}")
                empty.restart()
            results, sanity_report = trio.run(drive, notebook, seats, empty, token, args)
        finally:
            for seat in seats.values():
                seat.stop()
            if empty is not None:
                empty.stop()
            notebook.stop()
    elapsed = time.perf_counter() - started

    table = build_table(results, sanity_report, settings)
    notes = notes_for(args, settings, elapsed) + ceiling_notes(table) + alone_notes(table)
    notes += against_previous(table, args.out / "results.md")
    if args.metrics:
        notes += metrics_cost(results)
    # The text table cuts long cells: say in full why a seat failed its sanity check.
    notes += [f"{TITLES[k]}: sanity {v}" for k, v in sanity_report.items() if v != "ok"]
    text = render_text(table)
    print()
    print(text)
    print()
    for note in notes:
        print(f"* {note}")
    args.out.mkdir(parents=True, exist_ok=True)
    payload = {"machine": info, "settings": settings.__dict__, "runs": args.runs,
               "rows": table, "notes": notes}  # fmt: skip
    (args.out / "results.json").write_text(json.dumps(payload, indent=2, default=str) + "\n")
    (args.out / "results.md").write_text(render_markdown(table, info, notes))
    print(f"\nwritten: {args.out / 'results.json'}, {args.out / 'results.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
