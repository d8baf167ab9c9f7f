"""Socket-free tests of the sans-IO protocol core (``trio_httpws._protocol``).

Example-based tests pin the documented rules (PROTOCOL.md); hypothesis fuzzes the two places
where untrusted bytes meet the code, parsing client messages and building frames.
"""

from __future__ import annotations

import base64
import json
import os
import re
from typing import Any
from urllib.parse import unquote

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from packaging.version import Version

from trio_httpws._errors import AuthUrlError
from trio_httpws._outcome import Outcome, client_ended
from trio_httpws._protocol import (
    BAD_JSON_TEXT,
    MAX_FRAME_DATA,
    PROTOCOL_VERSION,
    CancelRequest,
    ErrorFrame,
    ProxyRequest,
    VersionStatus,
    add_xsrf_query,
    auth_url_target,
    check_min_version,
    close_code_for_status,
    cookie_header,
    cookie_headers,
    cookie_pairs,
    data_frame,
    diagnose_frame,
    error_frame,
    first_frame,
    header_case,
    is_local_host,
    is_loopback_address,
    parse_client_message,
    parse_cookie_header,
    parse_strict_version,
    response_headers,
    split_host,
    strip_hop_by_hop,
    upgrade_request_headers,
    validate_path,
    xsrf_cookie_value,
)

from ..support.fuzz import examples

TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
TARGET_RE = re.compile(r"/[\x21-\x7e]*")
FUZZ = settings(
    max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


# -- min_version: distutils StrictVersion -------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("0.0.7", (0, 0, 7, ("~",))),
        ("1.2", (1, 2, 0, ("~",))),
        ("0.0.1a3", (0, 0, 1, ("a", 3))),
        ("0.0.7b1", (0, 0, 7, ("b", 1))),
        ("10.20.30", (10, 20, 30, ("~",))),
    ],
)
def test_strict_version_parses(text: str, key: tuple[Any, ...]) -> None:
    assert parse_strict_version(text) == key


@pytest.mark.parametrize(
    ("older", "newer"),
    [
        ("0.0.7b1", "0.0.7"),
        ("0.0.7a9", "0.0.7b1"),
        ("0.0.1a3", "0.0.1a10"),
        ("0.0.9", "0.0.10"),
        ("1.2", "1.2.1"),
        ("0.0.7", "0.1"),
    ],
)
def test_strict_version_orders(older: str, newer: str) -> None:
    assert parse_strict_version(older) < parse_strict_version(newer)


def test_strict_version_two_and_three_parts_are_equal() -> None:
    assert parse_strict_version("1.2") == parse_strict_version("1.2.0")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "abc",
        "1",
        "1.2.3.4",
        "1.2a",
        "1.2c1",
        "1.2.3-beta",
        "v1.2",
        " 1.2",
        "1.2 ",
        "1..2",
        "0.0.7.",
        "1.2rc1",
        "\u0661.\u0662",  # Arabic-Indic digits are \d without re.ASCII
    ],
)
def test_strict_version_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="invalid version number"):
        parse_strict_version(text)


versions = st.tuples(
    st.integers(0, 30),
    st.integers(0, 30),
    st.integers(0, 30),
    st.sampled_from(["", "a", "b"]),
    st.integers(0, 30),
)


def _version_text(v: tuple[int, int, int, str, int]) -> str:
    major, minor, patch, tag, num = v
    return f"{major}.{minor}.{patch}" + (f"{tag}{num}" if tag else "")


@FUZZ
@given(versions, versions)
def test_strict_version_ordering_matches_pep440(
    a: tuple[int, int, int, str, int], b: tuple[int, int, int, str, int]
) -> None:
    # On StrictVersion's subset (a/b prereleases), PEP 440 orders versions the same way.
    ta, tb = _version_text(a), _version_text(b)
    ka, kb = parse_strict_version(ta), parse_strict_version(tb)
    assert (ka < kb) == (Version(ta) < Version(tb))
    assert (ka == kb) == (Version(ta) == Version(tb))


def test_check_min_version_absent_is_ok() -> None:
    check = check_min_version(None)
    assert (check.status, check.reason) == (VersionStatus.OK, "")


