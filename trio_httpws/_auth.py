"""The auth URL: fetched once per client socket, through the backend, for its cookies."""

from __future__ import annotations

import logging

import trio

from ._backend import BackendPool
from ._errors import AuthUrlError, BackendError
from ._protocol import (
    AUTH_URL_PARAM,
    auth_url_target,
    cookie_pairs,
    first_header,
    header_values,
    parse_cookie_header,
)
from ._redirects import MAX_REDIRECTS, REDIRECT_STATUSES, location_target, origin_of
from ._socket import Upgrade

log = logging.getLogger("trio_httpws.auth")

#: The auth URL answers with a page we discard; refuse to read a body beyond this.
MAX_AUTH_BODY = 16 * 1024 * 1024


class AuthCookies:
    """The cookies of one client socket: the upgrade's own, plus those the auth URL set.

    The original fetched the auth URL again for every message. We fetch it once, on first use,
    and share the result among the socket's concurrent requests. A failed fetch is not cached:
    the next request tries again, so a backend restart does not poison the socket.
    """

    def __init__(self, pool: BackendPool, upgrade: Upgrade, timeout: float) -> None:
        self._pool = pool
        self._timeout = timeout
        self._upgrade = upgrade
        self._auth_url = upgrade.params.get(AUTH_URL_PARAM) or None
        self._own = parse_cookie_header(header_values(upgrade.headers, b"cookie"))
        self._cookies: dict[str, str] | None = None if self._auth_url else self._own
        self._lock = trio.Lock()

    async def get(self) -> dict[str, str]:
        """All cookies to send; raises ``AuthUrlError`` when the auth URL is refused or fails."""
        if self._cookies is not None:
            return self._cookies
        async with self._lock:
            if self._cookies is None:
                assert self._auth_url is not None
                # One deadline for the whole fetch: a backend that trickles a byte per
                # read_timeout, or redirects slowly, must not hold the socket's requests forever.
                fetched: dict[str, str] | None = None
                with trio.move_on_after(self._timeout):
                    fetched = await self._fetch(self._auth_url)
                if fetched is None:
                    raise AuthUrlError(f"fetching the auth URL took over {self._timeout:g}s")
                self._cookies = {**self._own, **fetched}
        return self._cookies

    async def _fetch(self, auth_url: str) -> dict[str, str]:
        scheme, host = self._upgrade.scheme, self._upgrade.host
        # Raises AuthUrlError for another scheme, host or port: we never fetch from elsewhere.
        target = auth_url_target(auth_url, scheme, host)
        origins = (origin_of(scheme, host),)
        cookies: dict[str, str] = {}
        headers = [(b"host", host.encode("latin-1")), (b"accept", b"*/*")]
        for _ in range(MAX_REDIRECTS + 1):
            try:
                async with self._pool.request("GET", target, headers) as response:
                    await response.read(MAX_AUTH_BODY)
            except BackendError as exc:
                raise AuthUrlError(f"fetching the auth URL failed: {exc}") from exc
            cookies.update(cookie_pairs(header_values(response.headers, b"set-cookie")))
            location = first_header(response.headers, b"location")
            if response.status in REDIRECT_STATUSES and location is not None:
                redirected = location_target(location, target, origins)
                if redirected is None:
                    raise AuthUrlError("the auth URL redirected to another origin; not followed")
                target = redirected
                continue
            if not 200 <= response.status < 300:
                raise AuthUrlError(f"the auth URL answered HTTP {response.status}")
            log.debug("auth URL set %d cookie(s)", len(cookies))
            return cookies
        raise AuthUrlError(f"the auth URL redirected more than {MAX_REDIRECTS} times")
