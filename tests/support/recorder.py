"""A backend that records what reached it: an h11 server on 127.0.0.1 that answers every request
with 200 and keeps the method, target, headers and body it saw."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial

import h11
import trio


@dataclass
class Seen:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Recorder:
    url: str = ""
    seen: list[Seen] = field(default_factory=list)
    #: Extra headers of every answer, e.g. CORS headers of the backend's own.
    answer_headers: list[tuple[str, str]] = field(default_factory=list)


async def _serve_recorded(recorder: Recorder, stream: trio.SocketStream) -> None:
    conn = h11.Connection(h11.SERVER)
    request: h11.Request | None = None
    body = b""
    async with stream:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(65536)
                if not data:
                    return
                conn.receive_data(data)
            elif isinstance(event, h11.Request):
                request, body = event, b""
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert request is not None
                recorder.seen.append(
                    Seen(
                        request.method.decode(),
                        request.target.decode(),
                        {k.decode(): v.decode() for k, v in request.headers},
                        body,
                    )
                )
                payload = b"recorded"
                headers = [
                    ("Content-Length", str(len(payload))),
                    ("Content-Type", "text/plain"),
                    ("Date", "Mon, 01 Jan 2024 00:00:00 GMT"),
                    ("Server", "Recorder/1"),
                    *recorder.answer_headers,
                ]
                answer = conn.send(h11.Response(status_code=200, headers=headers))
                answer += conn.send(h11.Data(data=payload)) + conn.send(h11.EndOfMessage())
                await stream.send_all(answer)
                conn.start_next_cycle()
            else:
                return


@asynccontextmanager
async def running_recorder() -> AsyncIterator[Recorder]:
    rec = Recorder()
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            partial(trio.serve_tcp, partial(_serve_recorded, rec), 0, host="127.0.0.1")
        )
        rec.url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
        yield rec
        nursery.cancel_scope.cancel()
