"""The small error hierarchy of trio_httpws."""

from __future__ import annotations


class HttpOverWsError(Exception):
    """Base class of every error trio_httpws raises on purpose."""


class ConfigError(HttpOverWsError, ValueError):
    """A setting is invalid (bad backend URL, bad origin pattern, ...)."""


class AuthUrlError(HttpOverWsError):
    """The auth URL was refused (another origin) or fetching it failed."""


class BackendError(HttpOverWsError):
    """The backend could not be reached, or broke the HTTP protocol or the connection."""

    #: The HTTP status the client gets for this failure.
    status = 502

    def __init__(self, message: str, *, before_response: bool = False) -> None:
        super().__init__(message)
        #: True when no byte of a response had arrived.
        self.before_response = before_response


class BackendTimeout(BackendError):
    """The backend did not connect, answer or read our request within the configured timeout."""


class BackendBusy(BackendError):
    """Every connection to the backend (``max_connections``) stayed busy for ``pool_timeout``."""

    status = 503


class TooManyRedirects(BackendError):
    """The backend kept redirecting a tunnelled request past the limit (a loop, most likely)."""


class ClientDisconnected(HttpOverWsError):
    """The client's WebSocket is gone (closed by the peer or broken)."""

    def __init__(self, code: int | None = None, reason: str = "") -> None:
        super().__init__(f"client disconnected (code {code})")
        self.code = code
        self.reason = reason
