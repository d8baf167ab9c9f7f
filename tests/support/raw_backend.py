"""A scripted TCP backend on 127.0.0.1: each connection runs a handler the test writes, so every
byte the proxy sends and every moment the backend answers (or never does) is the test's."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial

import trio

Handler = Callable[[trio.abc.Stream], Awaitable[None]]


@dataclass
class Seen:
    """What a scripted backend received: every byte, and whether the proxy hung up."""

    data: bytes = b""
    eof: trio.Event = field(default_factory=trio.Event)


@asynccontextmanager
async def raw_backend(handle: Handler) -> AsyncIterator[str]:
    """A TCP server on 127.0.0.1 that runs ``handle`` per connection; yields its URL."""

    async def wrapped(stream: trio.SocketStream) -> None:
        try:
            await handle(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await trio.aclose_forcefully(stream)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, wrapped, 0, host="127.0.0.1"))
        yield f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
        nursery.cancel_scope.cancel()


async def read_head(stream: trio.abc.Stream) -> tuple[bytes, bytes]:
    """An HTTP head (through its blank line) and whatever came after it in the same reads."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = bytes(await stream.receive_some(65536))
        assert chunk, f"connection ended inside a head: {data!r}"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head + b"\r\n\r\n", rest


async def read_all(stream: trio.abc.Stream) -> bytes:
    """Everything until EOF (a reset counts as EOF)."""
    data = b""
    try:
        while chunk := bytes(await stream.receive_some(65536)):
            data += chunk
    except trio.BrokenResourceError:
        pass
    return data


class NeverAnswers:
    """A backend ``Handler`` that reads an upgrade head and never answers it (as if it would,
    within ``read_timeout``): ``asked`` once the head came, ``hung_up`` once the proxy closed
    the connection, and ``after_head``, what the proxy sent past its head meanwhile."""

    def __init__(self) -> None:
        self.asked = trio.Event()
        self.hung_up = trio.Event()
        self.after_head = b""

    async def __call__(self, stream: trio.abc.Stream) -> None:
        _, rest = await read_head(stream)
        self.asked.set()
        self.after_head = rest + await read_all(stream)
        self.hung_up.set()
