"""Routing a client WebSocket to the right handler, whatever server carries it."""

from __future__ import annotations

import logging
import time
from urllib.parse import unquote_plus

import trio

from ._access import log_access
from ._backend import BackendPool, make_ssl_context
from ._config import Config
from ._cors import OriginClass
from ._errors import ClientDisconnected
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
    header_values,
    is_local_host,
    is_loopback_address,
    parse_cookie_header,
    validate_path,
)
from ._relay import relay
from ._session import HttpOverWsSession
from ._socket import PendingSocket, Upgrade

log = logging.getLogger("trio_httpws")


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

    def route(self, path: str) -> str | None:
        """Which protocol endpoint ``path`` is: "session", "diagnose", "proxied", or None."""
        base = self.config.base_url
        if not path.startswith(base):
            return None
        rest = path[len(base) :]
        if rest == HTTP_OVER_WS_PATH:
            return "session"
        if rest == DIAGNOSE_PATH:
            return "diagnose"
        if rest.startswith(PROXIED_WS_PREFIX) and len(rest) > len(PROXIED_WS_PREFIX):
            return "proxied"
        return None

    # -- WebSockets -----------------------------------------------------------------------------

    async def handle_websocket(self, pending: PendingSocket, upgrade: Upgrade) -> None:
        """Serve one client WebSocket handshake to its end."""
        started = time.perf_counter()
        origin_class = self.config.origin_policy.classify(
            upgrade.origin, upgrade.scheme, upgrade.host
        )
        status: int | None = None
        nbytes = 0
        try:
            if not self.host_allowed(upgrade.host, upgrade.local_address):
                log.warning(
                    "refused WebSocket with non-local Host %r (DNS rebinding?)", upgrade.host
                )
                status = 403
                await pending.reject(403, "Host not allowed")
                return
            if origin_class is OriginClass.REFUSED:
                # Every path, the tunnel's and the plain relays' alike: the backend would let in
                # any origin that holds the token, the proxy does not.
                log.warning(
                    "refused WebSocket from origin %r to %s", upgrade.origin, upgrade.raw_path
                )
                status = 403
                await pending.reject(403, "Origin not allowed")
                return
            kind = self.route(upgrade.raw_path)
            if kind == "session":
                status = 101
                await self._session(pending, upgrade)
                return
            if kind == "diagnose":
                status = 101
                await self._diagnose(pending, upgrade)
                return
            if kind is None:
                # Any other WebSocket (the Jupyter UI's or Colab's kernel channels, terminals,
                # ...) is relayed as it is, less the foreign Origin the proxy already judged.
                target = _target(upgrade.raw_path, upgrade.query)
                tunnelled = False
            else:
                rest = upgrade.raw_path[len(self.config.base_url) + len(PROXIED_WS_PREFIX) :]
                target = _target(self.config.base_url + rest, _strip_auth_param(upgrade.query))
                tunnelled = True
            try:
                target = validate_path(target)
            except ValueError as exc:
                # Origin-form only, as for tunnelled requests: "//host/..." could name a host.
                log.warning("refused WebSocket %s: %s", upgrade.raw_path, exc)
                status = 400
                reason = f"Bad Request: request target must be a path: {exc}"
                if tunnelled:
                    sock = await pending.accept()
                    await sock.close(close_code_for_status(400), reason)
                else:
                    await pending.reject(400, reason)
                return
            result = await relay(
                pending,
                upgrade,
                target,
                self.config,
                self.pool,
                tunnelled=tunnelled,
                shutdown=self.shutdown_event,
                origin_class=origin_class,
            )
            status, nbytes = result.status, result.bytes_to_client
        finally:
            log_access(
                "ws", "GET", upgrade.raw_path, status, nbytes, started, origin=origin_class.value
            )

    async def _session(self, pending: PendingSocket, upgrade: Upgrade) -> None:
        # In parts: the session decodes a large upload as it arrives (_parts).
        sock = await pending.accept(message_parts=True)
        check = check_min_version(upgrade.params.get(MIN_VERSION_PARAM))
        if check.status is not VersionStatus.OK:
            if check.status is VersionStatus.OUTDATED:
                log.error("Rejecting connection: %s", check.reason)
            else:
                log.warning("Rejecting connection: %s", check.reason)
            await sock.close(close_code_for_status(400), check.reason)
            return
        await HttpOverWsSession(sock, upgrade, self.config, self.pool, self.shutdown_event).run()

    async def _diagnose(self, pending: PendingSocket, upgrade: Upgrade) -> None:
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
            except ClientDisconnected:
                return
            if isinstance(message, bytes):
                await sock.send(error_frame(400, "Binary messages are not supported: send text."))
                continue
            await sock.send(diagnose_frame(message, has_cookie, outdated))


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
