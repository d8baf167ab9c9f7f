"""trio_httpws: the jupyter_http_over_ws protocol, served on trio in front of any Jupyter server.

``hypercorn --worker-class trio trio_httpws:app`` serves :data:`app`, built on first use from
the ``TRIO_HTTPWS_*`` environment variables. Programs build their own with :func:`create_app`,
or embed the WebSocket endpoints with :func:`handler` / :func:`serve`; :func:`serve_metrics`
serves a proxy's Prometheus metrics on a port of its own (the ``metrics`` extra).
"""

from __future__ import annotations

from typing import Any

from ._asgi import TrioHttpWsApp, create_app
from ._config import Config
from ._errors import (
    AuthUrlError,
    BackendBusy,
    BackendError,
    BackendTimeout,
    ClientDisconnected,
    ConfigError,
    HttpOverWsError,
)
from ._metrics import serve_metrics
from ._protocol import PROTOCOL_VERSION
from ._proxy import Proxy
from ._serve import handler, serve

__version__ = "0.1.0"

__all__ = [
    "PROTOCOL_VERSION",
    "AuthUrlError",
    "BackendBusy",
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
    "serve_metrics",
]


class _EnvApp:
    """``trio_httpws:app``: the ASGI app of ``Config.from_env()``, built on its first call.

    A real module attribute, because ASGI servers look ``app`` up in the module's namespace
    (hypercorn evaluates the name in ``vars(module)``, so a module ``__getattr__`` is never
    asked). Importing the package still reads no environment variable: a bad ``TRIO_HTTPWS_*``
    value fails only the program that serves ``app``, at its startup (the lifespan event).
    """

    def __init__(self) -> None:
        self._app: TrioHttpWsApp | None = None

    def get(self) -> TrioHttpWsApp:
        if self._app is None:
            self._app = create_app()
        return self._app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self._app is None and scope["type"] == "lifespan":
            try:
                self.get()
            except ConfigError as exc:
                # The server then refuses to start, with this message, instead of serving
                # every request with an error.
                await receive()  # lifespan.startup
                await send({"type": "lifespan.startup.failed", "message": str(exc)})
                return
        await self.get()(scope, receive, send)


app = _EnvApp()
