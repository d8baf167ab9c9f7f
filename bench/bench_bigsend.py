"""The big senders of scenarios 7 and w7, in a process of their own so their CPU is not the
measuring client's.

    python bench_bigsend.py KIND BASE TOKEN COOKIE SIZE [REPEATS]

KIND "direct" or "protocol" (scenario 7): connects (plain HTTP with COOKIE, or the
HTTP-over-WebSocket protocol with the auth-URL flow), prints ``ready``, waits for a line on
stdin, then POSTs SIZE bytes to ``/bench/sink`` (ASCII bytes; as one 4/3 x SIZE body_base64
message through a proxy) and prints the reply as JSON: ``{"status": ..., "body": ...}``, or
``{"error": ...}``.

KIND "ws" (w7): opens a plain WebSocket to ``BASE/bench/ws-echo`` with COOKIE (the login
cookies for BASE, as ``Target.websocket`` sends them), prints ``ready``, waits for a line on
stdin, then REPEATS times (default 1) sends one SIZE-byte text message, waits for its echo and
checks it; prints ``{"echoes": N, "ms": [...]}`` (each echo's round trip), or ``{"error": ...}``.
"""

from __future__ import annotations

import json
import sys
import time
from functools import partial
from urllib.parse import urlsplit

import trio
import trio_websocket
from bench_client import Api, HttpOverWs, RawHttp, open_ws


async def main(kind: str, base: str, token: str, cookie: str, size: int, repeats: int) -> None:
    # ASCII: the original decodes a body_base64 body as UTF-8 text.
    body = (bytes(range(32, 127)) * (size // 95 + 1))[:size]
    if kind == "ws":
        await echo_text(base, cookie, body.decode("ascii"), repeats)
        return
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


async def echo_text(base: str, cookie: str, text: str, repeats: int) -> None:
    url = f"ws://{urlsplit(base).netloc}/bench/ws-echo"
    headers = [("Cookie", cookie)] if cookie != "-" else []
    async with trio.open_nursery() as nursery:
        # The echo is as large as the message: the client's usual 8 MiB limit would refuse it.
        ws = await open_ws(nursery, url, headers, max_message=len(text) + 1024)
        print("ready", flush=True)
        await trio.to_thread.run_sync(sys.stdin.readline)
        times: list[float] = []
        result: dict[str, object]
        try:
            for _ in range(repeats):
                started = time.perf_counter()
                await ws.send_message(text)
                echo = await ws.get_message()
                times.append((time.perf_counter() - started) * 1000)
                if echo != text:
                    raise ValueError(f"the echo differs ({len(echo)} of {len(text)} characters)")
            result = {"echoes": len(times), "ms": times}
        except (ValueError, trio_websocket.ConnectionClosed) as exc:
            result = {"error": f"{type(exc).__name__}: {exc}"[:200]}
        print(json.dumps(result), flush=True)
        with trio.move_on_after(2):
            await ws.aclose()
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    kind, base, token, cookie, size = sys.argv[1:6]
    repeats = int(sys.argv[6]) if len(sys.argv) > 6 else 1
    trio.run(main, kind, base, token, cookie, int(size), repeats)
