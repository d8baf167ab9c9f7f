"""TLS both ways: the proxy serving https/wss, and an https backend with a custom CA (trustme)."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlencode

import pytest
import trio
import trustme

import trio_httpws

from ..support.fake_backend import FakeBackend
from ..support.proxies import running_proxy
from ..support.ws import connect, fetch


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture
async def tls_proxy(
    ca: trustme.CA, tls_backend: FakeBackend, ca_file: str, tmp_path: Path, door: str
) -> AsyncIterator[str]:
    cert = ca.issue_cert("127.0.0.1", "localhost")
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    config = trio_httpws.Config(backend=tls_backend.url, backend_ca=ca_file)
    async with running_proxy(config, door, certfile=str(certfile), keyfile=str(keyfile)) as url:
        yield url.replace("http://", "https://")


def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


async def test_wss_proxy_to_https_backend(tls_proxy: str, ca: trustme.CA) -> None:
    auth = urlencode({"jupyter_http_over_ws_auth_url": f"{tls_proxy}/fake-auth"})
    async with connect(
        tls_proxy, "/http_over_websocket?" + auth, ssl_context=client_context(ca)
    ) as ws:
        response = await fetch(ws, "1", "GET", "/requires-cookies-from-fake-auth")
    assert response.status == 200
    assert response.body == b'X-Test-Cookie: "1" X-Other-Test-Cookie: "2"'


async def test_auth_url_must_match_the_tls_scheme(tls_proxy: str, ca: trustme.CA) -> None:
    plain = tls_proxy.replace("https://", "http://")
    auth = urlencode({"jupyter_http_over_ws_auth_url": f"{plain}/fake-auth"})
    async with connect(
        tls_proxy, "/http_over_websocket?" + auth, ssl_context=client_context(ca)
    ) as ws:
        response = await fetch(ws, "1", "GET", "/requires-cookies-from-fake-auth")
    assert response.status == 500


async def test_proxied_wss_to_https_backend(tls_proxy: str, ca: trustme.CA) -> None:
    async with connect(
        tls_proxy,
        "/http_over_websocket/proxied_ws/plain-echo-ws",
        ssl_context=client_context(ca),
    ) as ws:
        await ws.send_message("over tls")
        assert await ws.get_message() == "over tls"


async def test_backend_with_untrusted_certificate_is_a_502(
    tls_backend: FakeBackend, door: str
) -> None:
    config = trio_httpws.Config(backend=tls_backend.url)  # system CAs only: not our trustme CA
    async with running_proxy(config, door) as url, connect(url) as ws:
        response = await fetch(ws, "1", "GET", "/api/sessions")
    assert response.status == 502
    assert "CERTIFICATE_VERIFY_FAILED" in response.first["statusText"]


async def test_reverse_proxy_over_https(tls_proxy: str, ca: trustme.CA) -> None:
    host, port = tls_proxy.removeprefix("https://").split(":")
    tcp = await trio.open_tcp_stream(host, int(port))
    # https_compatible: HTTPS servers may close without a TLS close_notify.
    stream = trio.SSLStream(tcp, client_context(ca), server_hostname=host, https_compatible=True)
    async with stream:
        await stream.send_all(
            f"GET /api/sessions HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode()
        )
        data = b""
        with trio.fail_after(10):
            while chunk := await stream.receive_some(65536):
                data += chunk
    assert data.startswith(b"HTTP/1.1 200")
    assert data.endswith(b"ok")


async def test_alpn_offers_http_1_1_only(tls_proxy: str, ca: trustme.CA, door: str) -> None:
    """A client that prefers HTTP/2 gets HTTP/1.1 from the proxy's own door (hypercorn
    offers h2 too, which the proxy's ASGI app serves alike)."""
    context = client_context(ca)
    context.set_alpn_protocols(["h2", "http/1.1"])
    host, port = tls_proxy.removeprefix("https://").split(":")
    stream = await trio.open_ssl_over_tcp_stream(host, int(port), ssl_context=context)
    async with stream:
        await stream.do_handshake()
        chosen = stream.selected_alpn_protocol()
    assert chosen == ("http/1.1" if door == "trio" else "h2")


async def test_a_tls_handshake_that_never_comes_is_dropped(
    ca: trustme.CA, tls_backend: FakeBackend, ca_file: str, tmp_path: Path
) -> None:
    """The handshake counts against the head deadline: a silent TCP client is closed."""
    cert = ca.issue_cert("127.0.0.1")
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    config = trio_httpws.Config(backend=tls_backend.url, backend_ca=ca_file, head_timeout=0.5)
    async with running_proxy(config, "trio", certfile=str(certfile), keyfile=str(keyfile)) as url:
        host, port = url.removeprefix("http://").split(":")
        async with await trio.open_tcp_stream(host, int(port)) as stream:
            with trio.fail_after(10):
                assert await stream.receive_some(1) == b""  # closed by the proxy
