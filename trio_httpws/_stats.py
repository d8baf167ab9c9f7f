"""What the proxy counts, in plain integers on one object: what ``/metrics`` shows.

Pure: no I/O, no locks, no prometheus_client. Every door counts here through its ``Proxy``
(one ``Stats`` each), with an integer increment or two per request, message or socket; a
collector reads it all when the metrics listener is scraped (``_metrics_export``). Everything
runs in the proxy's one trio thread, a scrape included, so a scrape reads a consistent state
between two steps of the event loop and nothing needs a lock (prometheus_client's own
``inc()``/``observe()`` take one each).

Labels are small fixed sets (no paths, no origins, no tokens): every series exists from the
start, at 0.

Bytes are defined once: for a WebSocket, the payload of its data messages (text counted in
UTF-8 bytes, as sent; control frames and framing not counted), on the client's side of the
proxy; for HTTP, the message bodies the client sent and got. The access line's ``bytes`` is
the same number, towards the client.
"""

from __future__ import annotations

import enum
from bisect import bisect_left
from typing import Protocol

from ._outcome import Outcome


class Flow(enum.IntEnum):
    """How a plain HTTP request reached the proxy."""

    #: On the proxy's port, reverse-proxied as it is.
    REVERSE = 0
    #: Inside a ``/http_over_websocket`` session (one frame message per request).
    TUNNEL = 1


class WsKind(enum.IntEnum):
    """What a client WebSocket is, by its path."""

    #: ``/http_over_websocket``: a session of the tunnel.
    TUNNEL = 0
    #: ``/http_over_websocket/proxied_ws/...``.
    PROXIED_WS = 1
    #: Any other path: relayed to the same path on the backend.
    RELAY = 2
    #: ``/http_over_websocket/diagnose``.
    DIAGNOSE = 3


class Refused(enum.IntEnum):
    """Why the proxy refused a request, a socket or a tunnelled message itself."""

    #: An Origin the policy does not allow.
    ORIGIN = 0
    #: A Host that does not name this machine, on a loopback listener (DNS rebinding).
    HOST = 1
    #: A target that is not a path (``//host/x``, ``http://...``).
    PATH = 2
    #: A head over ``max_head_size`` (431), a message over ``max_message_size`` (1009).
    SIZE = 3
    #: A tunnel session asking for a newer protocol than ours (or naming none readable).
    MIN_VERSION = 4
    #: Anything else malformed: a head, a body, an upgrade, a preflight, a tunnel message.
    BAD_REQUEST = 5
    #: A request head that did not arrive within ``head_timeout``.
    HEAD_TIMEOUT = 6


class Phase(enum.IntEnum):
    """Where a wait on the backend ran out."""

    CONNECT = 0
    READ = 1
    WRITE = 2
    #: Waiting for one of ``max_connections`` slots (then 503).
    SLOT = 3


#: The status classes of HTTP answers; ``none``: the exchange ended with no status at all.
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx", "none")
_NO_STATUS = len(STATUS_CLASSES) - 1
#: The two ways through the proxy, as seen on the client's side.
DIRECTIONS = ("to_client", "from_client")
OUTCOMES = tuple(Outcome)
_OUTCOME_INDEX = {outcome: index for index, outcome in enumerate(OUTCOMES)}

#: Upper bounds (seconds) of the histograms' buckets: from a loopback backend's sub-millisecond
#: answers to ``read_timeout``'s 300 s.
SECONDS_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
)


def label(member: enum.Enum) -> str:
    """The label value of an enum member: its name in lower case."""
    return member.name.lower()


def status_class(status: int | None) -> int:
    """The index in ``STATUS_CLASSES`` of an HTTP status."""
    if status is None or not 100 <= status < 600:
        return _NO_STATUS
    return status // 100 - 1


def payload_size(message: str | bytes | bytearray | memoryview) -> int:
    """The payload bytes of one WebSocket message (or part): text counts as UTF-8."""
    if isinstance(message, str):
        # isascii() reads a flag CPython keeps on the string: no scan, no copy for the JSON
        # frames of the tunnel; anything else is encoded once to be counted as sent.
        return len(message) if message.isascii() else len(message.encode("utf-8"))
    return len(message)


