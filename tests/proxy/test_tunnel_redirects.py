"""Backend redirects on tunnelled requests: followed on the backend as the original's client did.

A real hypercorn serves trio_httpws in front of the tornado fake backend, whose /redirect,
/chain and /landing handlers script the redirects and report what the last hop received.
"""

from __future__ import annotations

import logging
from urllib.parse import quote, urlencode

import pytest

from ..support.fake_backend import XSRF_VALUE, FakeBackend
from ..support.ws import Response, connect, fetch


def redirect(status: int, to: str | None, **extra: str) -> str:
    query = {"status": str(status), **({"to": to} if to is not None else {}), **extra}
    return "/redirect?" + urlencode(query)


def landed(response: Response) -> tuple[int, str, str, bytes]:
    return (
        response.status,
        response.headers.get("X-Method", ""),
        response.headers.get("X-Uri", ""),
        response.body,
    )


@pytest.mark.parametrize(
    ("status", "method", "final_method", "keeps_body"),
    [
        (301, "POST", "GET", False),
        (302, "POST", "GET", False),
        (301, "PUT", "PUT", True),
        (302, "PATCH", "PATCH", True),
        (301, "GET", "GET", False),
        (303, "POST", "GET", False),
        (303, "PUT", "GET", False),
        (303, "DELETE", "GET", False),
        (303, "HEAD", "HEAD", False),
        (307, "POST", "POST", True),
        (307, "DELETE", "DELETE", True),
        (308, "PUT", "PUT", True),
        (308, "CUSTOMMETHOD", "CUSTOMMETHOD", True),
    ],
)
async def test_each_status_and_method(
    proxy: str, status: int, method: str, final_method: str, keeps_body: bool
) -> None:
    body = "the body" if method not in ("GET", "HEAD") else None
    async with connect(proxy) as ws:
        response = await fetch(ws, "1", method, redirect(status, "/landing?a=1"), body=body)
    assert len(response.frames) == 1
    expected_body = b"the body" if keeps_body and final_method != "HEAD" else b""
    assert landed(response) == (200, final_method, "/landing?a=1", expected_body)


async def test_a_redirected_post_keeps_the_xsrf_rule_and_the_cookies(proxy: str) -> None:
    cookies = f"_xsrf={XSRF_VALUE}; user=u1"
    async with connect(proxy, headers=[("Cookie", cookies)]) as ws:
        # 307: still a POST, so the new target gets _xsrf too; the cookies go on every hop.
        kept = await fetch(ws, "1", "POST", redirect(307, "/landing?a=1"), body="data")
        # 302: a GET now, which needs no _xsrf.
        changed = await fetch(ws, "2", "POST", redirect(302, "/landing?a=1"), body="data")
    assert landed(kept) == (200, "POST", f"/landing?a=1&_xsrf={XSRF_VALUE}", b"data")
    assert kept.headers["X-Cookie"] == cookies
    assert landed(changed) == (200, "GET", "/landing?a=1", b"")
    assert changed.headers["X-Cookie"] == cookies


async def test_a_location_that_kept_the_xsrf_query_gets_no_second_one(proxy: str) -> None:
    async with connect(proxy, headers=[("Cookie", f"_xsrf={XSRF_VALUE}")]) as ws:
        response = await fetch(
            ws, "1", "PUT", redirect(308, f"/landing?_xsrf={XSRF_VALUE}"), body="data"
        )
    assert landed(response) == (200, "PUT", f"/landing?_xsrf={XSRF_VALUE}", b"data")


async def test_auth_url_cookies_reach_the_last_hop(proxy: str) -> None:
    auth = "?" + urlencode({"jupyter_http_over_ws_auth_url": proxy + "/fake-auth"})
    async with connect(proxy, "/http_over_websocket" + auth) as ws:
        response = await fetch(ws, "1", "GET", redirect(302, "/requires-cookies-from-fake-auth"))
    assert (response.status, response.body) == (200, b'X-Test-Cookie: "1" X-Other-Test-Cookie: "2"')


