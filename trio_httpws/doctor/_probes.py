"""The doctor's probes: the only I/O. Behave as a front end on another origin would, and record
what each exchange gave, never judging it.

The probes are thin trio I/O over the public client (``http_request``, ``open_websocket``,
``diagnose``, ``open_client``, ``open_proxied_websocket``, ``run_code``); each records what it saw
as a :class:`~._seen.Seen`. Every probe has its own deadline, so one that hangs becomes a failed
step, not a hung doctor.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from functools import partial

import trio
import trio_websocket

from .._protocol import PROTOCOL_VERSION, close_of
from ..client import (
    ClientError,
    ConnectionRefused,
    diagnose,
    http_request,
    open_client,
    open_proxied_websocket,
    open_websocket,
    run_code,
)
from ._seen import (
    KERNEL_CODE,
    NO_KERNEL_WS_PATH,
    PREFLIGHT_HEADERS,
    PREFLIGHT_METHOD,
    TUNNEL_BODY_LIMIT,
    Observations,
    Seen,
    Target,
    paths_above,
)

DEFAULT_TIMEOUT = 30.0
#: How long a socket opened without a kernel is watched for a close right after it opened (a
#: tunnel accepts first, then closes with the backend's refusal), at least; over a slow link
#: (an SSH tunnel to a remote runtime) that refusal takes round trips, so the watch is also at
#: least SETTLE_ROUND_TRIPS times what opening the socket took.
SETTLE_TIME = 0.5
SETTLE_ROUND_TRIPS = 4


async def _timed(step_timeout: float, probe: Callable[[], Awaitable[Seen]]) -> Seen:
    """Run ``probe``; a deadline or a client error becomes what was seen."""
    with trio.move_on_after(step_timeout):
        try:
            return await probe()
        except ConnectionRefused as exc:
            return Seen(status=exc.status, close_code=exc.code, reason=exc.reason)
        except ClientError as exc:
            code = getattr(exc, "code", None)
            return Seen(error=str(exc), close_code=code)
        except trio_websocket.ConnectionClosed as exc:
            code, reason = close_of(exc.reason)
            return Seen(
                opened=True, close_code=code, reason=reason, error=f"closed with code {code}"
            )
        except (OSError, trio.BrokenResourceError) as exc:
            return Seen(error=str(exc) or type(exc).__name__)
    return Seen(error=f"no answer within {step_timeout:g} s (--timeout)")


async def _http(
    base: str,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> Seen:
    response = await http_request(base, method, path, headers=headers, body=body)
    # A proxy's short text answer ("Origin not allowed") says more than the reason phrase.
    plain = (response.header("content-type") or "").startswith("text/plain")
    reason = response.body[:200].decode("utf-8", "replace") if plain else response.reason
    return Seen(
        status=response.status,
        headers=response.headers,
        body=response.body[:4096],
        reason=reason,
    )


async def _socket_seen(
    ws: trio_websocket.WebSocketConnection, kernel: bool, opening_took: float
) -> Seen:
    if kernel:
        ran = await run_code(ws, KERNEL_CODE)
        return Seen(opened=True, printed=ran.stdout + (ran.error or ""))
    settle = max(SETTLE_TIME, SETTLE_ROUND_TRIPS * opening_took)
    # Ends before the step's own deadline (--timeout): a socket still open then is judged open,
    # not timed out.
    end = min(trio.current_time() + settle, trio.current_effective_deadline() - SETTLE_TIME)
    with trio.move_on_at(end):
        await ws.get_message()  # a close raises ConnectionClosed: what the probe saw
    return Seen(opened=True)


async def probe(
    target: Target, origin: str, *, kernel: bool = True, step_timeout: float = DEFAULT_TIMEOUT
) -> Observations:
    """Everything a front end on ``origin`` would do with ``target``, recorded, not judged."""
    p = _Probes(target, origin, step_timeout)
    obs = await _reach(p)
    if obs.status is None or obs.status.status != 200:
        return obs
    obs = replace(
        obs,
        preflight=await p.http("OPTIONS", "/api/sessions", _preflight_headers(origin)),
        get=await p.http("GET", "/api/kernelspecs", {"Origin": origin}),
    )
    if not kernel:
        return await p.sockets(obs, NO_KERNEL_WS_PATH, run=False)
    started = await p.http("POST", "/api/kernels", {"Content-Type": "application/json"}, b"{}")
    obs = replace(obs, kernel=started)
    info = started.json()
    if started.status != 201 or not isinstance(info, dict):
        # A socket to a kernel that does not exist: judged as a failed kernel.start.
        return await p.sockets(obs, f"/api/kernels/{uuid.uuid4()}/channels", run=False)
    kernel_id = str(info.get("id"))
    try:
        obs = await p.sockets(obs, f"/api/kernels/{kernel_id}/channels", run=True)
    finally:
        # Even when the doctor is cancelled (Ctrl-C), the kernel it started goes.
        with trio.CancelScope(shield=True):
            delete = await p.http("DELETE", f"/api/kernels/{kernel_id}")
    return replace(obs, delete=delete)


async def _reach(p: _Probes) -> Observations:
    """``GET <base>api``, then ``<base>api/status`` with the token. A 404 says the base URL is
    not Jupyter's: then the paths above it are asked where Jupyter is."""
    api = await p.http("GET", "/api", token=False)
    status = await p.http("GET", "/api/status") if api.status == 200 else None
    obs = Observations(api=api, status=status)
    if 404 in (api.status, status.status if status else None):
        obs = replace(obs, above=await p.above())
    return obs


