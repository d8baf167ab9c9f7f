"""The one access line per request, for every path (tunnel, reverse HTTP, WebSocket relays).

Each line has the same fields, also attached to the record as ``fields`` for the JSON log
format. The path is logged without its query: a query may carry a token (``?token=...``).
"""

from __future__ import annotations

import logging
import time

from ._redact import log_path

access_log = logging.getLogger("trio_httpws.access")


def log_access(
    kind: str,
    method: str,
    target: str,
    status: int | None,
    nbytes: int,
    started: float,
    **extra: object,
) -> None:
    """Log one finished request; ``started`` is a ``time.perf_counter()`` reading."""
    if not access_log.isEnabledFor(logging.INFO):
        return
    fields: dict[str, object] = {
        "kind": kind,
        "method": method,
        "path": log_path(target),
        "status": status,
        "bytes": nbytes,
        "duration_ms": round((time.perf_counter() - started) * 1000, 1),
        **extra,
    }
    tail = "".join(f" {key}={value}" for key, value in extra.items())
    access_log.info(
        "%s %s %s %s %d bytes %.1f ms%s",
        kind,
        method,
        fields["path"],
        status,
        nbytes,
        fields["duration_ms"],
        tail,
        extra={"fields": fields},
    )
