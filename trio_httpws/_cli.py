"""``trio-httpws`` / ``python -m trio_httpws``: serve the proxy, with a Jupyter of its own if asked."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from collections.abc import Sequence
from contextlib import AsyncExitStack
from functools import partial

import trio

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

from ._config import COLAB_ORIGIN, Config
from ._errors import HttpOverWsError
from ._jupyter import running_jupyter
from ._serve import serve

log = logging.getLogger("trio_httpws")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trio-httpws",
        description=(
            "Serve the jupyter_http_over_ws protocol in front of a Jupyter server, so a web page "
            "on another origin (Google Colab) can use it. Without --backend, starts a Jupyter "
            "Server of its own."
        ),
    )
    parser.add_argument(
        "--backend", metavar="URL", help="Jupyter server, e.g. http://127.0.0.1:8888"
    )
    parser.add_argument(
        "--allow-origin",
        action="append",
        metavar="ORIGIN",
        help=f"allowed browser origin (repeatable; '*' for any). Default: {COLAB_ORIGIN}",
    )
    parser.add_argument("--allow-origin-pat", metavar="REGEX", help="regex of allowed origins")
    parser.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="extra Host name accepted on a loopback listener (DNS-rebinding guard)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8889, help="port to listen on (0: any free)")
    parser.add_argument("--base-url", default="/", help="the backend's Jupyter base_url")
    parser.add_argument("--certfile", help="serve https/wss with this certificate (PEM)")
    parser.add_argument("--keyfile", help="private key for --certfile")
    parser.add_argument("--backend-ca", metavar="PEM", help="CA bundle for an https backend")
    parser.add_argument(
        "--jupyter-root-dir", metavar="DIR", help="root_dir of the Jupyter we start"
    )
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    parser.add_argument("--log-format", default="text", choices=["text", "json"])
    return parser


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log collectors."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            entry.update(extra)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def config_from_args(args: argparse.Namespace, backend: str) -> Config:
    origins: tuple[str, ...]
    if args.allow_origin:
        origins = tuple(args.allow_origin)
    elif args.allow_origin_pat:
        origins = ()
    else:
        origins = (COLAB_ORIGIN,)
        log.info("no --allow-origin given: allowing %s (the default)", COLAB_ORIGIN)
    return Config(
        backend=backend,
        allow_origins=origins,
        allow_origin_pat=args.allow_origin_pat,
        allow_hosts=tuple(args.allow_host),
        base_url=args.base_url,
        backend_ca=args.backend_ca,
    )


async def _watch_signals(cancel_scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.info("received %s; shutting down", signal.Signals(signum).name)
            cancel_scope.cancel()
            return


async def run(args: argparse.Namespace) -> None:
    async with AsyncExitStack() as stack, trio.open_nursery() as nursery:
        nursery.start_soon(_watch_signals, nursery.cancel_scope)
        token: str | None = None
        if args.backend:
            backend = args.backend
        else:
            log.info("no --backend given: starting a Jupyter Server")
            jupyter = await stack.enter_async_context(
                running_jupyter(root_dir=args.jupyter_root_dir)
            )
            backend, token = jupyter.url, jupyter.token
        config = config_from_args(args, backend)
        port = await nursery.start(
            partial(
                serve, config, args.host, args.port, certfile=args.certfile, keyfile=args.keyfile
            )
        )
        scheme = "https" if args.certfile else "http"
        host = f"[{args.host}]" if ":" in args.host else args.host
        if args.host in ("0.0.0.0", "::"):
            host = "127.0.0.1"
        origins = ", ".join(config.allow_origins) or "(none)"
        if config.allow_origin_pat:
            origins += f" and origins matching {config.allow_origin_pat!r}"
        lines = [f"trio-httpws: proxying {scheme}://{host}:{port} -> {config.backend_url}"]
        if token is not None:
            lines.append("Paste this URL into the front end (Colab: Connect to a local runtime):")
            lines.append(f"    {scheme}://{host}:{port}/?token={token}")
        else:
            lines.append(
                f"Use your Jupyter server's token URL with port {port} instead of its own."
            )
        lines.append(f"Allowed origins: {origins}")
        lines.append("Press Ctrl-C to stop.")
        print("\n".join(lines), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if bool(args.certfile) != bool(args.keyfile):
        build_parser().error("--certfile and --keyfile go together")
    configure_logging(args.log_level, args.log_format)
    try:
        trio.run(run, args)
    except KeyboardInterrupt:  # a second Ctrl-C while shutting down
        return 130
    except BaseException as exc:
        # Startup failures (no Jupyter, port in use, bad setting) arrive wrapped in exception
        # groups by the nursery; the user wants the one sentence, not a traceback.
        expected = _expected_errors(exc)
        if expected is None:
            raise
        for error in expected:
            log.error("%s", error)
        return 1
    return 0


def _expected_errors(exc: BaseException) -> list[BaseException] | None:
    leaves: list[BaseException] = []
    pending = [exc]
    while pending:
        current = pending.pop()
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        elif isinstance(current, (HttpOverWsError, OSError)):
            leaves.append(current)
        else:
            return None
    return leaves
