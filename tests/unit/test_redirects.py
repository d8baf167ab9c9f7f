"""Socket-free tests of the redirect rules (``trio_httpws._redirects``): tornado's, on the backend only."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from trio_httpws._errors import BackendError, TooManyRedirects
from trio_httpws._redirects import (
    MAX_REDIRECTS,
    Hop,
    Origin,
    first_hop,
    location_target,
    next_hop,
    origin_of,
    redirected_method,
)

from ..support.fuzz import examples

PROXY: Origin = ("http", "127.0.0.1", 8889)  # the Host the backend was sent
BACKEND: Origin = ("http", "127.0.0.1", 8888)  # the backend's own address
ORIGINS = (PROXY, BACKEND)
TARGET_RE = re.compile(r"/[\x21-\x7e]*")


@pytest.mark.parametrize(
    ("scheme", "host", "origin"),
    [
        ("ws", "127.0.0.1:8889", ("http", "127.0.0.1", 8889)),
        ("http", "127.0.0.1:8889", ("http", "127.0.0.1", 8889)),
        ("wss", "Example.COM", ("https", "example.com", 443)),
        ("ws", "localhost", ("http", "localhost", 80)),
        ("ws", "[::1]:8889", ("http", "::1", 8889)),
    ],
)
def test_origin_of(scheme: str, host: str, origin: Origin) -> None:
    assert origin_of(scheme, host) == origin


@pytest.mark.parametrize(
    ("location", "target"),
    [
        # Relative references, resolved against /a/b?x=1 as RFC 3986 (and tornado's urljoin) do.
        ("/c", "/c"),
        ("/c?y=2", "/c?y=2"),
        ("c", "/a/c"),
        ("../c", "/c"),
        ("?y=2", "/a/b?y=2"),
        ("", "/a/b?x=1"),
        ("/x#fragment", "/x"),
        ("/ü", "/%C3%BC"),
        # Absolute, on either name of the backend.
        ("http://127.0.0.1:8889/t", "/t"),
        ("http://127.0.0.1:8888/t?q", "/t?q"),
        ("HTTP://127.0.0.1:8889/t", "/t"),
        ("http://127.0.0.1:8889", "/"),
        ("//127.0.0.1:8889/x", "/x"),
        # Anywhere else, or nothing we could send: not followed.
        ("http://localhost:8889/t", None),
        ("https://127.0.0.1:8889/t", None),
        ("http://127.0.0.1:8890/t", None),
        ("http://127.0.0.1/t", None),
        ("http://evil.example/steal", None),
        ("//evil.example/x", None),
        ("http://u@127.0.0.1:8889/x", None),
        ("http://u:p@127.0.0.1:8889/x", None),
        ("/\\evil.example/x", None),
        ("http://127.0.0.1:8889//evil.example/x", None),
        ("/a b", None),
        ("/a\r\nX: y", None),
        ("http://[x", None),
        ("http://127.0.0.1:99999/x", None),
        ("ftp://127.0.0.1:8889/x", None),
        ("javascript:alert(1)", None),
    ],
)
def test_location_target(location: str, target: str | None) -> None:
    assert location_target(location, "/a/b?x=1", ORIGINS) == target


def test_location_target_default_port_and_ipv6() -> None:
    default = (("http", "localhost", 80),)
    assert location_target("http://localhost/x", "/", default) == "/x"
    assert location_target("http://localhost:80/x", "/", default) == "/x"
    ipv6 = (("http", "::1", 8889),)
    assert location_target("http://[::1]:8889/x", "/", ipv6) == "/x"
    assert location_target("y", "/a/b", ipv6) == "/a/y"
    assert location_target("http://[::2]:8889/x", "/", ipv6) is None


@given(st.text(st.characters(exclude_categories=()), max_size=40))
@example("http://127.0.0.1:8889/a b")
@example("//127.0.0.1:8889//x")
@settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_location_target_never_raises_and_never_names_a_host(location: str) -> None:
    target = location_target(location, "/a/b?x=1", ORIGINS)
    if target is not None:
        assert TARGET_RE.fullmatch(target)
        assert not target.startswith("//")


@pytest.mark.parametrize(
    ("status", "method", "expected_method", "keeps_body"),
    [
        (301, "POST", "GET", False),
        (302, "POST", "GET", False),
        (301, "PUT", "PUT", True),
        (302, "DELETE", "DELETE", True),
        (301, "GET", "GET", True),
        (303, "POST", "GET", False),
        (303, "PUT", "GET", False),
        (303, "DELETE", "GET", False),
        (303, "GET", "GET", False),
        (303, "HEAD", "HEAD", True),
        (307, "POST", "POST", True),
        (307, "PATCH", "PATCH", True),
        (308, "POST", "POST", True),
        (308, "CUSTOM", "CUSTOM", True),
    ],
)
def test_redirected_method(
    status: int, method: str, expected_method: str, keeps_body: bool
) -> None:
    assert redirected_method(status, method, b"body") == (
        expected_method,
        b"body" if keeps_body else None,
    )


def test_first_hop_adds_xsrf_for_state_changing_methods() -> None:
    assert first_hop("POST", "/api/x?a=1", b"{}", "tok") == Hop(
        "POST", "/api/x?a=1&_xsrf=tok", b"{}"
    )
    assert first_hop("GET", "/api/x", None, "tok") == Hop("GET", "/api/x", None)


@pytest.mark.parametrize("status", [200, 201, 204, 300, 304, 305, 400, 404, 500])
def test_next_hop_final_statuses(status: int) -> None:
    assert next_hop(Hop("GET", "/a", None), status, "/b", ORIGINS, None) is None


def test_next_hop_without_location_or_elsewhere_is_final() -> None:
    hop = Hop("GET", "/a", None)
    assert next_hop(hop, 302, None, ORIGINS, None) is None
    assert next_hop(hop, 302, "http://evil.example/", ORIGINS, None) is None


def test_next_hop_rules() -> None:
    post = Hop("POST", "/api/x?_xsrf=tok", b"data")
    # 302: POST becomes GET, no body, no _xsrf (GET needs none).
    assert next_hop(post, 302, "/api/y", ORIGINS, "tok") == Hop("GET", "/api/y", None, 1)
    # 307 and 308: same method and body; the _xsrf rule holds on the new target.
    assert next_hop(post, 307, "/api/y?a=1", ORIGINS, "tok") == Hop(
        "POST", "/api/y?a=1&_xsrf=tok", b"data", 1
    )
    assert next_hop(post, 308, "/api/y", ORIGINS, "tok") == Hop(
        "POST", "/api/y?_xsrf=tok", b"data", 1
    )
    # A Location that kept our query does not get a second _xsrf.
    assert next_hop(post, 307, "/api/x/?_xsrf=tok", ORIGINS, "tok") == Hop(
        "POST", "/api/x/?_xsrf=tok", b"data", 1
    )
    # Relative to the target sent, query included.
    assert next_hop(post, 308, "", ORIGINS, "tok") == Hop("POST", "/api/x?_xsrf=tok", b"data", 1)


def test_next_hop_counts_and_stops_after_the_limit() -> None:
    hop = Hop("GET", "/loop", None)
    for n in range(1, MAX_REDIRECTS + 1):
        followed = next_hop(hop, 302, "/loop?token=secret", ORIGINS, None)
        assert followed is not None
        assert followed.redirects == n
        hop = followed
    with pytest.raises(TooManyRedirects) as info:
        next_hop(hop, 302, "/loop?token=secret", ORIGINS, None)
    assert isinstance(info.value, BackendError)  # so the session answers with a 502 frame
    assert str(info.value) == "the backend redirected more than 5 times (last to /loop)"
    # Past the limit, a redirect elsewhere is still a final response, not an error.
    assert next_hop(hop, 302, "http://evil.example/", ORIGINS, None) is None
