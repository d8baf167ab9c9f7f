"""How a request or a socket ended: one word for the access line of every door.

Pure: no I/O. Each door (hypercorn's ASGI app, the proxy's own listener, ``handler()`` under
trio-websocket) names the end of what it served with one of these, so the logs of all doors,
and any count made from them, read alike.
"""

from __future__ import annotations

import enum


class Outcome(str, enum.Enum):
    """How one HTTP exchange or one WebSocket ended."""

    #: An HTTP answer went out whole (whatever its status).
    COMPLETE = "complete"
    #: The client sent a WebSocket Close frame.
    CLIENT_CLOSE = "client_close"
    #: The backend sent a WebSocket Close frame.
    BACKEND_CLOSE = "backend_close"
    #: The client's connection ended without a Close frame, or before an HTTP answer was whole.
    CLIENT_LEFT = "client_left"
    #: The backend's connection ended without a Close frame, or in the middle of a body.
    BACKEND_LOST = "backend_lost"
    #: The backend could not be reached, timed out or answered nonsense: our 502/503/504.
    BACKEND_ERROR = "backend_error"
    #: The backend refused a WebSocket upgrade with an HTTP status.
    BACKEND_REFUSED = "backend_refused"
    #: Refused by the proxy before the backend saw anything.
    REFUSED_ORIGIN = "refused_origin"
    REFUSED_HOST = "refused_host"
    BAD_REQUEST = "bad_request"
    #: The request head did not arrive within the head deadline.
    HEAD_TIMEOUT = "head_timeout"
    #: The proxy was shutting down.
    SHUTDOWN = "shutdown"
    #: A bug or an unexpected failure of ours (logged with its traceback).
    ERROR = "error"


#: The access line's status for a request whose client left (or cancelled it) before an answer:
#: nginx's code for it, so that no line reads "None".
CLIENT_LEFT_STATUS = 499


def logged_status(status: int | None, client_left: bool) -> int | None:
    """The status an access line shows: the answer's, else 499 if the client left before it
    (None: no answer, and the client is still there, as in a shutdown)."""
    return CLIENT_LEFT_STATUS if status is None and client_left else status


def client_ended(code: int | None) -> Outcome:
    """How a socket the client ended ended: with a Close frame (its code), or without one.

    hypercorn does not tell an app the client's close code (it reports 1006 for every close),
    so under hypercorn every end the client starts reads ``client_left``.
    """
    return Outcome.CLIENT_LEFT if code is None or code == 1006 else Outcome.CLIENT_CLOSE
