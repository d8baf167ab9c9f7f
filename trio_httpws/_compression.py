"""WebSocket compression (permessage-deflate) as a setting, under hypercorn.

hypercorn accepts permessage-deflate whenever a client offers it (browsers always do) and has no
option to refuse it: ``hypercorn.protocol.ws_stream.Handshake.accept`` negotiates with a fresh
``PerMessageDeflate()`` on every handshake. Compression pays over a slow link (an SSH tunnel to a
remote runtime) and only costs CPU on loopback, so it is ``Config.ws_compression``.

The mechanism, stated plainly: :func:`install` replaces the name ``PerMessageDeflate`` in that
one hypercorn module with a subclass that declines the offer when the task accepting the
WebSocket has set :data:`accept_compression` to False (our ASGI app does, around its
``websocket.accept``: hypercorn runs the handshake inside the app's ``send`` call). A task that
sets nothing, i.e. any other ASGI app in the same process, gets hypercorn's behaviour unchanged.
If a hypercorn version moves that name, the hook is not installed and the setting is reported
as not applied (a warning), never a failure.

trio-websocket's server (``handler()``) never negotiates an extension: compression is off there
whatever the setting, and so is the backend side of every relay (trio-websocket's client does
not offer it).
"""

from __future__ import annotations

from contextvars import ContextVar

from wsproto.extensions import PerMessageDeflate

#: Set by the task that accepts a WebSocket: False declines permessage-deflate; None (unset)
#: leaves hypercorn's default (accept any offer).
accept_compression: ContextVar[bool | None] = ContextVar(
    "trio_httpws_accept_compression", default=None
)


class SwitchablePerMessageDeflate(PerMessageDeflate):
    """wsproto's permessage-deflate, declined when :data:`accept_compression` is False."""

    def accept(self, offer: str) -> bool | str | None:
        if accept_compression.get() is False:
            return None  # not enabled: wsproto then neither answers nor compresses
        return super().accept(offer)


def install() -> bool:
    """Install the hook in hypercorn (idempotent); False if this hypercorn has no such seam."""
    try:
        from hypercorn.protocol import ws_stream
    except ImportError:  # pragma: no cover - hypercorn is a dependency
        return False
    current = getattr(ws_stream, "PerMessageDeflate", None)
    if current is SwitchablePerMessageDeflate:
        return True
    if current is not PerMessageDeflate:
        return False
    setattr(ws_stream, "PerMessageDeflate", SwitchablePerMessageDeflate)  # noqa: B010
    return True
