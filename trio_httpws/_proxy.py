"""The verdict on each request and WebSocket upgrade, and the WebSocket routes, for every door.

``Proxy`` holds what a running proxy shares (its config, the backend pool, the sessions) and
judges: ``judge_request`` for plain HTTP (refuse, answer a preflight, or forward with the
rewritten headers) and ``judge_upgrade`` for WebSockets (refuse, tunnel session, diagnose, or
relay to a target); each door carries the verdict out, so no policy line exists twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from urllib.parse import unquote_plus

import trio

from ._access import log_access
from ._backend import BackendPool, make_ssl_context
from ._config import Config
from ._cors import Answer, OriginClass, backend_request_headers, judge_http, text_answer
from ._errors import ClientDisconnected
from ._outcome import Outcome, client_ended
from ._protocol import (
    AUTH_URL_PARAM,
    DIAGNOSE_PATH,
    HTTP_OVER_WS_PATH,
    MIN_VERSION_PARAM,
    PROXIED_WS_PREFIX,
    VersionStatus,
    check_min_version,
    close_code_for_status,
    diagnose_frame,
    error_frame,
    first_header,
    header_values,
    is_local_host,
    is_loopback_address,
    parse_cookie_header,
    strip_hop_by_hop,
    validate_path,
)
from ._redact import log_path
from ._relay import relay
from ._session import HttpOverWsSession
from ._socket import PendingSocket, Upgrade
from ._stats import Refused, Stats, Tally, WsKind, payload_size

log = logging.getLogger("trio_httpws")


class Route(Enum):
    """What a client WebSocket is, by its path (and the proxy's verdict on it)."""

    #: ``/http_over_websocket``: a tunnel session.
    SESSION = "session"
    #: ``/http_over_websocket/diagnose``.
    DIAGNOSE = "diagnose"
    #: ``/http_over_websocket/proxied_ws/...``: a relay the tunnel's clients open.
    PROXIED = "proxied"
    #: Any other path: a plain WebSocket relayed to the same path on the backend.
    PLAIN = "plain"
    #: Refused before the backend saw anything.
    REFUSED = "refused"


#: What the metrics call each route's WebSockets.
_KINDS = {
    Route.SESSION: WsKind.TUNNEL,
    Route.DIAGNOSE: WsKind.DIAGNOSE,
    Route.PROXIED: WsKind.PROXIED_WS,
    Route.PLAIN: WsKind.RELAY,
}


@dataclass(frozen=True)
class Refusal:
    """A WebSocket the proxy refuses itself, and what to say."""

    status: int
    reason: str
    outcome: Outcome
    #: The warning logged for it (already formatted: refusals are rare).
    warning: str
    #: Why, for the metrics.
    why: Refused
    #: Accept, then close with 4000 + status: what the original's clients expect on proxied_ws.
    after_accept: bool = False


@dataclass(frozen=True)
class UpgradeVerdict:
    route: Route
    origin_class: OriginClass
    #: What the socket is by its path (a refused one too), for the metrics.
    kind: WsKind
    #: The backend target of a relay (validated origin-form, query included).
    target: str | None = None
    refusal: Refusal | None = None


@dataclass(frozen=True)
class RequestVerdict:
    """A plain HTTP request: answer it now (``answer``), or forward it with ``forward``."""

    origin_class: OriginClass
    cors_origin: str | None = None
    answer: Answer | None = None
    #: Why the proxy refused it (None for an answered preflight or a forwarded request).
    refusal: Outcome | None = None
    warning: str | None = None
    #: The answer must end the connection: the request's framing cannot be trusted.
    close: bool = False
    #: The headers to send the backend (hop-by-hop stripped, the origin judged).
    forward: list[tuple[bytes, bytes]] | None = None


class Proxy:
    """The proxy for one backend: shared by every client socket (and HTTP request) it serves.

    It owns the backend connection pool. It has no background tasks, so it needs no nursery:
    each handler runs in the task (and nursery) of the server that accepted the client.
    """

    def __init__(self, config: Config, pool: BackendPool | None = None) -> None:
        self.config = config
        ssl_context = (
            make_ssl_context(config.backend_ca) if config.backend_url.scheme == "https" else None
        )
        self.pool = pool or BackendPool(
            config.backend_url,
            ssl_context=ssl_context,
            max_idle=config.max_idle_connections,
            max_connections=config.max_connections,
            connect_timeout=config.connect_timeout,
            read_timeout=config.read_timeout,
            write_timeout=config.write_timeout,
            pool_timeout=config.pool_timeout,
        )
        self._shutdown: trio.Event | None = None
        #: What every door counts through this proxy (the metrics listener shows it).
        self.stats = Stats(self.pool.stats)
        #: The port the metrics listener bound, once it listens (``serve_metrics``).
        self.metrics_port: int | None = None

    @property
    def shutdown_event(self) -> trio.Event:
        # Created lazily: trio objects belong to a run, and a Proxy may be built before one.
        if self._shutdown is None:
            self._shutdown = trio.Event()
        return self._shutdown

    def begin_shutdown(self) -> None:
        """Ask every session to finish its requests and close with 1001 (going away)."""
        self.shutdown_event.set()

    async def aclose(self) -> None:
        await self.pool.aclose()

    # -- checks shared by every entry point -----------------------------------------------------

    def host_allowed(self, host: str | None, local_address: str | None) -> bool:
        """DNS-rebinding check: on a loopback listener the Host must name this machine."""
        if not is_loopback_address(local_address):
            return True
        return is_local_host(host, self.config.allow_hosts)

    def route(self, path: str) -> Route:
        """Which endpoint a WebSocket to ``path`` (no query) is."""
        base = self.config.base_url
        if not path.startswith(base):
            return Route.PLAIN
        rest = path[len(base) :]
        if rest == HTTP_OVER_WS_PATH:
            return Route.SESSION
        if rest == DIAGNOSE_PATH:
            return Route.DIAGNOSE
        if rest.startswith(PROXIED_WS_PREFIX) and len(rest) > len(PROXIED_WS_PREFIX):
            return Route.PROXIED
        return Route.PLAIN

    def count_refused_upgrade(self, path: str, why: Refused) -> None:
        """Count an upgrade a door refused before it could be judged (not a valid upgrade)."""
        self.stats.ws_refused(_KINDS[self.route(path)], why)

    # -- verdicts: what to do with a request, decided before any I/O ----------------------------

    def judge_upgrade(self, upgrade: Upgrade) -> UpgradeVerdict:
        """What to do with a client's WebSocket upgrade; every door carries it out."""
        origin_class = self.config.origin_policy.classify(
            upgrade.origin, upgrade.scheme, upgrade.host
        )
        route = self.route(upgrade.raw_path)
        kind = _KINDS[route]
        if not self.host_allowed(upgrade.host, upgrade.local_address):
            return self._refused(
                kind,
                origin_class,
                Refusal(
                    403,
                    "Host not allowed",
                    Outcome.REFUSED_HOST,
                    f"refused WebSocket with non-local Host {upgrade.host!r} (DNS rebinding?)",
                    Refused.HOST,
                ),
            )
        if origin_class is OriginClass.REFUSED:
            # Every path, the tunnel's and the plain relays' alike: the backend would let in
            # any origin that holds the token, the proxy does not.
            return self._refused(
                kind,
                origin_class,
                Refusal(
                    403,
                    "Origin not allowed",
                    Outcome.REFUSED_ORIGIN,
                    f"refused WebSocket from origin {upgrade.origin!r} to {upgrade.raw_path}",
                    Refused.ORIGIN,
                ),
            )
        if route is Route.SESSION or route is Route.DIAGNOSE:
            return UpgradeVerdict(route, origin_class, kind)
        if route is Route.PLAIN:
            # Any other WebSocket (the Jupyter UI's or Colab's kernel channels, terminals,
            # ...) is relayed as it is, less the foreign Origin the proxy already judged.
            target = _target(upgrade.raw_path, upgrade.query)
        else:
            rest = upgrade.raw_path[len(self.config.base_url) + len(PROXIED_WS_PREFIX) :]
            target = _target(self.config.base_url + rest, _strip_auth_param(upgrade.query))
        try:
            target = validate_path(target)
        except ValueError as exc:
            # Origin-form only, as for tunnelled requests: "//host/..." could name a host.
            return self._refused(
                kind,
                origin_class,
                Refusal(
                    400,
                    f"Bad Request: request target must be a path: {exc}",
                    Outcome.BAD_REQUEST,
                    f"refused WebSocket {upgrade.raw_path}: {exc}",
                    Refused.PATH,
                    after_accept=route is Route.PROXIED,
                ),
            )
        return UpgradeVerdict(route, origin_class, kind, target=target)

    def _refused(self, kind: WsKind, origin_class: OriginClass, refusal: Refusal) -> UpgradeVerdict:
        # Counted as it is given: every door carries out every verdict it asks for.
        self.stats.refused(refusal.why)
        return UpgradeVerdict(Route.REFUSED, origin_class, kind, refusal=refusal)

    def judge_request(
        self,
        method: str,
        target: str,
        headers: Sequence[tuple[bytes, bytes]],
        scheme: str,
        local_address: str | None,
    ) -> RequestVerdict:
        """What to do with one plain HTTP request; every door carries it out.

        The Host check, the origin verdict and the request's framing are all decided here,
        before a byte reaches the backend: a refused origin or a malformed request never costs
        the backend anything, whatever token or cookie it carries.
        """
        host = first_header(headers, b"host")
        if not self.host_allowed(host, local_address):
            self.stats.refused(Refused.HOST)
            return RequestVerdict(
                OriginClass.NONE,
                answer=text_answer(403, "Host not allowed"),
                refusal=Outcome.REFUSED_HOST,
                warning=f"refused HTTP request with non-local Host {host!r} (DNS rebinding?)",
            )
        verdict = judge_http(self.config.origin_policy, method, headers, scheme, host or "")
        if verdict.answer is not None:
            answer = verdict.answer
            origin = first_header(headers, b"origin")
            if verdict.origin_class is OriginClass.REFUSED:
                self.stats.refused(Refused.ORIGIN)
                refusal: Outcome | None = Outcome.REFUSED_ORIGIN
                warning: str | None = f"refused {method} {log_path(target)} from origin {origin!r}"
            elif answer.status >= 400:
                self.stats.refused(Refused.BAD_REQUEST)
                refusal, warning = Outcome.BAD_REQUEST, f"bad preflight from {origin!r}: "
                warning += answer.body.decode()
            else:
                refusal, warning = None, None
            return RequestVerdict(
                verdict.origin_class, answer=answer, refusal=refusal, warning=warning
            )
        framing = framing_problem(target, headers)
        if framing is not None:
            why, problem = framing
            self.stats.refused(why)
            return RequestVerdict(
                verdict.origin_class,
                answer=text_answer(400, f"Bad Request: {problem}"),
                refusal=Outcome.BAD_REQUEST,
                warning=f"refused {method} request: {problem}",
                close=True,
            )
        forward = backend_request_headers(
            strip_hop_by_hop(headers), verdict.origin_class, scheme, host or ""
        )
        return RequestVerdict(
            verdict.origin_class, cors_origin=verdict.cors_origin, forward=forward
        )

    # -- WebSockets -----------------------------------------------------------------------------

    async def handle_websocket(self, pending: PendingSocket, upgrade: Upgrade) -> None:
        """Serve one client WebSocket handshake to its end."""
        await self.serve_upgrade(pending, upgrade, self.judge_upgrade(upgrade))

    async def serve_upgrade(
        self, pending: PendingSocket, upgrade: Upgrade, verdict: UpgradeVerdict
    ) -> None:
        """Carry out ``verdict`` on a handshake that a door holds as ``pending``."""
        started = time.perf_counter()
        status: int | None = None
        outcome = Outcome.ERROR
        tally = self.stats.ws_opened(verdict.kind)
        try:
            route = verdict.route
            if verdict.refusal is not None:
                refusal = verdict.refusal
                log.warning("%s", refusal.warning)
                status, outcome = refusal.status, refusal.outcome
                if refusal.after_accept:
                    sock = await pending.accept()
                    await sock.close(close_code_for_status(refusal.status), refusal.reason)
                else:
                    await pending.reject(refusal.status, refusal.reason)
                return
            if route is Route.SESSION:
                status = 101
                outcome = await self._session(pending, upgrade, tally)
                return
            if route is Route.DIAGNOSE:
                status = 101
                outcome = await self._diagnose(pending, upgrade, tally)
                return
            assert verdict.target is not None
            result = await relay(
                pending,
                upgrade,
                verdict.target,
                self.config,
                self.pool,
                tunnelled=route is Route.PROXIED,
                shutdown=self.shutdown_event,
                origin_class=verdict.origin_class,
                tally=tally,
            )
            status, outcome = result.status, result.outcome
        finally:
            self.stats.ws_closed(tally, outcome)
            log_access(
                "ws",
                "GET",
                upgrade.raw_path,
                status,
                tally.to_client.payload,
                started,
                origin=verdict.origin_class.value,
                outcome=outcome.value,
            )

    async def _session(self, pending: PendingSocket, upgrade: Upgrade, tally: Tally) -> Outcome:
        # In parts: the session decodes a large upload as it arrives (_parts).
        sock = await pending.accept(message_parts=True)
        check = check_min_version(upgrade.params.get(MIN_VERSION_PARAM))
        if check.status is not VersionStatus.OK:
            if check.status is VersionStatus.OUTDATED:
                log.error("Rejecting connection: %s", check.reason)
            else:
                log.warning("Rejecting connection: %s", check.reason)
            self.stats.refused(Refused.MIN_VERSION)
            await sock.close(close_code_for_status(400), check.reason)
            return Outcome.BAD_REQUEST
        session = HttpOverWsSession(
            sock,
            upgrade,
            self.config,
            self.pool,
            self.shutdown_event,
            stats=self.stats,
            tally=tally,
        )
        await session.run()
        return session.outcome

    async def _diagnose(self, pending: PendingSocket, upgrade: Upgrade, tally: Tally) -> Outcome:
        sock = await pending.accept()
        outdated = (
            check_min_version(upgrade.params.get(MIN_VERSION_PARAM)).status
            is VersionStatus.OUTDATED
        )
        cookies = parse_cookie_header(header_values(upgrade.headers, b"cookie"))
        has_cookie = bool(cookies.get("_xsrf"))
        while True:
            try:
                message = await sock.receive()
            except ClientDisconnected as exc:
                return client_ended(exc.code)
            tally.from_client.payload += payload_size(message)
            if isinstance(message, bytes):
                answer = error_frame(400, "Binary messages are not supported: send text.")
            else:
                answer = diagnose_frame(message, has_cookie, outdated)
            await sock.send(answer)
            tally.to_client.payload += payload_size(answer)


def framing_problem(
    target: str, headers: Sequence[tuple[bytes, bytes]]
) -> tuple[Refused, str] | None:
    """Why this request must not be forwarded (for the metrics, and in words), or None.

    The target must be origin-form, like a tunnelled path: an absolute-form
    (``http://host/...``) or authority-like (``//host/...``) target could make the backend or an
    intermediate treat it as another host. Content-Length with Transfer-Encoding is the classic
    request-smuggling shape (RFC 9112 6.3): refuse it rather than pick one.
    """
    try:
        validate_path(target)
    except ValueError as exc:
        return Refused.PATH, f"request target must be a path: {exc}"
    names = {name.lower() for name, _ in headers}
    if b"content-length" in names and b"transfer-encoding" in names:
        return Refused.BAD_REQUEST, "both Content-Length and Transfer-Encoding"
    return None


def _target(raw_path: str, query: str) -> str:
    return f"{raw_path}?{query}" if query else raw_path


def _strip_auth_param(query: str) -> str:
    # The auth URL carries the user's token; the backend WebSocket has its cookies instead.
    # Filtered without re-encoding, so every other parameter reaches the backend byte for byte.
    kept = [
        part
        for part in query.split("&")
        if part and unquote_plus(part.split("=", 1)[0]) != AUTH_URL_PARAM
    ]
    return "&".join(kept)
