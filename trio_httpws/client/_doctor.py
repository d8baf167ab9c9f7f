"""``trio-httpws doctor URL``: behave as a front end on another origin would, and say what fails.

The probes here are thin trio I/O over the client's own pieces (``http_request``,
``open_websocket``, ``diagnose``, ``open_client``, ``open_proxied_websocket``); each records what
it saw as a :class:`~._diagnosis.Seen` and never judges. ``_diagnosis.assess`` judges. Every probe
has its own deadline, so one that hangs becomes a failed step, not a hung doctor.
"""

from __future__ import annotations

import argparse
import sys
import uuid
from collections.abc import Awaitable, Callable, Sequence

import trio
import trio_websocket

from .._config import COLAB_ORIGIN
from .._protocol import PROTOCOL_VERSION, close_of
from .._redact import RedactingFormatter, RedactingParser, log_to_stderr, redact_tokens
from ._diagnosis import (
    KERNEL_CODE,
    NO_KERNEL_WS_PATH,
    PREFLIGHT_HEADERS,
    PREFLIGHT_METHOD,
    TUNNEL_BODY_LIMIT,
    Observations,
    Report,
    Seen,
    Target,
    assess,
    parse_target,
    render_json,
    render_text,
    verdict_line,
)
from ._errors import ClientError, ConnectionRefused
from ._http import http_request
from ._kernel import run_code
from ._mux import open_client
from ._ws import diagnose, open_proxied_websocket, open_websocket

DEFAULT_TIMEOUT = 30.0
#: How long a socket opened without a kernel is watched for a close right after it opened (a
#: tunnel accepts first, then closes with the backend's refusal), at least; over a slow link
#: (an SSH tunnel to a remote runtime) that refusal takes round trips, so the watch is also at
#: least SETTLE_ROUND_TRIPS times what opening the socket took.
SETTLE_TIME = 0.5
SETTLE_ROUND_TRIPS = 4
#: Seconds the startup self-check may take in all.
SELF_CHECK_DEADLINE = 20.0


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
    target: Target,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> Seen:
    response = await http_request(target.base, method, path, headers=headers, body=body)
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
    api = await _timed(step_timeout, lambda: _http(target, "GET", "/api"))
    if api.status != 200:
        return Observations(api=api)
    status = await _timed(
        step_timeout, lambda: _http(target, "GET", "/api/status" + target.query())
    )
    if status.status != 200:
        return Observations(api=api, status=status)

    preflight = await _timed(
        step_timeout,
        lambda: _http(
            target,
            "OPTIONS",
            "/api/sessions" + target.query(),
            {
                "Origin": origin,
                "Access-Control-Request-Method": PREFLIGHT_METHOD,
                "Access-Control-Request-Headers": PREFLIGHT_HEADERS,
                "Access-Control-Request-Private-Network": "true",
            },
        ),
    )
    get = await _timed(
        step_timeout,
        lambda: _http(target, "GET", "/api/kernelspecs" + target.query(), {"Origin": origin}),
    )

    started: Seen | None = None
    kernel_id: str | None = None
    if kernel:
        started = await _timed(
            step_timeout,
            lambda: _http(
                target,
                "POST",
                "/api/kernels" + target.query(),
                {"Content-Type": "application/json"},
                b"{}",
            ),
        )
        info = started.json()
        if started.status == 201 and isinstance(info, dict):
            kernel_id = str(info.get("id"))
    if kernel_id is None:
        sockets = await _probe_sockets(target, origin, kernel, None, step_timeout)
        return Observations(api, status, preflight, get, started, *sockets)
    try:
        sockets = await _probe_sockets(target, origin, kernel, kernel_id, step_timeout)
    finally:
        # Even when the doctor is cancelled (Ctrl-C), the kernel it started goes.
        with trio.CancelScope(shield=True):
            delete = await _timed(
                step_timeout,
                lambda: _http(target, "DELETE", f"/api/kernels/{kernel_id}" + target.query()),
            )
    return Observations(api, status, preflight, get, started, *sockets, delete=delete)


