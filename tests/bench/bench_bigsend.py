"""Scenario 7's big sender, in a process of its own so its CPU is not the measuring client's.

    python bench_bigsend.py KIND BASE TOKEN COOKIE SIZE

Connects (KIND "direct": plain HTTP with COOKIE; else the HTTP-over-WebSocket protocol with the
auth-URL flow), prints ``ready``, waits for a line on stdin, then POSTs SIZE bytes to
``/bench/sink`` (ASCII bytes; as one 4/3 x SIZE body_base64 message through a proxy) and prints the reply as
JSON: ``{"status": ..., "body": ...}``, or ``{"error": ...}``.
"""

from __future__ import annotations

import json
import sys
from functools import partial

import trio
from bench_client import Api, HttpOverWs, RawHttp


async def main(kind: str, base: str, token: str, cookie: str, size: int) -> None:
    # ASCII: the original decodes a body_base64 body as UTF-8 text.
    body = (bytes(range(32, 127)) * (size // 95 + 1))[:size]
    async with trio.open_nursery() as nursery:
        api: Api
        if kind == "direct":
            api = await RawHttp.connect(base, cookie)
            send = partial(api.request, "POST", "/bench/sink", body)
        else:
            tunnel = await HttpOverWs.connect(nursery, base, token)
            api = tunnel
            send = partial(tunnel.request, "POST", "/bench/sink", body, as_base64=True)
        print("ready", flush=True)
        await trio.to_thread.run_sync(sys.stdin.readline)
        try:
            reply = await send()
            result = {"status": reply.status, "body": reply.body.decode("latin-1")[:200]}
        except Exception as exc:
            result = {"error": f"{type(exc).__name__}: {exc}"[:200]}
        print(json.dumps(result), flush=True)
        await api.aclose()
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    kind, base, token, cookie, size = sys.argv[1:6]
    trio.run(main, kind, base, token, cookie, int(size))
