"""trio_httpws: the jupyter_http_over_ws protocol, served on trio in front of any Jupyter server.

``hypercorn --worker-class trio trio_httpws:app`` serves :data:`app`, built on first use from
the ``TRIO_HTTPWS_*`` environment variables. Programs build their own with :func:`create_app`,
or embed the WebSocket endpoints with :func:`handler` / :func:`serve`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._asgi import TrioHttpWsApp, create_app
from ._config import Config
from ._errors import (
    AuthUrlError,
    BackendError,
    BackendTimeout,
    ClientDisconnected,
    ConfigError,
    HttpOverWsError,
)
from ._protocol import PROTOCOL_VERSION
from ._proxy import Proxy
from ._serve import handler, serve

__version__ = "0.1.0"

__all__ = [
    "PROTOCOL_VERSION",
    "AuthUrlError",
    "BackendError",
    "BackendTimeout",
    "ClientDisconnected",
    "Config",
    "ConfigError",
    "HttpOverWsError",
    "Proxy",
    "TrioHttpWsApp",
    "__version__",
    "app",
    "create_app",
    "handler",
    "serve",
]

if TYPE_CHECKING:
    app: TrioHttpWsApp

_app: TrioHttpWsApp | None = None


def __getattr__(name: str) -> object:
    # `app` is built on first access, so importing the package never reads the environment and a
    # bad TRIO_HTTPWS_* variable only fails the program that serves `app`.
    global _app
    if name == "app":
        if _app is None:
            _app = create_app()
        return _app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
