"""One Config object for the proxy, built in code, from the environment or from the CLI."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from urllib.parse import urlsplit

from ._cors import OriginPolicy
from ._errors import ConfigError
from ._protocol import COLAB_ORIGINS, DEFAULT_PORTS
from ._redact import redact

DEFAULT_BACKEND = "http://127.0.0.1:8888"
MiB = 1024 * 1024


@dataclass(frozen=True)
class BackendURL:
    scheme: str  # "http" or "https"
    host: str
    port: int

    @property
    def netloc(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.scheme}://{self.netloc}"

    @classmethod
    def parse(cls, url: str) -> BackendURL:
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise ConfigError(redact(f"backend URL {url!r} is invalid: {exc}")) from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(
                redact(f"backend URL {url!r} must be http://host[:port] or https://...")
            )
        if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
            raise ConfigError(
                redact(
                    f"backend URL {url!r} must be scheme://host[:port] only; request paths "
                    "(including a Jupyter base_url) pass through unchanged"
                )
            )
        return cls(parts.scheme, parts.hostname, port or DEFAULT_PORTS[parts.scheme])


@dataclass(frozen=True)
class Config:
    """Everything the proxy needs to know. Immutable; use ``dataclasses.replace`` to vary it."""

    #: The Jupyter server every request goes to, as ``http(s)://host:port``.
    backend: str = DEFAULT_BACKEND
    #: Exact browser origins allowed to open our WebSockets; ``"*"`` allows every origin.
    allow_origins: tuple[str, ...] = COLAB_ORIGINS
    #: A regular expression (full match) of further allowed origins.
    allow_origin_pat: str | None = None
    #: Host names besides localhost/127.0.0.1/::1 accepted in Host when serving on loopback.
    allow_hosts: tuple[str, ...] = ()
    #: Jupyter's base_url: the protocol endpoints live under it.
    base_url: str = "/"
    #: Largest client WebSocket message (a request with its body) and proxied WS message.
    max_message_size: int = 64 * MiB
    #: Requests running at once per client socket; further ones wait for a slot.
    max_in_flight: int = 64
    #: Request body bytes one client socket may hold (waiting or being sent); past it the socket
    #: is not read until requests finish. One message larger than this still runs, alone.
    max_pending_bytes: int = 128 * MiB
    #: Messages above this size are parsed and base64-decoded in a worker thread, so one huge
    #: message does not stall every other socket.
    thread_parse_threshold: int = 1 * MiB
    #: Seconds to connect to the backend, and to wait for each read from it (a response, its
    #: next bytes, a WebSocket handshake's answer).
    connect_timeout: float = 10.0
    read_timeout: float = 300.0
    #: Seconds the backend may take to accept each 256 KiB of a request.
    write_timeout: float = 60.0
    #: Seconds a request may wait for one of the ``max_connections`` slots before a 503.
    pool_timeout: float = 60.0
    #: Seconds the whole auth-URL fetch (redirects included) may take.
    auth_timeout: float = 30.0
    #: Idle keep-alive connections kept to the backend.
    max_idle_connections: int = 32
    #: Requests sent to the backend at once (over all client sockets); more wait for a slot.
    max_connections: int = 100
    #: CA bundle for an https backend (None: the system's).
    backend_ca: str | None = None
    #: Seconds in-flight work may take to finish at shutdown before it is cancelled.
    shutdown_timeout: float = 5.0
    #: Accept a client's permessage-deflate offer (see _compression).
    ws_compression: bool = False
    #: Largest request head (request line and headers) a client may send; past it, 431. Tornado's
    #: own limit, so that the proxy refuses no head Jupyter would accept.
    max_head_size: int = 64 * 1024
    #: Seconds a client may take to send a whole request head once it began (slow-loris).
    #: The proxy's own listener only: under hypercorn its keep-alive deadline covers heads too.
    head_timeout: float = 10.0
    #: Seconds an idle keep-alive connection stays open between requests.
    keep_alive_timeout: float = 5.0
    #: Connections the kernel queues for the listener before they are accepted.
    backlog: int = 2048
    #: Serve Prometheus metrics (``GET /metrics``) on a listener of their own on this port
    #: (0: any free port); None: no metrics listener. Needs the ``metrics`` extra.
    metrics_port: int | None = None
    #: The address of the metrics listener: loopback unless the scraper is elsewhere.
    metrics_host: str = "127.0.0.1"
    backend_url: BackendURL = field(init=False, repr=False, compare=False)
    origin_policy: OriginPolicy = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "backend_url", BackendURL.parse(self.backend))
        if isinstance(self.allow_origins, str):
            raise ConfigError("allow_origins must be a sequence of origins, not one string")
        object.__setattr__(self, "allow_origins", tuple(self.allow_origins))
        object.__setattr__(self, "allow_hosts", tuple(self.allow_hosts))
        try:
            policy = OriginPolicy.build(self.allow_origins, self.allow_origin_pat)
        except re.error as exc:
            raise ConfigError(
                f"allow_origin_pat is not a valid regular expression: {exc}"
            ) from None
        object.__setattr__(self, "origin_policy", policy)
        if not self.base_url.startswith("/") or not self.base_url.endswith("/"):
            raise ConfigError("base_url must start and end with '/'")
        for name in (
            "max_message_size",
            "max_in_flight",
            "max_pending_bytes",
            "max_idle_connections",
            "max_connections",
            "max_head_size",
            "backlog",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ConfigError("metrics_port must be a port number, 0 to 65535")
        if not self.metrics_host:
            raise ConfigError("metrics_host must name an address")
        if self.thread_parse_threshold < 0:
            raise ConfigError("thread_parse_threshold must be 0 or more")
        for name in (
            "connect_timeout",
            "read_timeout",
            "write_timeout",
            "pool_timeout",
            "auth_timeout",
            "shutdown_timeout",
            "head_timeout",
            "keep_alive_timeout",
        ):
            if not getattr(self, name) > 0:  # "not >": NaN is refused too
                raise ConfigError(f"{name} must be positive")

    def replace(self, **changes: object) -> Config:
        return replace(self, **changes)  # type: ignore[arg-type]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Config:
        """Build a Config from ``TRIO_HTTPWS_*`` variables (see the README's table)."""
        return cls(**with_origin_default(settings_from_env(environ)))  # type: ignore[arg-type]


# -- one table for the environment and the command line -----------------------------------------


def _text(raw: str) -> str:
    return raw


def _backend(raw: str) -> str:
    BackendURL.parse(raw)
    return raw


def _positive_int(raw: str) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        raise ValueError(f"{raw!r} is not a whole number") from None
    if value < 1:
        raise ValueError(f"must be at least 1, not {value}")
    return value


def _positive_float(raw: str) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise ValueError(f"{raw!r} is not a number of seconds") from None
    if not value > 0 or value == float("inf"):
        raise ValueError(f"must be a positive number of seconds, not {raw.strip()!r}")
    return value


def _port(raw: str) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        raise ValueError(f"{raw!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise ValueError(f"must be a port number from 0 to 65535, not {value}")
    return value


def _switch(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{raw!r} is not one of 1/0, true/false, yes/no, on/off")


@dataclass(frozen=True)
class Setting:
    """One ``Config`` field as an environment variable and a command-line flag."""

    name: str
    parse: Callable[[str], object]  # one value from text; ValueError says what is wrong
    help: str
    metavar: str = "N"
    #: A tuple field: the flag repeats, the variable holds comma-separated values.
    repeatable: bool = False
    env_name: str = ""  # default: TRIO_HTTPWS_<NAME>
    flag_name: str = ""  # default: --<name-with-dashes>
    #: A bool field: the flags are --<name> and --no-<name>.
    switch: bool = False

    @property
    def env(self) -> str:
        return self.env_name or "TRIO_HTTPWS_" + self.name.upper()

    @property
    def flag(self) -> str:
        return self.flag_name or "--" + self.name.replace("_", "-")


#: Every setting a user may need, in the order ``--help`` lists them. A new Config field a user
#: may want to set is one line here (and one row in the README's table).
SETTINGS: tuple[Setting, ...] = (
    Setting("backend", _backend, "Jupyter server, e.g. http://127.0.0.1:8888", "URL"),
    Setting(
        "allow_origins",
        _text,
        f"allowed browser origin ('*' for any; default {' and '.join(COLAB_ORIGINS)})",
        "ORIGIN",
        repeatable=True,
        env_name="TRIO_HTTPWS_ALLOW_ORIGIN",
        flag_name="--allow-origin",
    ),
    Setting("allow_origin_pat", _text, "regular expression (full match) of allowed origins", "RE"),
    Setting(
        "allow_hosts",
        _text,
        "extra Host name accepted on a loopback listener (DNS-rebinding guard)",
        "NAME",
        repeatable=True,
        flag_name="--allow-host",
    ),
    Setting("base_url", _text, "the backend's Jupyter base_url (default /)", "PATH"),
    Setting("max_message_size", _positive_int, "largest WebSocket message in bytes", "BYTES"),
    Setting("max_in_flight", _positive_int, "requests running at once per client socket"),
    Setting(
        "max_pending_bytes",
        _positive_int,
        "request body bytes one client socket may hold before it is not read",
        "BYTES",
    ),
    Setting(
        "thread_parse_threshold",
        _positive_int,
        "messages of this many characters or more are parsed in a worker thread",
        "CHARS",
    ),
    Setting("max_connections", _positive_int, "requests at the backend at once, all sockets"),
    Setting("max_idle_connections", _positive_int, "idle keep-alive connections to the backend"),
    Setting("connect_timeout", _positive_float, "seconds to connect to the backend", "S"),
    Setting("read_timeout", _positive_float, "seconds to wait for each backend read", "S"),
    Setting("write_timeout", _positive_float, "seconds for the backend to take 256 KiB", "S"),
    Setting("pool_timeout", _positive_float, "seconds to wait for a backend slot (then 503)", "S"),
    Setting("auth_timeout", _positive_float, "seconds for the whole auth-URL fetch", "S"),
    Setting("shutdown_timeout", _positive_float, "grace for in-flight work at shutdown", "S"),
    Setting("max_head_size", _positive_int, "largest request head in bytes (then 431)", "BYTES"),
    Setting("head_timeout", _positive_float, "seconds to send a whole request head", "S"),
    Setting("keep_alive_timeout", _positive_float, "seconds an idle connection stays open", "S"),
    Setting("backlog", _positive_int, "connections queued for the listener before accept"),
    Setting("backend_ca", _text, "CA bundle (PEM) for an https backend", "PEM"),
    Setting(
        "metrics_port",
        _port,
        "serve Prometheus metrics at http://METRICS_HOST:PORT/metrics (a listener of its own; "
        "needs the metrics extra; default: off)",
        "PORT",
    ),
    Setting("metrics_host", _text, "address of the metrics listener (default 127.0.0.1)", "HOST"),
    Setting(
        "ws_compression",
        _switch,
        "accept the browser's WebSocket compression offer (permessage-deflate): pays over a "
        "slow link to a remote runtime, costs CPU on the same machine (default: off)",
        switch=True,
    ),
)


def settings_from_env(environ: Mapping[str, str] | None = None) -> dict[str, object]:
    """The ``Config`` fields set by ``TRIO_HTTPWS_*`` variables (an empty one counts as unset,
    except for a list, where it means an empty list)."""
    env = os.environ if environ is None else environ
    values: dict[str, object] = {}
    for setting in SETTINGS:
        raw = env.get(setting.env)
        if raw is None or (raw == "" and not setting.repeatable):
            continue
        try:
            if setting.repeatable:
                values[setting.name] = tuple(
                    setting.parse(item.strip()) for item in raw.split(",") if item.strip()
                )
            else:
                values[setting.name] = setting.parse(raw)
        except ValueError as exc:
            raise ConfigError(redact(f"{setting.env}: {exc}")) from None
    return values


def with_origin_default(values: dict[str, object]) -> dict[str, object]:
    """An origin pattern given without origins allows only what it matches (no Colab)."""
    if "allow_origins" not in values and values.get("allow_origin_pat"):
        return {**values, "allow_origins": ()}
    return values
