"""The seam between the proxy and whatever carries the client's WebSocket.

The session and relay code talk to the client through these two small interfaces; the ASGI
adapter (``_asgi.py``), the trio-websocket adapter (``_serve.py``) and the own door's wsproto
adapter (``_wsserver.py``) each implement them, so the same proxy code runs under hypercorn, on
the proxy's own listener and embedded in a trio program.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import parse_qsl

from ._protocol import first_header


class ClientSocket(Protocol):
    """An accepted client WebSocket."""

    async def receive(self) -> str | bytes:
        """The next message; raises ``ClientDisconnected`` once the socket is closed."""

    async def receive_part(self) -> tuple[str | bytes, bool]:
        """The next part of a message, and whether more parts of the same message follow.

        A socket accepted with ``message_parts=True`` may hand over a large text message (never
        a binary one) in parts (under hypercorn, see ``_hypercorn_fix``); any other gives whole messages, each
        with False.
        """

    async def send(self, message: str | bytes) -> None:
        """Send one message; waits while the client is slow (backpressure)."""

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the socket; does nothing if it is already closed."""


class PendingSocket(Protocol):
    """A client WebSocket handshake we have not answered yet."""

    async def accept(
        self, subprotocol: str | None = None, *, message_parts: bool = False
    ) -> ClientSocket:
        """Accept the handshake; ``message_parts`` asks for large text messages in parts."""

    async def reject(self, status: int, body: str = "") -> None:
        """Refuse the handshake with an HTTP status (adapters may only be able to send 403)."""

    async def wait_gone(self) -> None:
        """Return once the client is known to have left before its handshake was answered;
        wait forever when an adapter cannot tell. Meant to be cancelled: a wait cut short
        takes nothing the client sent, so ``accept`` or ``reject`` may follow it."""


@dataclass(frozen=True)
class Upgrade:
    """What we know about the client's upgrade request, independent of the server carrying it."""

    #: "ws" or "wss"
    scheme: str
    #: The request path as the client sent it (still percent-encoded), without the query.
    raw_path: str
    #: The raw query string (no leading "?").
    query: str
    headers: Sequence[tuple[bytes, bytes]]
    #: The local address of the client's connection (the address it reached us on), when known:
    #: the DNS-rebinding check applies on loopback only.
    local_address: str | None = None
    params: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # The last value wins for a repeated parameter, as tornado's get_argument did.
        object.__setattr__(self, "params", dict(parse_qsl(self.query, keep_blank_values=True)))

    @property
    def host(self) -> str:
        return first_header(self.headers, b"host") or ""

    @property
    def origin(self) -> str | None:
        return first_header(self.headers, b"origin")

    @property
    def subprotocols(self) -> list[str]:
        value = first_header(self.headers, b"sec-websocket-protocol")
        return [p.strip() for p in value.split(",") if p.strip()] if value else []
