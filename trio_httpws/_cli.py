"""``trio-httpws`` / ``python -m trio_httpws``: serve the proxy, with a Jupyter of its own if asked."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from functools import partial
from pathlib import Path

import trio

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

from . import __version__, doctor
from ._config import (
    SETTINGS,
    Config,
    Setting,
    settings_from_env,
    with_origin_default,
)
from ._errors import ConfigError, HttpOverWsError
from ._jupyter import running_jupyter
from ._metrics import load_exporter
from ._platform import STOP_SIGNALS
from ._protocol import COLAB_ORIGINS, PROTOCOL_VERSION
from ._proxy import Proxy
from ._redact import RedactingParser, redact
from ._serve import DEFAULT_SERVER, SERVERS, serve

log = logging.getLogger("trio_httpws")


def _flag_type(setting: Setting) -> Callable[[str], object]:
    def parse(raw: str) -> object:
        try:
            return setting.parse(raw)
        except ValueError as exc:  # argparse would print its own "invalid value 'raw'"
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = setting.name
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = RedactingParser(
        prog="trio-httpws",
        usage="%(prog)s [options]\n       %(prog)s doctor [options] URL",
        description=(
            "Serve the jupyter_http_over_ws protocol in front of a Jupyter server, so a web page "
            "on another origin (Google Colab) can use it. Without --backend (or "
            "TRIO_HTTPWS_BACKEND), starts a Jupyter Server of its own."
        ),
        epilog=(
            "Each proxy setting can also be given as the environment variable in brackets, as "
            "for `hypercorn trio_httpws:app`; a flag wins over its variable. "
            "`trio-httpws doctor URL` checks, as a front end on another origin would, whether "
            "it can connect to the runtime at URL, and says how to fix what fails (see "
            "`trio-httpws doctor --help`)."
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
        "--log-level",
        default="warning",
        choices=["debug", "info", "warning", "error"],
        help="what the screen (stderr) shows after the start lines: warning (the default) "
        "warnings and errors; info each request too; debug also Jupyter's own log",
    )
    parser.add_argument(
        "--log-file",
        metavar="PATH",
        help="the whole log, appended to: each request, and the log of the Jupyter we start "
        "(default: a new file in the temporary directory, named in the start lines)",
    )
    parser.add_argument("--log-format", default="text", choices=["text", "json"])
    parser.add_argument(
        "--access-log-stdout",
        action="store_true",
        help="also write each request's access line to stdout, after the start lines (with "
        "--log-format json, one JSON object per line, for log collectors)",
    )
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


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: The access line's logger: ``--access-log-stdout`` gives it a handler of its own.
ACCESS_LOGGER = "trio_httpws.access"


def configure_logging(
    level: str, fmt: str, log_file: Path | None = None, access_to_stdout: bool = False
) -> None:
    """The screen (stderr) gets ``level`` and up; ``log_file`` gets everything from INFO up
    (``level`` if lower); with ``access_to_stdout`` the access lines also go to stdout."""
    formatter = JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT)
    screen = logging.StreamHandler(sys.stderr)
    screen.setLevel(level.upper())
    handlers: list[logging.Handler] = [screen]
    if log_file is not None:
        to_file = logging.FileHandler(log_file, encoding="utf-8")
        to_file.setLevel(min(logging.INFO, screen.level))
        handlers.append(to_file)
    for handler in handlers:
        handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = handlers
    root.setLevel(min(handler.level for handler in handlers))
    access = logging.getLogger(ACCESS_LOGGER)
    access.handlers[:] = []
    if access_to_stdout:
        stdout = logging.StreamHandler(sys.stdout)
        stdout.setLevel(logging.INFO)
        stdout.setFormatter(formatter)
        access.addHandler(stdout)
        access.setLevel(logging.INFO)


def open_log_file(path: str | None) -> tuple[Path, bool]:
    """The log file to append to, and whether we created it. A new one is readable by its
    owner only (Jupyter's own log names the paths it serves)."""
    if path is not None:
        return Path(path), False
    fd, name = tempfile.mkstemp(prefix="trio-httpws-", suffix=".log")
    os.close(fd)
    return Path(name), True


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
        log.info("no origin given: allowing %s (the default)", ", ".join(COLAB_ORIGINS))
    return Config(**values)  # type: ignore[arg-type]


def _starts_jupyter(args: argparse.Namespace, environ: Mapping[str, str]) -> bool:
    return args.backend is None and not environ.get("TRIO_HTTPWS_BACKEND")


async def _watch_signals(signals: AsyncIterator[int], serving: trio.CancelScope) -> None:
    async for signum in signals:
        name = signal.Signals(signum).name
        if not serving.cancel_called:
            log.info("received %s; shutting down", name)
            serving.cancel()
        else:
            # Stopping is bounded (the grace, then Jupyter's stop); cutting it short would leave
            # Jupyter or its kernels running.
            log.warning("received %s again: still stopping the proxy and Jupyter", name)


async def run(
    args: argparse.Namespace, config: Config, start_jupyter: bool, log_file: Path | None = None
) -> None:
    # Signals are watched from the start (a SIGTERM while Jupyter starts still stops it) to the
    # end of the shutdown: a second Ctrl-C must not interrupt stopping Jupyter half-way.
    with trio.open_signal_receiver(*STOP_SIGNALS) as signals:
        async with trio.open_nursery() as watcher:
            with trio.CancelScope() as serving:
                watcher.start_soon(_watch_signals, signals, serving)
                await _serve_until_cancelled(args, config, start_jupyter, log_file)
            watcher.cancel_scope.cancel()


async def _serve_until_cancelled(
    args: argparse.Namespace, config: Config, start_jupyter: bool, log_file: Path | None
) -> None:
    # The server's nursery nests inside Jupyter's lifetime, so Jupyter stops after the proxy did.
    async with AsyncExitStack() as stack:
        token: str | None = None
        # Jupyter's own log is long and shows its own URL, the wrong one to paste: it goes to
        # the log file, and to the screen only when asked for with debug.
        jupyter_to_file = start_jupyter and log_file is not None and args.log_level != "debug"
        if start_jupyter:
            log.info("no --backend given: starting a Jupyter Server")
            output = None
            if jupyter_to_file:
                assert log_file is not None
                output = stack.enter_context(log_file.open("ab")).fileno()
            jupyter = await stack.enter_async_context(
                running_jupyter(
                    root_dir=args.jupyter_root_dir, base_url=config.base_url, output=output
                )
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
        lines.append(f"Allowed origins: {origins}")
        if log_file is not None:
            what = "each request, Jupyter's own log" if jupyter_to_file else "each request"
            lines.append(f"Log ({what}): {log_file}")
        if proxy.metrics_port is not None:
            metrics_host = config.metrics_host
            if ":" in metrics_host:
                metrics_host = f"[{metrics_host}]"
            lines.append(f"Prometheus metrics: http://{metrics_host}:{proxy.metrics_port}/metrics")
        if token is not None:
            url = f"{scheme}://{host}:{port}{config.base_url}?token={token}"
            lines.append("Paste this URL into the front end (Colab: Connect to a local runtime):")
            lines.append(f"    {url}")
            if not args.certfile:
                # Under TLS our certificate is the user's to trust, not the self-check's.
                lines.append(await doctor.self_check(url, config.allow_origins))
        else:
            lines.append(
                f"Use your Jupyter server's token URL with port {port} instead of its own."
            )
        lines.append("Press Ctrl-C to stop.")
        print("\n".join(lines), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["doctor"]:
        return doctor.main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if bool(args.certfile) != bool(args.keyfile):
        parser.error("--certfile and --keyfile go together")
    try:
        log_file, created = open_log_file(args.log_file)
        configure_logging(args.log_level, args.log_format, log_file, args.access_log_stdout)
    except OSError as exc:
        parser.error(f"--log-file: {exc}")
    # Every setting is checked before anything starts: a bad one exits with status 2 and the
    # one sentence, as a bad flag does.
    try:
        config = config_from_args(args, os.environ)
        if config.metrics_port is not None:
            load_exporter()  # before Jupyter starts: a missing install fails at once
    except ConfigError as exc:
        if created:
            logging.shutdown()
            log_file.unlink(missing_ok=True)
        parser.error(str(exc))
    try:
        trio.run(run, args, config, _starts_jupyter(args, os.environ), log_file)
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