class Histogram:
    """Observations in cumulative-ready buckets: ``counts[i]`` holds those <= ``bounds[i]``
    and above the bound before; the last slot those above every bound."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...] = SECONDS_BUCKETS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[int]:
        """Observations <= each bound, then the total (Prometheus's ``le`` buckets, ``+Inf``)."""
        total = 0
        out = []
        for n in self.counts:
            total += n
            out.append(total)
        return out


class PoolStats:
    """The backend connection pool's counts (``BackendPool`` keeps them)."""

    __slots__ = ("connect_failures", "first_byte", "idle", "open", "slot_wait", "timeouts")

    def __init__(self) -> None:
        #: Pooled HTTP connections to the backend now open (in use or idle).
        self.open = 0
        #: Of those, the idle ones.
        self.idle = 0
        #: Connects that failed (refused, unreachable, TLS), not counting timeouts.
        self.connect_failures = 0
        #: Waits on the backend that ran out, by ``Phase``.
        self.timeouts = [0] * len(Phase)
        #: Seconds from taking (or opening) a connection to the response head, per request.
        self.first_byte = Histogram()
        #: Seconds a request waited for a slot, for those that had to wait.
        self.slot_wait = Histogram()


class PayloadCount(Protocol):
    """Anything that counts payload bytes as they pass (a ``Count``; a splice's scanner)."""

    payload: int


class Count:
    __slots__ = ("payload",)

    def __init__(self) -> None:
        self.payload = 0


class Tally:
    """One WebSocket's payload, each way, counted while it is open (a scrape sees it live)."""

    __slots__ = ("from_client", "kind", "to_client")

    def __init__(self, kind: WsKind) -> None:
        self.kind = kind
        self.to_client: PayloadCount = Count()
        self.from_client: PayloadCount = Count()


class Stats:
    """Everything one proxy counts. Counts only grow, except the gauges (``ws_open``, the
    pool's ``open`` and ``idle``)."""

    def __init__(self, pool: PoolStats | None = None) -> None:
        self.pool = pool if pool is not None else PoolStats()
        #: HTTP answers by flow and status class: ``requests[flow][status class]``.
        self.requests = [[0] * len(STATUS_CLASSES) for _ in Flow]
        #: HTTP body bytes by flow and direction.
        self.body_bytes = [[0] * len(DIRECTIONS) for _ in Flow]
        self.refusals = [0] * len(Refused)
        #: WebSockets being served now (from the upgrade request to the end), by kind.
        self.ws_open = [0] * len(WsKind)
        #: WebSockets that ended, by kind and ``Outcome``: ``ws_ended[kind][outcome index]``.
        self.ws_ended = [[0] * len(OUTCOMES) for _ in WsKind]
        #: Payload of the WebSockets that ended, by kind and direction (the open ones are in
        #: ``live``).
        self._ws_bytes_ended = [[0] * len(DIRECTIONS) for _ in WsKind]
        self.live: set[Tally] = set()

    def request(self, flow: Flow, status: int | None, to_client: int, from_client: int) -> None:
        """One HTTP exchange ended, as its access line says (``status`` None: it has none)."""
        self.requests[flow][status_class(status)] += 1
        counts = self.body_bytes[flow]
        counts[0] += to_client
        counts[1] += from_client

    def refused(self, reason: Refused) -> None:
        self.refusals[reason] += 1

    def ws_opened(self, kind: WsKind) -> Tally:
        """A WebSocket upgrade is being served; count its payload on the ``Tally``."""
        tally = Tally(kind)
        self.ws_open[kind] += 1
        self.live.add(tally)
        return tally

    def ws_closed(self, tally: Tally, outcome: Outcome) -> None:
        """The WebSocket of ``tally`` ended, as ``outcome`` (what its access line says)."""
        self.live.discard(tally)
        kind = tally.kind
        self.ws_open[kind] -= 1
        self.ws_ended[kind][_OUTCOME_INDEX[outcome]] += 1
        ended = self._ws_bytes_ended[kind]
        ended[0] += tally.to_client.payload
        ended[1] += tally.from_client.payload

    def ws_refused(self, kind: WsKind, reason: Refused) -> None:
        """A WebSocket upgrade refused before it was judged (its head was not one)."""
        self.refused(reason)
        self.ws_ended[kind][_OUTCOME_INDEX[Outcome.BAD_REQUEST]] += 1

    def ws_bytes(self) -> list[list[int]]:
        """WebSocket payload so far by kind and direction, the open sockets' included."""
        out = [list(row) for row in self._ws_bytes_ended]
        for tally in self.live:
            row = out[tally.kind]
            row[0] += tally.to_client.payload
            row[1] += tally.from_client.payload
        return out