@pytest.mark.parametrize("text", ["0.0.1a0", "0.0.7b9", PROTOCOL_VERSION, "0.0.6", "0.0"])
def test_check_min_version_acceptable(text: str) -> None:
    assert check_min_version(text).status is VersionStatus.OK


@pytest.mark.parametrize("text", ["abc", "", "0.0.7.1", "latest"])
def test_check_min_version_unparseable_reason(text: str) -> None:
    check = check_min_version(text)
    assert check.status is VersionStatus.UNPARSEABLE
    assert check.reason == f'Invalid "min_version" provided: {text}'


@pytest.mark.parametrize("text", ["0.0.8", "0.0.8a1", "0.1", "1.0", "9.0.0"])
def test_check_min_version_outdated_reason(text: str) -> None:
    check = check_min_version(text)
    assert check.status is VersionStatus.OUTDATED
    assert "Please upgrade" in check.reason
    assert f"({text})" in check.reason
    assert f"({PROTOCOL_VERSION})" in check.reason


def test_close_code_is_4000_plus_status() -> None:
    assert [close_code_for_status(s) for s in (400, 403, 404, 500, 502)] == [
        4400,
        4403,
        4404,
        4500,
        4502,
    ]


# -- frames -------------------------------------------------------------------------------


@pytest.mark.parametrize("message_id", ["1234", 7, "", "é✓", -3])
def test_first_frame_keys_and_id_type(message_id: object) -> None:
    frame = json.loads(
        first_frame(json.dumps(message_id), 200, "OK", {"Content-Type": "text/plain"}, b"hi", False)
    )
    assert frame == {
        "message_id": message_id,
        "status": 200,
        "statusText": "OK",
        "headers": {"Content-Type": "text/plain"},
        "data": base64.b64encode(b"hi").decode(),
        "done": False,
    }
    assert type(frame["message_id"]) is type(message_id)


def test_first_frame_without_body_has_no_data_key() -> None:
    frame = json.loads(first_frame('"m"', 204, "No Content", {}, b"", True))
    assert frame == {
        "message_id": "m",
        "status": 204,
        "statusText": "No Content",
        "headers": {},
        "done": True,
    }


def test_data_frame_has_only_id_data_done() -> None:
    frame = json.loads(data_frame("5", b"\x00\xff", True))
    assert frame == {"message_id": 5, "data": "AP8=", "done": True}


def test_error_frame_with_and_without_id() -> None:
    assert json.loads(error_frame(400, BAD_JSON_TEXT)) == {
        "done": True,
        "status": 400,
        "statusText": "JSON input is required.",
    }
    assert json.loads(error_frame(502, "Bad Gateway: x", '"id"')) == {
        "done": True,
        "status": 502,
        "statusText": "Bad Gateway: x",
        "message_id": "id",
    }
    assert ErrorFrame(499, "gone", "3").encode() == error_frame(499, "gone", "3")


def test_diagnose_frame_keys() -> None:
    assert json.loads(diagnose_frame("m\u2028", True, False)) == {
        "message_id": "m\u2028",
        "extension_version": "0.0.7",
        "has_authentication_cookie": True,
        "is_outdated_extension": False,
    }


@pytest.mark.parametrize(
    ("raw", "cased"),
    [
        ("content-type", "Content-Type"),
        ("x-xsrftoken", "X-Xsrftoken"),
        ("SET-COOKIE", "Set-Cookie"),
        ("etag", "Etag"),
        ("www-authenticate", "Www-Authenticate"),
        ("x--odd-", "X--Odd-"),
    ],
)
def test_header_case(raw: str, cased: str) -> None:
    assert header_case(raw) == cased


def test_response_headers_case_and_joined_repeats() -> None:
    raw = [
        (b"content-type", b"text/plain"),
        (b"set-cookie", b"a=1"),
        (b"x-xsrftoken", b"tok"),
        (b"Set-Cookie", b"b=2"),
        (b"SET-COOKIE", b"c=3"),
        (b"x-latin", b"caf\xe9"),
    ]
    assert response_headers(raw) == {
        "Content-Type": "text/plain",
        "Set-Cookie": "a=1,b=2,c=3",
        "X-Xsrftoken": "tok",
        "X-Latin": "café",
    }