async def test_a_redirects_set_cookie_is_dropped_as_the_original_did(proxy: str) -> None:
    # tornado's client neither sends a Set-Cookie of an intermediate hop on, nor hands it back.
    async with connect(proxy, headers=[("Cookie", "user=u1")]) as ws:
        response = await fetch(ws, "1", "GET", redirect(302, "/landing", cookie="set-by-hop"))
    assert response.headers["X-Cookie"] == "user=u1"
    assert "Set-Cookie" not in response.headers


@pytest.mark.parametrize(
    "location",
    [
        pytest.param("landing?rel=1", id="relative-path"),
        pytest.param("/landing?rel=1", id="absolute-path"),
        pytest.param("{proxy}/landing?rel=1", id="the-proxy-origin"),
        pytest.param("{backend}/landing?rel=1", id="the-backend-address"),
        pytest.param("//127.0.0.1:{port}/landing?rel=1", id="scheme-relative"),
    ],
)
async def test_locations_on_the_backend_are_followed(
    proxy: str, fake_backend: FakeBackend, location: str
) -> None:
    to = location.format(proxy=proxy, backend=fake_backend.url, port=proxy.rsplit(":", 1)[1])
    async with connect(proxy) as ws:
        response = await fetch(ws, "1", "GET", redirect(302, to))
    assert landed(response) == (200, "GET", "/landing?rel=1", b"")


@pytest.mark.parametrize(
    "location",
    [
        "http://evil.example/steal",
        "https://127.0.0.1:{port}/landing",
        "http://localhost:{port}/landing",
        "//evil.example/x",
    ],
)
async def test_a_redirect_elsewhere_goes_back_as_it_is(proxy: str, location: str) -> None:
    to = location.format(port=proxy.rsplit(":", 1)[1])
    async with connect(proxy) as ws:
        response = await fetch(ws, "1", "POST", redirect(302, to), body="x")
    assert (response.status, response.body) == (302, b"redirecting")
    assert response.first["statusText"] == "Found"
    assert response.headers["Location"] == to
    assert response.first["done"] is True


async def test_a_redirect_without_location_goes_back_as_it_is(proxy: str) -> None:
    async with connect(proxy) as ws:
        response = await fetch(ws, "1", "GET", redirect(302, None))
    assert (response.status, response.body) == (302, b"redirecting")
    assert "Location" not in response.headers


async def test_a_chain_of_five_is_followed(proxy: str) -> None:
    async with connect(proxy) as ws:
        response = await fetch(ws, "1", "GET", "/chain?n=5")
    assert (response.status, response.body) == (200, b"end of chain")


@pytest.mark.parametrize("path", ["/chain?n=6", "/chain?loop=1"])
async def test_a_sixth_redirect_is_a_502(
    proxy: str, caplog: pytest.LogCaptureFixture, path: str
) -> None:
    with caplog.at_level(logging.WARNING, logger="trio_httpws.session"):
        async with connect(proxy) as ws:
            response = await fetch(ws, "1", "GET", path)
            # The socket serves on.
            after = await fetch(ws, "2", "GET", "/chain?n=1")
    assert response.frames == [
        {
            "done": True,
            "status": 502,
            "statusText": "Bad Gateway: the backend redirected more than 5 times (last to /chain)",
            "message_id": "1",
        }
    ]
    assert (after.status, after.body) == (200, b"end of chain")
    assert "redirected more than 5 times" in caplog.text


async def test_each_hop_reaches_the_backend_once(proxy: str, fake_backend: FakeBackend) -> None:
    start = len(fake_backend.redirect_hits)
    inner = redirect(307, "/landing")
    async with connect(proxy) as ws:
        response = await fetch(ws, "1", "PUT", redirect(308, inner), body="b")
    assert landed(response) == (200, "PUT", "/landing", b"b")
    assert fake_backend.redirect_hits[start:] == ["PUT", "PUT"]


async def test_a_location_with_characters_we_would_not_send_goes_back_as_it_is(
    proxy: str,
) -> None:
    to = "/landing?" + quote("a b", safe="")  # fine: percent-encoded
    bad = "/landing x"  # a space would split our request line
    async with connect(proxy) as ws:
        good = await fetch(ws, "1", "GET", redirect(302, to))
        refused = await fetch(ws, "2", "GET", redirect(302, bad))
    assert landed(good) == (200, "GET", to, b"")
    assert refused.status == 302
