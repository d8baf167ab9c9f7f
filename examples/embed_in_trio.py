"""Embed trio_httpws in a trio program, next to tasks of its own.

    python examples/embed_in_trio.py --backend http://127.0.0.1:8888 --token T

One nursery runs a ticker task (standing in for the rest of your program) and the proxy twice:

* ``port = await nursery.start(trio_httpws.serve, config)``: the whole proxy (protocol,
  WebSockets, plain HTTP reverse proxy) on the proxy's own listener, on a free port it reports;
* ``trio_websocket.serve_websocket(trio_httpws.handler(config, proxy=proxy), ...)``: only the
  protocol's WebSocket endpoints, on a trio-websocket server you own (``proxy`` is shared so
  that we can close its backend connection pool ourselves).

It makes one request through each with the Python client (``GET /api/status``, logged in with
the Jupyter token through the auth URL), then cancels the nursery: the servers close their
listeners and sockets and the program exits with status 0.
"""

from __future__ import annotations

import argparse
import json
import os
from functools import partial

import trio
import trio_websocket

import trio_httpws
from trio_httpws.client import open_client


async def ticker() -> None:
    """The rest of your program: it keeps running while the proxy serves."""
    for tick in range(1_000_000):
        print(f"tick {tick}", flush=True)
        await trio.sleep(0.5)


async def get_status(base: str, token: str) -> str:
    """``GET /api/status`` through the proxy at ``base``; returns a one-line summary."""
    async with (
        open_client(base, auth_url=f"{base}/?token={token}") as client,
        await client.request("GET", "/api/status") as response,
    ):
        body = json.loads(await response.read())
    return f"{response.status} {response.status_text}, {body['kernels']} kernel(s) running"


async def main(backend: str, token: str) -> None:
    config = trio_httpws.Config(backend=backend)
    proxy = trio_httpws.Proxy(config)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ticker)

            port = await nursery.start(trio_httpws.serve, config)  # 127.0.0.1, any free port
            print(f"own server: {await get_status(f'http://127.0.0.1:{port}', token)}")

            ws_server = await nursery.start(
                partial(
                    trio_websocket.serve_websocket,
                    trio_httpws.handler(config, proxy=proxy),
                    "127.0.0.1",
                    0,
                    ssl_context=None,
                    max_message_size=config.max_message_size,
                )
            )
            ws_base = f"http://127.0.0.1:{ws_server.port}"
            print(f"trio-websocket server: {await get_status(ws_base, token)}")

            nursery.cancel_scope.cancel()  # stops the ticker and both servers
    finally:
        await proxy.aclose()
    print("stopped cleanly")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default="http://127.0.0.1:8888", help="the Jupyter server")
    parser.add_argument("--token", default=os.environ.get("JUPYTER_TOKEN"), help="Jupyter token")
    args = parser.parse_args()
    if not args.token:
        parser.error("--token (or JUPYTER_TOKEN) is required")
    trio.run(main, args.backend, args.token)