# Text including lone surrogates (which JSON can carry as \ud800 escapes).
any_text = st.text(st.characters(exclude_categories=()), max_size=40)
# Text as Python holds real text: no surrogates (a surrogate *pair* in a str is not a character
# and comes back from JSON as the character it encodes, so it cannot round-trip).
real_text = st.text(max_size=40)
message_ids = st.text(max_size=20) | st.integers(-(2**70), 2**70)


def _assert_utf8_json(frame: str) -> dict[str, Any]:
    frame.encode("utf-8")  # must be sendable as a WebSocket text frame
    loaded: dict[str, Any] = json.loads(frame)
    return loaded


@FUZZ
@given(
    message_ids,
    st.integers(100, 999),
    real_text,
    st.dictionaries(real_text, real_text, max_size=5),
    st.binary(max_size=300),
    st.booleans(),
)
@example("\ud800", 200, "\udfff", {"\ud800": "\udc00"}, b"", True)
def test_first_frame_fuzz(
    message_id: str | int,
    status: int,
    status_text: str,
    headers: dict[str, str],
    data: bytes,
    done: bool,
) -> None:
    frame = _assert_utf8_json(
        first_frame(json.dumps(message_id), status, status_text, headers, data, done)
    )
    expected: dict[str, Any] = {
        "message_id": message_id,
        "status": status,
        "statusText": status_text,
        "headers": headers,
        "done": done,
    }
    if data:
        expected["data"] = base64.b64encode(data).decode()
    assert frame == expected


@FUZZ
@given(message_ids, st.binary(max_size=300), st.booleans())
def test_data_frame_fuzz(message_id: str | int, data: bytes, done: bool) -> None:
    frame = _assert_utf8_json(data_frame(json.dumps(message_id), data, done))
    assert frame == {
        "message_id": message_id,
        "data": base64.b64encode(data).decode(),
        "done": done,
    }


@FUZZ
@given(st.integers(100, 999), real_text, st.none() | message_ids)
@example(400, "\ud800", "\udfff")
def test_error_frame_fuzz(status: int, status_text: str, message_id: str | int | None) -> None:
    id_json = None if message_id is None else json.dumps(message_id)
    frame = _assert_utf8_json(error_frame(status, status_text, id_json))
    expected: dict[str, Any] = {"done": True, "status": status, "statusText": status_text}
    if message_id is not None:
        expected["message_id"] = message_id
    assert frame == expected


@FUZZ
@given(real_text, st.booleans(), st.booleans())
def test_diagnose_frame_fuzz(message: str, has_cookie: bool, outdated: bool) -> None:
    frame = _assert_utf8_json(diagnose_frame(message, has_cookie, outdated))
    assert frame["message_id"] == message
    assert set(frame) == {
        "message_id",
        "extension_version",
        "has_authentication_cookie",
        "is_outdated_extension",
    }


# -- client messages ----------------------------------------------------------------------


def _request(**fields: Any) -> str:
    return json.dumps({"message_id": "m", "method": "GET", "path": "/p", **fields})


def test_parse_minimal_request() -> None:
    assert parse_client_message(_request()) == ProxyRequest('"m"', "GET", "/p", None)


def test_parse_int_message_id_and_custom_method() -> None:
    parsed = parse_client_message(json.dumps({"message_id": 12, "method": "mkcol", "path": "/"}))
    assert parsed == ProxyRequest("12", "MKCOL", "/", None)


@pytest.mark.parametrize("size", [MAX_FRAME_DATA - 1, MAX_FRAME_DATA, 3 * MAX_FRAME_DATA + 2])
def test_large_bodies_encode_and_decode_as_the_standard_library_does(size: int) -> None:
    # Sizes past the SIMD encoder's blocks and with each padding; smaller ones are fuzzed above.
    raw = os.urandom(size)
    encoded = base64.b64encode(raw).decode()
    frame = json.loads(data_frame('"m"', raw, True))
    assert frame["data"] == encoded
    parsed = parse_client_message(_request(body_base64=encoded))
    assert isinstance(parsed, ProxyRequest)
    assert parsed.body == raw


def test_parse_bodies() -> None:
    assert parse_client_message(_request(body="é")) == ProxyRequest('"m"', "GET", "/p", b"\xc3\xa9")
    raw = bytes(range(256))
    parsed = parse_client_message(_request(body_base64=base64.b64encode(raw).decode()))
    assert isinstance(parsed, ProxyRequest)
    assert parsed.body == raw
    # body_base64 wins over body; an empty body_base64 falls back to body.
    both = parse_client_message(_request(body="text", body_base64="AAE="))
    assert isinstance(both, ProxyRequest)
    assert both.body == b"\x00\x01"
    empty = parse_client_message(_request(body="text", body_base64=""))
    assert isinstance(empty, ProxyRequest)
    assert empty.body == b"text"


