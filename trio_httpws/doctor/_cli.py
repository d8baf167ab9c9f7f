"""The doctor's entry points: :func:`doctor` (probe, then judge), :func:`self_check` (the
proxy's startup line) and :func:`main`, its command line (argparse, logging, exit codes).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import trio

from .._protocol import COLAB_ORIGIN
from .._redact import RedactingFormatter, RedactingParser, log_to_stderr, redact_tokens
from ._judgement import Report, assess
from ._probes import DEFAULT_TIMEOUT, probe
from ._report import render_json, render_text, verdict_line
from ._seen import parse_target

#: Seconds the startup self-check may take in all.
SELF_CHECK_DEADLINE = 20.0


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