def _preflight_headers(origin: str) -> dict[str, str]:
    """What a browser's preflight for Colab's ``POST /api/sessions`` asks, from ``origin``."""
    return {
        "Origin": origin,
        "Access-Control-Request-Method": PREFLIGHT_METHOD,
        "Access-Control-Request-Headers": PREFLIGHT_HEADERS,
        "Access-Control-Request-Private-Network": "true",
    }


@dataclass(frozen=True)
class _Probes:
    """The exchanges of one doctor run: each under its own deadline, each recorded as Seen."""

    target: Target
    origin: str
    step_timeout: float

    async def http(
        self,
        method: str,
        path: str,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
        *,
        token: bool = True,
    ) -> Seen:
        """A plain request, with the token in the query (as Colab sends it) unless not ``token``."""
        target = path + (self.target.query() if token else "")
        return await _timed(
            self.step_timeout, partial(_http, self.target.base, method, target, headers, body)
        )

    async def above(self) -> tuple[tuple[str, Seen], ...]:
        """``GET <path>api`` for each path above the base path, up to the first that answers."""
        root = f"{self.target.scheme}://{self.target.netloc}"
        seen: list[tuple[str, Seen]] = []
        for path in paths_above(self.target.base_path):
            api = await _timed(self.step_timeout, partial(_http, root, "GET", path + "api"))
            seen.append((path, api))
            if api.status == 200:
                break
        return tuple(seen)

    async def sockets(self, obs: Observations, ws_path: str, *, run: bool) -> Observations:
        """The socket to ``ws_path`` straight to the runtime, then the tunnel's three steps;
        ``run``: run KERNEL_CODE on each socket (``ws_path`` is a live kernel's channels)."""
        session = uuid.uuid4().hex
        direct = ws_path + self.target.query(session_id=session)
        direct_ws = await _timed(self.step_timeout, partial(self._direct, direct, run))
        diag = await _timed(self.step_timeout, self._diagnosed)
        obs = replace(obs, direct_ws=direct_ws, diagnose=diag)
        if diag.answer is None and diag.status in (403, 404):
            return obs  # no tunnel, or not for this origin: judged as such
        tunnelled = f"{ws_path}?session_id={session}"
        return replace(
            obs,
            tunnel_get=await _timed(self.step_timeout, self._tunnelled_get),
            tunnel_ws=await _timed(self.step_timeout, partial(self._tunnelled_ws, tunnelled, run)),
        )

    async def _direct(self, path: str, run: bool) -> Seen:
        start = trio.current_time()
        async with open_websocket(self.target.base, path, origin=self.origin) as ws:
            return await _socket_seen(ws, run, trio.current_time() - start)

    async def _diagnosed(self) -> Seen:
        answer = await diagnose(self.target.base, min_version=PROTOCOL_VERSION, origin=self.origin)
        return Seen(opened=True, answer=answer)

    async def _tunnelled_get(self) -> Seen:
        async with (
            open_client(
                self.target.base,
                auth_url=self.target.auth_url,
                min_version=PROTOCOL_VERSION,
                origin=self.origin,
            ) as client,
            # A tunnelled request names the whole path on the backend, base path included (a
            # proxied_ws path, by contrast, is relative: the proxy adds the base path to it).
            await client.request("GET", self.target.path("/api/kernelspecs")) as response,
        ):
            # Whole, up to a cap: the judge parses it, and a list of many kernel specs (one per
            # conda environment) is well over 64 KiB.
            parts: list[bytes] = []
            size = 0
            async for chunk in response.body():
                parts.append(chunk[: TUNNEL_BODY_LIMIT - size])
                size += len(parts[-1])
                if size == TUNNEL_BODY_LIMIT:
                    break
            return Seen(
                status=response.status,
                reason=response.status_text,
                proxy_error=response.is_proxy_error,
                body=b"".join(parts),
                opened=True,
            )

    async def _tunnelled_ws(self, path: str, run: bool) -> Seen:
        start = trio.current_time()
        async with open_proxied_websocket(
            self.target.base, path, auth_url=self.target.auth_url, origin=self.origin
        ) as ws:
            return await _socket_seen(ws, run, trio.current_time() - start)