def test_parse_cancel() -> None:
    assert parse_client_message('{"message_id": "m", "cancel": true}') == CancelRequest('"m"')
    assert parse_client_message('{"message_id": 4, "cancel": true}') == CancelRequest("4")
    # Only the literal true cancels; anything else is an ordinary (here incomplete) request.
    assert isinstance(parse_client_message('{"message_id": "m", "cancel": 1}'), ErrorFrame)


@pytest.mark.parametrize(
    "message", ["", "invalid json", "[]", '"x"', "1", "null", "{", '{"a": 1', "[" * 100_000]
)
def test_parse_not_a_json_object(message: str) -> None:
    assert parse_client_message(message) == ErrorFrame(400, BAD_JSON_TEXT)


def test_parse_binary() -> None:
    parsed = parse_client_message(b'{"message_id": "m"}')
    assert isinstance(parsed, ErrorFrame)
    assert (parsed.status, parsed.message_id_json) == (400, None)


def test_parse_missing_keys() -> None:
    parsed = parse_client_message('{"message_id": "m", "path": "/"}')
    assert isinstance(parsed, ErrorFrame)
    assert parsed.status == 400
    assert "body must contain" in parsed.status_text
    assert "Missing: method" in parsed.status_text
    assert parsed.message_id_json == '"m"'


@pytest.mark.parametrize("bad_id", [[1], {"a": 1}, True, False, None, 1.5])
def test_parse_bad_message_id(bad_id: object) -> None:
    parsed = parse_client_message(json.dumps({"message_id": bad_id, "method": "GET", "path": "/"}))
    assert parsed == ErrorFrame(400, "Invalid request: message_id must be a string or an integer.")


@pytest.mark.parametrize(
    ("fields", "text"),
    [
        ({"method": 1}, "method must be an HTTP token such as GET or POST."),
        ({"method": ["GET"]}, "method must be an HTTP token such as GET or POST."),
        ({"method": ""}, "method must be an HTTP token such as GET or POST."),
        ({"method": "GET\n"}, "method must be an HTTP token such as GET or POST."),
        (
            {"method": "GET /x HTTP/1.1\r\nX: y"},
            "method must be an HTTP token such as GET or POST.",
        ),
        ({"method": "GÉT"}, "method must be an HTTP token such as GET or POST."),
        ({"path": 1}, "path must be a string."),
        ({"path": "x"}, "path must start with '/'."),
        ({"path": ""}, "path must start with '/'."),
        ({"path": "//evil.example/x"}, "path must not name a host."),
        ({"path": "/\\evil.example"}, "path must not name a host."),
        ({"path": "/a\n"}, "path must not contain spaces or control characters."),
        ({"path": "/\ud800"}, "path is not valid Unicode text."),
        ({"body": 1}, "body must be a string."),
        ({"body": {}}, "body must be a string."),
        ({"body": "\ud800"}, "body is not valid Unicode text."),
        ({"body_base64": 1}, "body_base64 must be a string."),
        ({"body_base64": "!!!!"}, "body_base64 is not valid base64."),
        ({"body_base64": "abc"}, "body_base64 is not valid base64."),
        ({"body_base64": "ÀÀÀÀ"}, "body_base64 is not valid base64."),
        # Padding after a whole group: base64.b64decode(validate=True) took it on 3.10 to 3.12
        # and refuses it on 3.13; refused here on every Python.
        ({"body_base64": "QUJD="}, "body_base64 is not valid base64."),
        ({"body_base64": "QUJD===="}, "body_base64 is not valid base64."),
        ({"body_base64": "QQ==QQ=="}, "body_base64 is not valid base64."),
        ({"body_base64": "QUJD\n"}, "body_base64 is not valid base64."),
        ({"body_base64": "QU JD"}, "body_base64 is not valid base64."),
        ({"body_base64": "-_-_"}, "body_base64 is not valid base64."),
        ({"headers": []}, "headers must be an object of strings."),
        ({"headers": {"a": 1}}, "headers must be an object of strings."),
        ({"headers": "x"}, "headers must be an object of strings."),
    ],
)
def test_parse_invalid_fields(fields: dict[str, Any], text: str) -> None:
    assert parse_client_message(_request(**fields)) == ErrorFrame(
        400, f"Invalid request: {text}", '"m"'
    )


