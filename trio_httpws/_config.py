"""One Config object for the proxy, built in code, from the environment or from the CLI."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from urllib.parse import urlsplit

from ._cors import OriginPolicy
from ._errors import ConfigError

DEFAULT_BACKEND = "http://127.0.0.1:8888"
COLAB_ORIGIN = "https://colab.research.google.com"
MiB = 1024 * 1024


@dataclass(frozen=True)
class BackendURL:
    scheme: str  # "http" or "https"
    host: str
    port: int

    @property
    def netloc(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"

    @property
    def ws_scheme(self) -> str:
        return "wss" if self.scheme == "https" else "ws"

    def __str__(self) -> str:
        return f"{self.scheme}://{self.netloc}"

    @classmethod
    def parse(cls, url: str) -> BackendURL:
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise ConfigError(f"backend URL {url!r} is invalid: {exc}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"backend URL {url!r} must be http://host[:port] or https://...")
        if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
            raise ConfigError(
                f"backend URL {url!r} must be scheme://host[:port] only; request paths "
                "(including a Jupyter base_url) pass through unchanged"
            )
        default = 443 if parts.scheme == "https" else 80
        return cls(parts.scheme, parts.hostname, port or default)


@dataclass(frozen=True)
class Config:
    """Everything the proxy needs to know. Immutable; use ``dataclasses.replace`` to vary it."""

    #: The Jupyter server every request goes to, as ``http(s)://host:port``.
    backend: str = DEFAULT_BACKEND
    #: Exact browser origins allowed to open our WebSockets; ``"*"`` allows every origin.
    allow_origins: tuple[str, ...] = (COLAB_ORIGIN,)
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
    #: Seconds to connect to the backend, and to wait for each read from it.
    connect_timeout: float = 10.0
    read_timeout: float = 300.0
    #: Idle keep-alive connections kept to the backend.
    max_idle_connections: int = 32
    #: Requests sent to the backend at once (over all client sockets); more wait for a slot.
    max_connections: int = 100
    #: CA bundle for an https backend (None: the system's).
    backend_ca: str | None = None
    #: Seconds in-flight work may take to finish at shutdown before it is cancelled.
    shutdown_timeout: float = 5.0
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
            "max_idle_connections",
            "max_connections",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1")
        for name in ("connect_timeout", "read_timeout", "shutdown_timeout"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive")

    def replace(self, **changes: object) -> Config:
        return replace(self, **changes)  # type: ignore[arg-type]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Config:
        """Build a Config from ``TRIO_HTTPWS_*`` variables (see the README's table)."""
        env = os.environ if environ is None else environ
        kwargs: dict[str, object] = {}
        if backend := env.get("TRIO_HTTPWS_BACKEND"):
            kwargs["backend"] = backend
        origins = env.get("TRIO_HTTPWS_ALLOW_ORIGIN")
        pattern = env.get("TRIO_HTTPWS_ALLOW_ORIGIN_PAT")
        if origins is not None or pattern:
            kwargs["allow_origins"] = tuple(
                o.strip() for o in (origins or "").split(",") if o.strip()
            )
            kwargs["allow_origin_pat"] = pattern or None
        if hosts := env.get("TRIO_HTTPWS_ALLOW_HOSTS"):
            kwargs["allow_hosts"] = tuple(h.strip() for h in hosts.split(",") if h.strip())
        if base_url := env.get("TRIO_HTTPWS_BASE_URL"):
            kwargs["base_url"] = base_url
        if ca := env.get("TRIO_HTTPWS_BACKEND_CA"):
            kwargs["backend_ca"] = ca
        for key, name, kind in (
            ("TRIO_HTTPWS_MAX_MESSAGE_SIZE", "max_message_size", int),
            ("TRIO_HTTPWS_MAX_IN_FLIGHT", "max_in_flight", int),
            ("TRIO_HTTPWS_MAX_CONNECTIONS", "max_connections", int),
            ("TRIO_HTTPWS_CONNECT_TIMEOUT", "connect_timeout", float),
            ("TRIO_HTTPWS_READ_TIMEOUT", "read_timeout", float),
        ):
            if (raw := env.get(key)) is not None:
                try:
                    kwargs[name] = kind(raw)
                except ValueError:
                    raise ConfigError(f"{key}={raw!r} is not a valid {kind.__name__}") from None
        return cls(**kwargs)  # type: ignore[arg-type]
