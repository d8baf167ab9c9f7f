"""A bare trio TCP splice, the benchmark's yardstick for "trio itself is not the limit".

    python bare_splice.py --backend 127.0.0.1:8888 --port 9000

Accepts on 127.0.0.1, opens one connection to the backend per client and copies bytes both
ways, one task per direction; EOF is passed on as EOF. No parsing, no policy, no logging.
"""

from __future__ import annotations

import argparse
from functools import partial

import trio

READ_SIZE = 65536


async def _copy(source: trio.SocketStream, sink: trio.SocketStream, done: trio.CancelScope) -> None:
    try:
        while data := await source.receive_some(READ_SIZE):
            await sink.send_all(data)
        await sink.send_eof()
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        done.cancel()  # a reset on one side: the other direction has nothing left to carry


async def _splice(host: str, port: int, client: trio.SocketStream) -> None:
    async with client:
        try:
            backend = await trio.open_tcp_stream(host, port)
        except OSError:
            return
        async with backend, trio.open_nursery() as nursery:
            nursery.start_soon(_copy, client, backend, nursery.cancel_scope)
            nursery.start_soon(_copy, backend, client, nursery.cancel_scope)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", required=True, help="host:port")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    host, _, port = args.backend.rpartition(":")
    handler = partial(_splice, host, int(port))
    trio.run(partial(trio.serve_tcp, handler, args.port, host="127.0.0.1"))


if __name__ == "__main__":
    main()