def test_parse_ignores_valid_headers() -> None:
    parsed = parse_client_message(_request(headers={"X-A": "b"}))
    assert parsed == ProxyRequest('"m"', "GET", "/p", None)


def test_lone_surrogate_message_id_is_echoed_as_escape() -> None:
    parsed = parse_client_message(_request(message_id="\ud800x"))
    assert isinstance(parsed, ProxyRequest)
    assert parsed.message_id_json == '"\\ud800x"'
    frame = first_frame(parsed.message_id_json, 200, "OK", {}, b"", True)
    assert json.loads(frame.encode("utf-8"))["message_id"] == "\ud800x"


# -- paths --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "target"),
    [
        ("/", "/"),
        ("/api/sessions?x=1&y=%20z", "/api/sessions?x=1&y=%20z"),
        ("/a#frag", "/a"),
        ("/a?q=1#frag#more", "/a?q=1"),
        ("/é", "/%C3%A9"),
        ("/x?q=\u2028\x85", "/x?q=%E2%80%A8%C2%85"),
        ("/@evil.example", "/@evil.example"),
        ("/a//b\\c", "/a//b\\c"),
        ("/%2F%2Fevil.example", "/%2F%2Fevil.example"),
    ],
)
def test_validate_path_accepts(path: str, target: str) -> None:
    assert validate_path(path) == target


@pytest.mark.parametrize(
    "path",
    [
        "",
        "api",
        "*",
        "@evil.example",
        "http://evil.example/",
        "evil.example:80",
        "//evil.example/x",
        "/\\evil.example",
        "/ x",
        "/x\r\nX-Injected: 1",
        "/x\x00",
        "/x\x01",
        "/x\x7f",
        "/x\t",
        "\\\\evil.example",
    ],
)
def test_validate_path_refuses(path: str) -> None:
    with pytest.raises(ValueError, match="path"):
        validate_path(path)


# -- fuzzing parse_client_message ---------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | any_text
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(any_text, inner, max_size=3),
    max_leaves=8,
)
field_values = (
    json_values
    | st.sampled_from(["GET", "post", "/", "//x", "/\\x", "http://e/", "", "AAE=", "x\ny"])
    | any_text.map(lambda t: "/" + t)
)
message_objects = st.dictionaries(
    st.sampled_from(
        ["message_id", "method", "path", "body", "body_base64", "headers", "cancel", "other"]
    ),
    field_values,
)
client_messages = (
    st.text(st.characters(exclude_categories=()))
    | st.binary()
    | message_objects.map(json.dumps)
    | json_values.map(json.dumps)
)


@FUZZ
@given(client_messages)
@example('{"message_id": "m", "method": "GET\\n", "path": "/"}')
@example('{"message_id": "\\ud800", "method": "GET", "path": "/"}')
@example('{"message_id": "\\udfff", "cancel": true}')
@example('{"message_id": "m", "method": "GET", "path": "/\\ud800"}')
@example('{"message_id": 1e400, "method": "GET", "path": "/"}')
@example('{"message_id": ' + "9" * 5000 + ', "method": "GET", "path": "/"}')
@example("[" * 50_000 + "]" * 50_000)
def test_parse_client_message_never_raises(message: str | bytes) -> None:
    parsed = parse_client_message(message)
    assert isinstance(parsed, ProxyRequest | CancelRequest | ErrorFrame)
    if isinstance(parsed, ErrorFrame):
        frame = _assert_utf8_json(parsed.encode())
        assert frame["status"] == 400
        assert frame["done"] is True
        assert isinstance(frame["statusText"], str)
        assert ("message_id" in frame) == (parsed.message_id_json is not None)
        return
    # A message id we echo is a JSON string or int that survives UTF-8 encoding.
    mid = json.loads(parsed.message_id_json.encode("utf-8"))
    assert isinstance(mid, str | int)
    assert not isinstance(mid, bool)
    if isinstance(parsed, ProxyRequest):
        assert TARGET_RE.fullmatch(parsed.path), parsed.path
        assert not parsed.path.startswith("//")
        assert TOKEN_RE.fullmatch(parsed.method), parsed.method
        assert parsed.method == parsed.method.upper()
        assert parsed.body is None or isinstance(parsed.body, bytes)


