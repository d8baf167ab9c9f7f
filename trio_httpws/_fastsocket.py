"""A TCP stream for the hot path: trio's ``SocketStream`` without a scheduler pass per call.

``trio.SocketStream`` yields to the scheduler after every send and receive, even one the kernel
served at once: trio's rule that every async call is a checkpoint. A small proxied request makes
four such calls on two sockets, and in a minimal trio+h11 proxy those passes and the layers
around them were about a sixth of its CPU per request. This stream keeps the rest of the rule:

- every call checks for cancellation first, so a cancelled scope stops it as it stops trio's;
- a call the kernel cannot serve at once waits in trio's I/O manager (a full checkpoint);
- a call served at once yields only when it is the ``yield_every``-th such call in a row on this
  stream, so a loop that always finds data (a flood through a splice, a pipelining client) still
  lets every other task run, a few calls later than with trio's stream.

Errors are trio's: ``BrokenResourceError`` for a broken connection, ``ClosedResourceError`` for a
closed stream, ``BusyResourceError`` for two tasks sending (or receiving) at once.
"""

from __future__ import annotations

import contextlib
import errno
import socket
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TypeVar

import trio

_T = TypeVar("_T")
_Wait = Callable[[socket.socket], Awaitable[None]]

#: Bytes asked of the socket when the caller names no size (as trio's SocketStream).
DEFAULT_RECEIVE_SIZE = 65536
#: Calls served at once in a row after which one yields to the scheduler.
YIELD_EVERY = 4
_CLOSED_ERRNOS = frozenset({errno.EBADF, errno.ENOTSOCK})


def _stream_error(exc: OSError) -> trio.BrokenResourceError | trio.ClosedResourceError:
    if exc.errno in _CLOSED_ERRNOS:
        return trio.ClosedResourceError("this socket was already closed")
    return trio.BrokenResourceError(f"socket connection broken: {exc}")


class FastSocketStream(trio.abc.HalfCloseableStream):
    """A connected TCP socket as a trio stream; see the module's docstring for what differs.

    ``socket`` is the trio socket object around the same socket, for socket options, addresses
    and peeking, as on ``trio.SocketStream``.
    """

    def __init__(self, sock: socket.socket, *, yield_every: int = YIELD_EVERY) -> None:
        if sock.type != socket.SOCK_STREAM:
            raise ValueError("FastSocketStream requires a SOCK_STREAM socket")
        sock.setblocking(False)
        self._sock = sock
        self.socket = trio.socket.from_stdlib_socket(sock)
        self._yield_every = yield_every
        self._unyielded = 0
        self._sending = False
        self._receiving = False
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            # As trio's SocketStream: small writes go out at once, and a sender is not let
            # queue much more than the network takes (backpressure reaches the writer early).
            # An option the platform lacks is not an error.
            with contextlib.suppress(OSError):
                self.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
            if hasattr(socket, "TCP_NOTSENT_LOWAT"):
                with contextlib.suppress(OSError):
                    self.setsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT, 2**14)

    @classmethod
    def taking_over(cls, stream: trio.SocketStream) -> FastSocketStream:
        """The same connection as ``stream``, which must not be used afterwards."""
        old = stream.socket
        # Family, type and protocol given: the kernel is not asked for them again.
        return cls(socket.socket(old.family, old.type, old.proto, fileno=old.detach()))

    def setsockopt(self, level: int, option: int, value: int | bool) -> None:
        self.socket.setsockopt(level, option, value)

    def getsockopt(self, level: int, option: int) -> int:
        return self.socket.getsockopt(level, option)

    async def _call(self, attempt: Callable[[], _T], wait: _Wait) -> _T:
        """``attempt()`` once the kernel serves it, waiting in trio's I/O manager meanwhile."""
        while True:
            try:
                result = attempt()
                break
            except BlockingIOError:
                pass
            except OSError as exc:
                raise _stream_error(exc) from exc
            self._unyielded = -1  # a wait is a full checkpoint: the run starts again
            try:
                await wait(self._sock)
            except OSError as exc:  # the I/O manager's own error for this socket
                raise _stream_error(exc) from exc
        self._unyielded += 1
        if self._unyielded >= self._yield_every:
            self._unyielded = 0
            await trio.lowlevel.cancel_shielded_checkpoint()
        return result

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if max_bytes is None:
            max_bytes = DEFAULT_RECEIVE_SIZE
        elif max_bytes < 1:
            raise ValueError("max_bytes must be >= 1")
        if self._receiving:
            raise trio.BusyResourceError("another task is receiving on this stream")
        await trio.lowlevel.checkpoint_if_cancelled()
        self._receiving = True
        try:
            receive = partial(self._sock.recv, max_bytes)
            return await self._call(receive, trio.lowlevel.wait_readable)
        finally:
            self._receiving = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self.socket.did_shutdown_SHUT_WR:
            raise trio.ClosedResourceError("can't send data after sending EOF")
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this stream")
        await trio.lowlevel.checkpoint_if_cancelled()
        self._sending = True
        try:
            with memoryview(data) as view:
                if not view:
                    if self._sock.fileno() == -1:
                        raise trio.ClosedResourceError("socket was already closed")
                    await self._call(lambda: 0, trio.lowlevel.wait_writable)
                sent = 0
                while sent < len(view):
                    # Released at once: a bytearray the caller passed may be resized later.
                    with view[sent:] as rest:
                        sent += await self._call(
                            partial(self._sock.send, rest), trio.lowlevel.wait_writable
                        )
        finally:
            self._sending = False

    async def wait_send_all_might_not_block(self) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this stream")
        if self._sock.fileno() == -1:
            raise trio.ClosedResourceError
        self._sending = True
        try:
            await self.socket.wait_writable()
        except OSError as exc:
            raise _stream_error(exc) from exc
        finally:
            self._sending = False

    async def send_eof(self) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this stream")
        self._sending = True  # a send_all begun during the checkpoint is refused, as trio's
        try:
            await trio.lowlevel.checkpoint()
            if self.socket.did_shutdown_SHUT_WR:
                return  # idempotent, as trio's (macOS refuses a second shutdown)
            self.socket.shutdown(socket.SHUT_WR)
        except OSError as exc:
            raise _stream_error(exc) from exc
        finally:
            self._sending = False

    async def aclose(self) -> None:
        self.socket.close()  # wakes a task waiting on it, with ClosedResourceError
        await trio.lowlevel.checkpoint()