async def _probe_sockets(
    target: Target, origin: str, kernel: bool, kernel_id: str | None, step_timeout: float
) -> tuple[Seen, Seen, Seen | None, Seen | None]:
    """The kernel socket straight to the runtime, then the tunnel's three steps."""
    session = uuid.uuid4().hex
    if kernel_id is not None:
        ws_path = f"/api/kernels/{kernel_id}/channels"
    elif kernel:
        ws_path = f"/api/kernels/{uuid.uuid4()}/channels"  # judged as a failed kernel.start
    else:
        ws_path = NO_KERNEL_WS_PATH
    run = kernel_id is not None

    async def direct() -> Seen:
        path = ws_path + target.query(session_id=session)
        start = trio.current_time()
        async with open_websocket(target.base, path, origin=origin) as ws:
            return await _socket_seen(ws, run, trio.current_time() - start)

    async def diagnosed() -> Seen:
        answer = await diagnose(target.base, min_version=PROTOCOL_VERSION, origin=origin)
        return Seen(opened=True, answer=answer)

    async def tunnelled_get() -> Seen:
        async with (
            open_client(
                target.base, auth_url=target.url, min_version=PROTOCOL_VERSION, origin=origin
            ) as client,
            await client.request("GET", "/api/kernelspecs") as response,
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

    async def tunnelled_ws() -> Seen:
        start = trio.current_time()
        async with open_proxied_websocket(
            target.base, f"{ws_path}?session_id={session}", auth_url=target.url, origin=origin
        ) as ws:
            return await _socket_seen(ws, run, trio.current_time() - start)

    direct_ws = await _timed(step_timeout, direct)
    diag = await _timed(step_timeout, diagnosed)
    if diag.answer is None and diag.status in (403, 404):
        return direct_ws, diag, None, None  # no tunnel, or not for this origin: judged as such
    return (
        direct_ws,
        diag,
        await _timed(step_timeout, tunnelled_get),
        await _timed(step_timeout, tunnelled_ws),
    )


async def doctor(
    url: str,
    origin: str = COLAB_ORIGIN,
    *,
    kernel: bool = True,
    step_timeout: float = DEFAULT_TIMEOUT,
) -> Report:
    """Probe the runtime at ``url`` (the URL a user pastes) from ``origin`` and judge it."""
    target = parse_target(url)
    observations = await probe(target, origin, kernel=kernel, step_timeout=step_timeout)
    return assess(target, origin, observations, kernel=kernel)


async def self_check(
    url: str, allowed_origins: Sequence[str] = (), step_timeout: float = 5.0
) -> str:
    """The no-kernel doctor against a runtime we just started: its one-line verdict.

    It asks from the first exact allowed origin (Colab's when there is none). Bounded as a whole,
    since the user waits for the URL printed after it.
    """
    origin = next((o for o in allowed_origins if o != "*"), COLAB_ORIGIN)
    with trio.move_on_after(SELF_CHECK_DEADLINE):
        try:
            report = await doctor(url, origin, kernel=False, step_timeout=step_timeout)
        except ValueError as exc:
            # Not parse_target(url) here for the token: it may be what raised. Every token=
            # value goes either way, and parse_target's own messages are redacted already.
            return redact_tokens(f"Self-check failed: {exc}")
        return verdict_line(report)
    return (
        f"Self-check: no verdict within {SELF_CHECK_DEADLINE:g} s; "
        "run trio-httpws doctor with the URL above"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = RedactingParser(
        prog="trio-httpws doctor",
        description=(
            "Behave as a front end (Colab) would against the runtime at URL, from --origin, and "
            "say for each step what it saw and, for each failure, how to fix it. Exit status 0 "
            "when at least one way of connecting works end to end."
        ),
    )
    parser.add_argument(
        "url", metavar="URL", help="the URL you would paste, e.g. http://localhost:8889/?token=..."
    )
    parser.add_argument(
        "--origin", default=COLAB_ORIGIN, help=f"the front end's origin (default: {COLAB_ORIGIN})"
    )
    parser.add_argument(
        "--no-kernel", action="store_true", help="do not start a kernel (nor run code on one)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="S",
        help=f"seconds allowed for each step (default {DEFAULT_TIMEOUT:g})",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``trio-httpws doctor ...``: 0 if a flow works, 1 if none does, 2 for a usage error."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        target = parse_target(args.url)
    except ValueError as exc:
        parser.error(str(exc))
    # Errors of the client go to stderr, without the token.
    log_to_stderr(
        RedactingFormatter("%(levelname)s %(name)s: %(message)s", [target.token]), "error"
    )

    async def run() -> Report:
        return await doctor(
            args.url, args.origin, kernel=not args.no_kernel, step_timeout=args.timeout
        )

    report = trio.run(run)
    sys.stdout.write(render_json(report) if args.json else render_text(report))
    sys.stdout.flush()
    return 0 if report.ok else 1