plain_paths = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="#"), max_size=30
).filter(lambda p: not p.startswith(("/", "\\")))
unicode_paths = st.text(
    st.characters(exclude_categories=("Cs", "Cc", "Zs"), exclude_characters="#%\x7f"),
    max_size=20,
).filter(lambda p: not p.startswith(("/", "\\")))
methods = st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "get"]) | (
    st.from_regex(TOKEN_RE, fullmatch=True)
)
valid_requests = st.fixed_dictionaries(
    {"message_id": message_ids, "method": methods, "path": plain_paths.map(lambda p: "/" + p)},
    optional={
        "body": st.text(),
        "headers": st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=3),
        "other": json_values,
    },
)


@FUZZ
@given(valid_requests, st.none() | st.binary(min_size=1, max_size=500))
def test_valid_requests_round_trip(request: dict[str, Any], raw_body: bytes | None) -> None:
    if raw_body is not None:
        request["body_base64"] = base64.b64encode(raw_body).decode()
    parsed = parse_client_message(json.dumps(request))
    assert isinstance(parsed, ProxyRequest), parsed
    assert json.loads(parsed.message_id_json) == request["message_id"]
    assert parsed.method == request["method"].upper()
    assert parsed.path == request["path"]
    if raw_body is not None:
        assert parsed.body == raw_body
    elif "body" in request:
        assert parsed.body == request["body"].encode("utf-8")
    else:
        assert parsed.body is None


@FUZZ
@given(unicode_paths)
def test_unicode_paths_are_percent_encoded(rest: str) -> None:
    target = validate_path("/" + rest)
    assert TARGET_RE.fullmatch(target)
    assert unquote(target) == "/" + rest


# -- xsrf, cookies ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "method", "xsrf", "expected"),
    [
        ("/api/x", "POST", "tok", "/api/x?_xsrf=tok"),
        ("/api/x?a=1", "PUT", "tok", "/api/x?a=1&_xsrf=tok"),
        ("/api/x?a=1&b=2", "DELETE", "tok", "/api/x?a=1&b=2&_xsrf=tok"),
        ("/api/x", "PATCH", "2|ab c/+=&", "/api/x?_xsrf=2%7Cab%20c%2F%2B%3D%26"),
        ("/api/x?a=1", "GET", "tok", "/api/x?a=1"),
        ("/api/x", "HEAD", "tok", "/api/x"),
        ("/api/x", "OPTIONS", "tok", "/api/x"),
        ("/api/x", "CUSTOM", "tok", "/api/x"),
        ("/api/x", "POST", None, "/api/x"),
        ("/api/x", "POST", "", "/api/x"),
    ],
)
def test_add_xsrf_query(target: str, method: str, xsrf: str | None, expected: str) -> None:
    assert add_xsrf_query(target, method, xsrf) == expected


def test_xsrf_cookie_value() -> None:
    assert xsrf_cookie_value({"_xsrf": "plain"}) == "plain"
    assert xsrf_cookie_value({"_xsrf": '"2|ab|cd|12"'}) == "2|ab|cd|12"
    assert xsrf_cookie_value({"_xsrf": ""}) is None
    assert xsrf_cookie_value({"other": "x"}) is None


def test_cookie_pairs_from_set_cookie() -> None:
    assert cookie_pairs(
        [
            "a=1; Path=/; HttpOnly",
            " b = 2 ;Secure",
            "c=x=y",
            "a=3",
            "noequals",
            "=anonymous",
            "empty=",
        ]
    ) == {"a": "3", "b": "2", "c": "x=y", "empty": ""}


def test_parse_cookie_header() -> None:
    assert parse_cookie_header(["a=1; b=2", "c=3;;bad; d=4=5", ""]) == {
        "a": "1",
        "b": "2",
        "c": "3",
        "d": "4=5",
    }


def test_cookie_header() -> None:
    assert cookie_header({"a": "1", "_xsrf": "t"}) == "a=1; _xsrf=t"
    assert cookie_header({}) == ""


