"""The origin policy and CORS answers (``_cors``), without sockets: every header, every class."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_httpws._cors import (
    ALLOWED_METHODS,
    PREFLIGHT_MAX_AGE,
    OriginClass,
    OriginPolicy,
    backend_request_headers,
    cors_headers,
    is_preflight,
    judge_http,
    preflight_answer,
    refused_answer,
    with_cors,
)

COLAB = "https://colab.research.google.com"
H = list[tuple[bytes, bytes]]


def names(headers: H) -> list[bytes]:
    return [n.lower() for n, _ in headers]


def get(headers: H, name: bytes) -> list[bytes]:
    return [v for n, v in headers if n.lower() == name]


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        (None, True),
        (COLAB, True),
        (COLAB + "/", False),
        (COLAB + ".evil.example", False),
        ("https://evil.example?" + COLAB, False),
        ("https://COLAB.research.google.com", False),
        ("http://colab.research.google.com", False),
        (COLAB + ":443", False),
        ("https://xcolab.research.google.com", False),
        ("null", False),
        ("", False),
    ],
)
def test_origin_policy_exact(origin: str | None, allowed: bool) -> None:
    policy = OriginPolicy.build([COLAB], None)
    assert policy.allows(origin, "ws", "localhost:8888") is allowed


def test_origin_policy_null_when_listed_and_star() -> None:
    assert OriginPolicy.build(["null"], None).allows("null")
    star = OriginPolicy.build(["*"], None)
    assert star.allow_all
    assert star.allows("https://anything.example")
    assert not OriginPolicy.build([COLAB], None).allow_all


def test_origin_policy_pattern_is_a_full_match() -> None:
    policy = OriginPolicy.build([], r"https://[a-z]+\.example\.com")
    assert policy.allows("https://app.example.com")
    assert not policy.allows("https://app.example.com.evil.example")
    assert not policy.allows("xhttps://app.example.com")


@pytest.mark.parametrize(
    ("origin", "scheme", "host", "allowed"),
    [
        ("http://127.0.0.1:8000", "ws", "127.0.0.1:8000", True),
        ("https://localhost:8000", "wss", "localhost:8000", True),
        ("http://localhost:8000", "wss", "localhost:8000", False),
        ("http://127.0.0.1:8001", "ws", "127.0.0.1:8000", False),
        ("http://localhost:8000", "ws", "127.0.0.1:8000", False),
        ("http://127.0.0.1:8000", "ws", "", False),
    ],
)
def test_origin_policy_same_origin(origin: str, scheme: str, host: str, allowed: bool) -> None:
    assert OriginPolicy.build([COLAB], None).allows(origin, scheme, host) is allowed


@pytest.mark.parametrize(
    ("origin", "scheme", "host", "expected"),
    [
        (None, "http", "127.0.0.1:8889", OriginClass.NONE),
        ("http://127.0.0.1:8889", "http", "127.0.0.1:8889", OriginClass.SAME),
        ("https://127.0.0.1:8889", "https", "127.0.0.1:8889", OriginClass.SAME),
        ("http://127.0.0.1:8889", "ws", "127.0.0.1:8889", OriginClass.SAME),
        ("https://127.0.0.1:8889", "http", "127.0.0.1:8889", OriginClass.REFUSED),
        ("http://localhost:8889", "http", "127.0.0.1:8889", OriginClass.REFUSED),
        (COLAB, "http", "127.0.0.1:8889", OriginClass.ALLOWED),
        (COLAB, "http", "colab.research.google.com", OriginClass.ALLOWED),
        ("https://evil.example", "http", "127.0.0.1:8889", OriginClass.REFUSED),
        ("null", "http", "127.0.0.1:8889", OriginClass.REFUSED),
    ],
)
def test_classify(origin: str | None, scheme: str, host: str, expected: OriginClass) -> None:
    assert OriginPolicy.build([COLAB], None).classify(origin, scheme, host) is expected


def test_classify_star_and_pattern_are_allowed_foreign() -> None:
    star = OriginPolicy.build(["*"], None)
    assert star.classify("https://any.example", "http", "127.0.0.1:1") is OriginClass.ALLOWED
    # "*" does not turn a same-origin request into a foreign one.
    assert star.classify("http://127.0.0.1:1", "http", "127.0.0.1:1") is OriginClass.SAME
    pat = OriginPolicy.build([], r"https://[a-z]+\.example\.com")
    assert pat.classify("https://a.example.com", "http", "h:1") is OriginClass.ALLOWED
    assert pat.classify("https://a.example.com.x", "http", "h:1") is OriginClass.REFUSED


@given(st.one_of(st.none(), st.text(max_size=40)), st.sampled_from(["http", "https", "ws", "wss"]))
def test_classify_is_total_and_consistent_with_allows(origin: str | None, scheme: str) -> None:
    policy = OriginPolicy.build([COLAB, "null"], r"https://[a-z]+\.example")
    verdict = policy.classify(origin, scheme, "127.0.0.1:8889")
    assert isinstance(verdict, OriginClass)
    assert policy.allows(origin, scheme, "127.0.0.1:8889") is (verdict is not OriginClass.REFUSED)


# -- preflights ---------------------------------------------------------------------------------


def preflight(**asked: str) -> H:
    headers: H = [(b"origin", COLAB.encode())]
    for key, value in asked.items():
        name = "access-control-request-" + key.replace("_", "-")
        headers.append((name.encode(), value.encode()))
    return headers


def test_is_preflight() -> None:
    assert is_preflight("OPTIONS", preflight(method="POST"))
    assert not is_preflight("OPTIONS", [(b"origin", COLAB.encode())])
    assert not is_preflight("POST", preflight(method="POST"))


def test_preflight_answer_every_header() -> None:
    answer = preflight_answer(
        COLAB, preflight(method="POST", headers="content-type, X-XSRFToken", private_network="true")
    )
    assert answer.status == 204
    assert answer.body == b""
    assert answer.headers == [
        (b"access-control-allow-origin", COLAB.encode()),
        (b"access-control-allow-credentials", b"true"),
        (b"vary", b"Origin"),
        (b"access-control-allow-methods", ", ".join(ALLOWED_METHODS).encode()),
        (b"access-control-allow-headers", b"content-type, X-XSRFToken"),
        (b"access-control-allow-private-network", b"true"),
        (b"access-control-max-age", str(PREFLIGHT_MAX_AGE).encode()),
    ]


def test_preflight_without_headers_or_private_network() -> None:
    answer = preflight_answer(COLAB, preflight(method="GET", private_network="false"))
    assert answer.status == 204
    assert b"access-control-allow-headers" not in names(answer.headers)
    assert b"access-control-allow-private-network" not in names(answer.headers)


def test_preflight_names_an_unlisted_method() -> None:
    answer = preflight_answer(COLAB, preflight(method="PROPFIND"))
    assert get(answer.headers, b"access-control-allow-methods") == [
        b"GET, PUT, POST, PATCH, DELETE, OPTIONS, PROPFIND"
    ]


@pytest.mark.parametrize(
    "asked",
    [
        {"method": "PO ST"},
        {"method": ""},
        {"method": "GET\n"},
        {"method": "GET", "headers": "x-ok, bad header"},
        {"method": "GET", "headers": "x-ok, b@d"},
        {"method": "GET", "headers": "x(y)"},
    ],
)
def test_bad_preflight_is_a_clear_400(asked: dict[str, str]) -> None:
    answer = preflight_answer(COLAB, preflight(**asked))
    assert answer.status == 400
    assert answer.body.startswith(b"Bad preflight: Access-Control-Request-")
    # Readable by the page, so its developer sees why.
    assert get(answer.headers, b"access-control-allow-origin") == [COLAB.encode()]


@given(st.text(max_size=30), st.text(max_size=60))
def test_preflight_never_crashes(method: str, asked: str) -> None:
    headers = [
        (b"access-control-request-method", method.encode("utf-8", "surrogatepass")),
        (b"access-control-request-headers", asked.encode("utf-8", "surrogatepass")),
    ]
    answer = preflight_answer(COLAB, headers)
    assert answer.status in (204, 400)
    if answer.status == 204:
        # Whatever we echo back is a clean list of tokens: no header injection.
        for value in get(answer.headers, b"access-control-allow-headers"):
            assert b"\r" not in value
            assert b"\n" not in value


# -- answers and forwarded requests -------------------------------------------------------------


def test_refused_answer_has_no_cors() -> None:
    answer = refused_answer()
    assert answer.status == 403
    assert answer.body == b"Origin not allowed"
    assert not any(n.startswith(b"access-control-") for n in names(answer.headers))


def test_cors_headers() -> None:
    assert cors_headers(COLAB) == [
        (b"access-control-allow-origin", COLAB.encode()),
        (b"access-control-allow-credentials", b"true"),
        (b"vary", b"Origin"),
    ]


def test_with_cors_replaces_the_backends_and_merges_vary() -> None:
    backend: H = [
        (b"Content-Type", b"application/json"),
        (b"Access-Control-Allow-Origin", b"*"),
        (b"access-control-allow-credentials", b"false"),
        (b"Access-Control-Expose-Headers", b"X-Other"),
        (b"Vary", b"Accept-Encoding"),
        (b"vary", b"Cookie"),
    ]
    out = with_cors(backend, COLAB)
    assert get(out, b"access-control-allow-origin") == [COLAB.encode()]
    assert get(out, b"access-control-allow-credentials") == [b"true"]
    assert get(out, b"access-control-expose-headers") == []
    assert get(out, b"vary") == [b"Accept-Encoding, Cookie, Origin"]
    assert get(out, b"content-type") == [b"application/json"]


@pytest.mark.parametrize("vary", [b"origin", b"*", b"Accept, Origin"])
def test_with_cors_does_not_repeat_origin_in_vary(vary: bytes) -> None:
    [value] = get(with_cors([(b"vary", vary)], COLAB), b"vary")
    assert value.lower().count(b"origin") <= 1
    assert value == vary


def test_allowed_foreign_requests_lose_their_origin_and_referer() -> None:
    headers: H = [
        (b"host", b"127.0.0.1:8889"),
        (b"origin", COLAB.encode()),
        (b"referer", COLAB.encode() + b"/drive/abc"),
        (b"cookie", b"a=b"),
    ]
    out = backend_request_headers(headers, OriginClass.ALLOWED, "https", "127.0.0.1:8889")
    assert out == [
        (b"host", b"127.0.0.1:8889"),
        (b"referer", b"https://127.0.0.1:8889/"),
        (b"cookie", b"a=b"),
    ]


@pytest.mark.parametrize("origin_class", [OriginClass.NONE, OriginClass.SAME])
def test_other_requests_pass_unchanged(origin_class: OriginClass) -> None:
    headers: H = [(b"origin", b"http://127.0.0.1:8889"), (b"referer", b"http://x/")]
    assert backend_request_headers(headers, origin_class, "http", "127.0.0.1:8889") == headers


# -- the HTTP door's decision, for every class and every method ---------------------------------

METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PROPFIND"]
HOST = "127.0.0.1:8889"
ORIGINS = {
    OriginClass.NONE: None,
    OriginClass.SAME: f"http://{HOST}",
    OriginClass.ALLOWED: COLAB,
    OriginClass.REFUSED: "https://evil.example",
}


@pytest.mark.parametrize("origin_class", list(OriginClass))
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("asks", [False, True])
def test_judge_http(origin_class: OriginClass, method: str, asks: bool) -> None:
    origin = ORIGINS[origin_class]
    headers: H = [(b"host", HOST.encode())]
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    if asks:
        headers += [
            (b"access-control-request-method", b"PUT"),
            (b"access-control-request-private-network", b"true"),
        ]
    verdict = judge_http(OriginPolicy.build([COLAB], None), method, headers, "http", HOST)
    assert verdict.origin_class is origin_class
    if origin_class is OriginClass.REFUSED:
        assert verdict.answer == refused_answer()
        assert verdict.cors_origin is None
    elif origin_class is OriginClass.ALLOWED and asks and method == "OPTIONS":
        assert verdict.answer is not None
        assert verdict.answer.status == 204
        assert get(verdict.answer.headers, b"access-control-allow-origin") == [COLAB.encode()]
        assert get(verdict.answer.headers, b"access-control-allow-private-network") == [b"true"]
        assert verdict.cors_origin is None  # the answer has its CORS headers already
    elif origin_class is OriginClass.ALLOWED:
        assert verdict.answer is None
        assert verdict.cors_origin == COLAB
    else:
        # No Origin or the proxy's own: forwarded, answers passed on as they are.
        assert verdict.answer is None
        assert verdict.cors_origin is None
