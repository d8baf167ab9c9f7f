"""``trio-httpws`` / ``python -m trio_httpws``: serve the proxy, with a Jupyter of its own if asked."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from functools import partial
from typing import NoReturn

import trio

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

from . import __version__
from ._config import (
    COLAB_ORIGIN,
    SETTINGS,
    Config,
    Setting,
    redact,
    settings_from_env,
    with_origin_default,
)
from ._errors import ConfigError, HttpOverWsError
from ._jupyter import running_jupyter
from ._metrics import load_exporter
from ._platform import STOP_SIGNALS
from ._protocol import PROTOCOL_VERSION
from ._proxy import Proxy
from ._serve import DEFAULT_SERVER, SERVERS, serve
from .client import _doctor

log = logging.getLogger("trio_httpws")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # A mistyped command line often holds a token URL: never print it back.
        super().error(redact(message))


def _flag_type(setting: Setting) -> Callable[[str], object]:
    def parse(raw: str) -> object:
        try:
            return setting.parse(raw)
        except ValueError as exc:  # argparse would print its own "invalid value 'raw'"
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = setting.name
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="trio-httpws",
        description=(
            "Serve the jupyter_http_over_ws protocol in front of a Jupyter server, so a web page "
            "on another origin (Google Colab) can use it. Without --backend (or "
            "TRIO_HTTPWS_BACKEND), starts a Jupyter Server of its own."
        ),
        epilog=(
            "Each proxy setting can also be given as the environment variable in brackets, as "
            "for `hypercorn trio_httpws:app`; a flag wins over its variable."
        ),
    )
    parser.add_argument("--version", action="version", version=version_text())
    for setting in SETTINGS:
        if setting.switch:
            parser.add_argument(
                setting.flag,
                dest=setting.name,
                action=argparse.BooleanOptionalAction,
                help=f"{setting.help} [{setting.env}]",
            )
            continue
        parser.add_argument(
            setting.flag,
            dest=setting.name,
            type=_flag_type(setting),
            action="append" if setting.repeatable else "store",
            metavar=setting.metavar,
            help=f"{setting.help}{' (repeatable)' if setting.repeatable else ''} [{setting.env}]",
        )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8889, help="port to listen on (0: any free)")
    parser.add_argument(
        "--server",
        choices=SERVERS,
        default=DEFAULT_SERVER,
        help="trio: the proxy's own listener (plain WebSockets relayed byte for byte); "
        "hypercorn: hypercorn serving the ASGI app (default: %(default)s)",
    )
    parser.add_argument("--certfile", help="serve https/wss with this certificate (PEM)")
    parser.add_argument("--keyfile", help="private key for --certfile")
    parser.add_argument(
        "--jupyter-root-dir", metavar="DIR", help="root_dir of the Jupyter we start"
    )
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    parser.add_argument("--log-format", default="text", choices=["text", "json"])
    return parser


def version_text() -> str:
    return f"trio-httpws {__version__} (jupyter_http_over_ws protocol {PROTOCOL_VERSION})"


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


def config_from_args(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> Config:
    """The Config of ``TRIO_HTTPWS_*`` variables overridden by flags. Without a backend in
    either, ``backend`` is the default one: :func:`run` then starts Jupyter and replaces it."""
    values = settings_from_env(environ)
    for setting in SETTINGS:
        value = getattr(args, setting.name, None)
        if value is not None:
            values[setting.name] = tuple(value) if setting.repeatable else value
    values = with_origin_default(values)
    if "allow_origins" not in values:
        log.info("no origin given: allowing %s (the default)", COLAB_ORIGIN)
    return Config(**values)  # type: ignore[arg-type]


def _starts_jupyter(args: argparse.Namespace, environ: Mapping[str, str]) -> bool:
    return args.backend is None and not environ.get("TRIO_HTTPWS_BACKEND")


async def _watch_signals(cancel_scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(*STOP_SIGNALS) as signals:
        async for signum in signals:
            log.info("received %s; shutting down", signal.Signals(signum).name)
            cancel_scope.cancel()
            return


async def run(args: argparse.Namespace, config: Config, start_jupyter: bool) -> None:
    # Signals are watched from the start (a SIGTERM while Jupyter starts still stops it); the
    # server's nursery nests inside Jupyter's lifetime, so Jupyter stops after the proxy did.
    async with trio.open_nursery() as signals, AsyncExitStack() as stack:
        signals.start_soon(_watch_signals, signals.cancel_scope)
        token: str | None = None
        if start_jupyter:
            log.info("no --backend given: starting a Jupyter Server")
            jupyter = await stack.enter_async_context(
                running_jupyter(root_dir=args.jupyter_root_dir)
            )
            config = config.replace(backend=jupyter.url)
            token = jupyter.token
        proxy = Proxy(config)
        stack.push_async_callback(proxy.aclose)
        nursery = await stack.enter_async_context(trio.open_nursery())
        port = await nursery.start(
            partial(
                serve,
                config,
                args.host,
                args.port,
                certfile=args.certfile,
                keyfile=args.keyfile,
                server=args.server,
                proxy=proxy,
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
            url = f"{scheme}://{host}:{port}/?token={token}"
            lines.append("Paste this URL into the front end (Colab: Connect to a local runtime):")
            lines.append(f"    {url}")
            if not args.certfile:
                # Under TLS our certificate is the user's to trust, not the self-check's.
                lines.append(await _doctor.self_check(url, config.allow_origins))
        else:
            lines.append(
                f"Use your Jupyter server's token URL with port {port} instead of its own."
            )
        lines.append(f"Allowed origins: {origins}")
        if proxy.metrics_port is not None:
            metrics_host = config.metrics_host
            if ":" in metrics_host:
                metrics_host = f"[{metrics_host}]"
            lines.append(f"Prometheus metrics: http://{metrics_host}:{proxy.metrics_port}/metrics")
        lines.append("Press Ctrl-C to stop.")
        print("\n".join(lines), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["doctor"]:
        return _doctor.main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if bool(args.certfile) != bool(args.keyfile):
        parser.error("--certfile and --keyfile go together")
    # Every setting is checked before anything starts: a bad one exits with status 2 and the
    # one sentence, as a bad flag does.
    configure_logging(args.log_level, args.log_format)
    try:
        config = config_from_args(args, os.environ)
        if config.metrics_port is not None:
            load_exporter()  # before Jupyter starts: a missing install fails at once
    except ConfigError as exc:
        parser.error(str(exc))
    try:
        trio.run(run, args, config, _starts_jupyter(args, os.environ))
    except KeyboardInterrupt:  # a second Ctrl-C while shutting down
        return 130
    except BaseException as exc:
        # Startup failures (no Jupyter, port in use, bad setting) arrive wrapped in exception
        # groups by the nursery; the user wants the one sentence, not a traceback.
        expected = _expected_errors(exc)
        if expected is None:
            raise
        for error in expected:
            log.error("%s", redact(str(error)))
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