# -- hop-by-hop headers -------------------------------------------------------------------


def test_strip_hop_by_hop_including_connection_named() -> None:
    headers = [
        (b"Host", b"h"),
        (b"Connection", b"keep-alive, X-Private"),
        (b"connection", b" Other-One "),
        (b"Keep-Alive", b"timeout=5"),
        (b"TE", b"trailers"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Upgrade", b"websocket"),
        (b"Proxy-Authorization", b"x"),
        (b"Proxy-Connection", b"x"),
        (b"Trailer", b"x"),
        (b"x-private", b"secret"),
        (b"other-one", b"x"),
        (b"Content-Type", b"text/plain"),
        (b"Set-Cookie", b"a=1"),
    ]
    assert strip_hop_by_hop(headers) == [
        (b"Host", b"h"),
        (b"Content-Type", b"text/plain"),
        (b"Set-Cookie", b"a=1"),
    ]


def test_upgrade_request_headers() -> None:
    headers = [
        (b"Host", b"localhost:1"),
        (b"Origin", b"https://colab.research.google.com"),
        (b"Cookie", b"a=1"),
        (b"Connection", b"Upgrade, X-Drop-Me"),
        (b"Upgrade", b"websocket"),
        (b"Sec-WebSocket-Key", b"k"),
        (b"Sec-WebSocket-Version", b"13"),
        (b"Sec-WebSocket-Extensions", b"permessage-deflate"),
        (b"Sec-WebSocket-Protocol", b"p"),
        (b"Accept-Encoding", b"gzip"),
        (b"Content-Length", b"0"),
        (b"Content-Type", b"text/plain"),
        (b"X-Drop-Me", b"1"),
        (b"User-Agent", b"ua"),
        (b"Accept-Language", b"fr"),
        (b"Authorization", b"token t"),
    ]
    assert upgrade_request_headers(headers) == [
        (b"User-Agent", b"ua"),
        (b"Accept-Language", b"fr"),
        (b"Authorization", b"token t"),
    ]


# -- origins and hosts --------------------------------------------------------------------

COLAB = "https://colab.research.google.com"


@pytest.mark.parametrize(
    ("host", "split"),
    [
        ("example:80", ("example", 80)),
        ("Example.COM.", ("example.com", None)),
        ("[::1]:8889", ("::1", 8889)),
        ("[::1]", ("::1", None)),
        ("::1", ("::1", None)),
        ("localhost:abc", ("localhost", None)),
        ("[::1", ("[::1", None)),
    ],
)
def test_split_host(host: str, split: tuple[str, int | None]) -> None:
    assert split_host(host) == split


@pytest.mark.parametrize(
    ("host", "local"),
    [
        ("localhost", True),
        ("localhost:8888", True),
        ("LOCALHOST:8888", True),
        ("localhost.:8888", True),
        ("127.0.0.1:8888", True),
        ("127.1.2.3", True),
        ("[::1]:8888", True),
        ("::1", True),
        (None, False),
        ("", False),
        ("evil.example", False),
        ("evil.example:8888", False),
        ("localhost.evil.example", False),
        ("127.0.0.1.evil.example", False),
        ("127.0.0.1.nip.io:8888", False),
        ("evil.example@localhost", False),
        ("128.0.0.1", False),
        ("0.0.0.0", False),
        ("[::2]:8888", False),
        ("127.a.0.1", False),
    ],
)
def test_is_local_host(host: str | None, local: bool) -> None:
    assert is_local_host(host) is local


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.9.8.7", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("::ffff:127.3.2.1", True),
        ("localhost", True),
        ("fe80::1%lo", False),
        ("::ffff:10.0.0.1", False),
        ("10.0.0.1", False),
        ("192.168.1.2", False),
        ("::", False),
        ("0.0.0.0", False),
        ("127.evil", False),
        ("", False),
        (None, False),
    ],
)
def test_is_loopback_address(address: str | None, loopback: bool) -> None:
    assert is_loopback_address(address) is loopback


def test_is_local_host_extra_names() -> None:
    assert is_local_host("MyBox.lan:8888", ["mybox.lan"])
    assert not is_local_host("other.lan:8888", ["mybox.lan"])


