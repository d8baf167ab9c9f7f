"""A plain HTTP/1.1 client with h11 for tests: nothing between the test and the proxy's bytes."""

from __future__ import annotations

from dataclasses import dataclass

import h11
import trio


@dataclass
class HttpResponse:
    status: int
    #: Every header line as sent (names lower-cased by h11), repeats included.
    raw_headers: list[tuple[str, str]]
    body: bytes

    def all(self, name: str) -> list[str]:
        return [v for n, v in self.raw_headers if n == name.lower()]

    def get(self, name: str) -> str | None:
        values = self.all(name)
        return values[0] if values else None

    @property
    def headers(self) -> dict[str, str]:
        return dict(self.raw_headers)


async def http_request(
    base: str,
    method: str,
    target: str,
    *,
    headers: list[tuple[str, str]] | None = None,
    body: bytes | None = None,
    body_pieces: list[bytes] | None = None,
) -> HttpResponse:
    """One exchange on a new connection; ``body_pieces`` are sent chunked, piece by piece."""
    host, port = base.removeprefix("http://").split(":")
    all_headers = [("Host", f"{host}:{port}"), *(headers or [])]
    if body_pieces is not None:
        all_headers.append(("Transfer-Encoding", "chunked"))
    elif body is not None:
        all_headers.append(("Content-Length", str(len(body))))
    async with await trio.open_tcp_stream(host, int(port)) as stream:
        conn = h11.Connection(h11.CLIENT)
        await stream.send_all(
            conn.send(h11.Request(method=method, target=target, headers=all_headers))
        )
        for piece in body_pieces or ([body] if body else []):
            await stream.send_all(conn.send(h11.Data(data=piece)))
        await stream.send_all(conn.send(h11.EndOfMessage()))
        status, raw, data = 0, [], bytearray()
        with trio.fail_after(30):
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await stream.receive_some(1 << 20))
                elif isinstance(event, h11.Response):
                    status = event.status_code
                    raw = [(k.decode(), v.decode()) for k, v in event.headers]
                elif isinstance(event, h11.Data):
                    data += event.data
                elif isinstance(event, h11.EndOfMessage):
                    return HttpResponse(status, raw, bytes(data))


async def websocket_handshake(
    base: str, path: str, headers: list[tuple[str, str]], then_send: str | None = None
) -> tuple[HttpResponse, int | None]:
    """A raw WebSocket upgrade; with ``then_send``, one masked text frame after a 101.

    Returns the handshake's response (no body) and the first byte of the server's first frame
    (None without ``then_send``): 0x40 in it is RSV1, a compressed message.
    """
    host, port = base.removeprefix("http://").split(":")
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
        *(f"{name}: {value}" for name, value in headers),
    ]
    async with await trio.open_tcp_stream(host, int(port)) as stream:
        await stream.send_all(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        data = b""
        with trio.fail_after(30):
            while b"\r\n\r\n" not in data:
                chunk = await stream.receive_some(65536)
                assert chunk, f"connection closed during the handshake: {data!r}"
                data += chunk
            head, _, data = data.partition(b"\r\n\r\n")
            status_line, *header_lines = head.decode("latin-1").split("\r\n")
            raw = [
                (name.strip().lower(), value.strip())
                for name, _, value in (line.partition(":") for line in header_lines)
            ]
            response = HttpResponse(int(status_line.split(" ", 2)[1]), raw, b"")
            if then_send is None or response.status != 101:
                return response, None
            payload = then_send.encode()
            assert len(payload) < 126
            mask = b"\x01\x02\x03\x04"
            masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            await stream.send_all(bytes([0x81, 0x80 | len(payload)]) + mask + masked)
            while not data:
                data = await stream.receive_some(65536)
    return response, data[0]


def asgi_http_scope(method: str, path: str) -> dict[str, object]:
    """An ASGI ``http`` scope for a request without a body, as hypercorn on 127.0.0.1 builds it."""
    return {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1:1")],
        "server": ("127.0.0.1", 1),
        "scheme": "http",
    }


async def http(
    base: str,
    method: str,
    target: str,
    *,
    headers: list[tuple[str, str]] | None = None,
    body_pieces: list[bytes] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """``http_request``'s answer as (status, headers, body)."""
    response = await http_request(base, method, target, headers=headers, body_pieces=body_pieces)
    return response.status, response.headers, response.body


async def http_get(url: str, target: str) -> tuple[int, dict[str, str], bytes]:
    """A plain HTTP/1.1 GET with h11 (no client library between us and the proxy)."""
    response = await http_request(url, "GET", target)
    return response.status, response.headers, response.body
