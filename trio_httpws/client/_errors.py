"""The errors the client raises."""

from __future__ import annotations

from .._errors import HttpOverWsError


class ClientError(HttpOverWsError):
    """Base class of the errors this client raises."""


class ProtocolError(ClientError):
    """The server sent something the protocol does not allow (bad JSON, a frame without status)."""


class ClientConnectionError(ClientError):
    """The WebSocket could not be opened, or it is closed."""

    def __init__(self, message: str, *, code: int | None = None, reason: str = "") -> None:
        super().__init__(message)
        #: The WebSocket close code, when the socket was closed (None for a refused handshake).
        self.code = code
        #: The close reason, or the body of a refused handshake.
        self.reason = reason


class ConnectionRefused(ClientConnectionError):
    """The server refused the connection: HTTP status on the handshake, or a refusing close.

    trio_httpws closes with 4000 + an HTTP status (4400 for a ``min_version`` it cannot serve) and
    a reason. The original extension closes with the bare status (400), which wsproto turns into
    code 1002 and its own reason; ``status`` is then None.
    """

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        reason: str = "",
        status: int | None = None,
    ) -> None:
        super().__init__(message, code=code, reason=reason)
        #: The HTTP status of the refusal when known (403 for a refused origin, 400 for min_version).
        self.status = status


class ConnectionLost(ClientConnectionError):
    """The socket closed while a request needed it (or a request was made on a closed client)."""


class BodyTruncated(ClientError):
    """The server ended the response with an error after part of the body had arrived."""

    def __init__(self, status: int, status_text: str) -> None:
        super().__init__(f"response body truncated: {status} {status_text}")
        self.status = status
        self.status_text = status_text


class ResponseStalled(ClientError):
    """The response's buffer stayed full for ``stall_timeout`` seconds, so it was given up."""