# -- the auth URL -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "scheme", "host", "target"),
    [
        ("http://127.0.0.1:8000/fake-auth?x=1", "ws", "127.0.0.1:8000", "/fake-auth?x=1"),
        ("http://localhost:8000/?token=abc", "ws", "localhost:8000", "/?token=abc"),
        ("http://localhost:8000", "ws", "localhost:8000", "/"),
        ("http://localhost/", "ws", "localhost:80", "/"),
        ("http://localhost:80/", "ws", "localhost", "/"),
        ("https://localhost/", "wss", "localhost:443", "/"),
        ("https://localhost:443/a", "wss", "localhost", "/a"),
        ("http://LOCALHOST:8000/a", "ws", "localhost:8000", "/a"),
        ("HTTP://localhost:8000/a", "http", "LocalHost:8000", "/a"),
        ("http://[::1]:8000/x", "ws", "[::1]:8000", "/x"),
        ("http://[::1]/x", "ws", "[::1]", "/x"),
        ("http://localhost:8000/a#frag", "ws", "localhost:8000", "/a"),
    ],
)
def test_auth_url_same_origin(url: str, scheme: str, host: str, target: str) -> None:
    assert auth_url_target(url, scheme, host) == target


@pytest.mark.parametrize(
    ("url", "scheme", "host"),
    [
        ("https://localhost:8000/", "ws", "localhost:8000"),
        ("http://localhost:8000/", "wss", "localhost:8000"),
        ("ftp://localhost:8000/", "ws", "localhost:8000"),
        ("http://127.0.0.1:8000/", "ws", "localhost:8000"),
        ("http://evil.example:8000/", "ws", "localhost:8000"),
        ("http://localhost.evil.example:8000/", "ws", "localhost:8000"),
        ("http://localhost:8001/", "ws", "localhost:8000"),
        ("http://localhost/", "ws", "localhost:8000"),
        ("http://localhost:443/", "wss", "localhost"),
        ("http://localhost:0/", "ws", "localhost"),
        ("http://[::1]:8001/x", "ws", "[::1]:8000"),
        ("http://[::2]:8000/x", "ws", "[::1]:8000"),
        ("http://a@localhost:8000/", "ws", "localhost:8000"),
        ("http://a:b@localhost:8000/", "ws", "localhost:8000"),
        ("http://@localhost:8000/", "ws", "localhost:8000"),
        ("http://localhost:8000@evil.example/", "ws", "localhost:8000"),
        ("http://localhost:99999/", "ws", "localhost:8000"),
        ("http://localhost:abc/", "ws", "localhost:8000"),
        ("http://[::1/", "ws", "[::1]:8000"),
        ("/fake-auth", "ws", "localhost:8000"),
        ("//localhost:8000/fake-auth", "ws", "localhost:8000"),
        ("", "ws", "localhost:8000"),
        # Same origin, but a path that is no valid request target: refused as AuthUrlError
        # (a bare ValueError would escape and crash the client's socket).
        ("http://localhost:8000/a b", "ws", "localhost:8000"),
        ("http://localhost:8000//evil.example/x", "ws", "localhost:8000"),
        ("http://localhost:8000/\\evil.example/x", "ws", "localhost:8000"),
        ("http://localhost:8000/\x00", "ws", "localhost:8000"),
    ],
)
def test_auth_url_other_origin_refused(url: str, scheme: str, host: str) -> None:
    with pytest.raises(AuthUrlError):
        auth_url_target(url, scheme, host)


@FUZZ
@given(any_text)
@example("http://localhost:8000/a b")
def test_auth_url_only_raises_auth_url_error(url: str) -> None:
    try:
        target = auth_url_target(url, "ws", "localhost:8000")
    except AuthUrlError:
        return
    assert TARGET_RE.fullmatch(target)
    assert not target.startswith("//")


def test_cookie_headers() -> None:
    assert cookie_headers({}) == []
    assert cookie_headers({"a": "1", "_xsrf": "x"}) == [(b"cookie", b"a=1; _xsrf=x")]


def test_a_client_end_is_a_close_only_with_a_code() -> None:
    assert client_ended(1000) is Outcome.CLIENT_CLOSE
    assert client_ended(4001) is Outcome.CLIENT_CLOSE
    assert client_ended(None) is Outcome.CLIENT_LEFT
    assert client_ended(1006) is Outcome.CLIENT_LEFT
