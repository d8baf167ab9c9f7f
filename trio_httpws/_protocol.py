"""The HTTP-over-WebSocket protocol, with no I/O.

Everything here is a pure function or a small immutable value: parsing and validating the client's
request messages, building the frames we send back, the ``min_version`` rules, close codes, which
Host names and addresses count as local (the DNS-rebinding rule ``_proxy`` applies), the auth-URL
same-origin rule, cookies and the ``_xsrf`` query, and header filtering. Which browser origins may
connect, and what CORS answers they get, is ``_cors``'s. The trio modules around it only move
bytes. Nothing in this module imports trio.
"""

from __future__ import annotations

import binascii
import functools
import ipaddress
import json
import json.decoder
import json.scanner
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from http.cookies import SimpleCookie
from typing import Protocol
from urllib.parse import quote, urlsplit

import pybase64

from ._errors import AuthUrlError

#: The protocol version we speak: the one jupyter_http_over_ws 0.0.8 reports.
PROTOCOL_VERSION = "0.0.7"

#: The front end the protocol serves: Google Colab's origin, allowed unless told otherwise.
COLAB_ORIGIN = "https://colab.research.google.com"
#: The origins Colab's pages are served from: Google's own Colab tools trust both.
COLAB_ORIGINS = (COLAB_ORIGIN, "https://colab.google.com")

#: Largest body slice carried by one frame. The original extension's tests pin this (it bounds
#: the time a browser spends decoding one JSON frame), and clients may rely on it.
MAX_FRAME_DATA = 65536

MIN_VERSION_PARAM = "min_version"
AUTH_URL_PARAM = "jupyter_http_over_ws_auth_url"

HTTP_OVER_WS_PATH = "http_over_websocket"
DIAGNOSE_PATH = "http_over_websocket/diagnose"
PROXIED_WS_PREFIX = "http_over_websocket/proxied_ws/"

#: RFC 6455 close code for a server that is shutting down.
GOING_AWAY = 1001

#: Close codes: 4000 + the HTTP status the original extension used as a (non-RFC 6455) close code.
CLOSE_CODE_OFFSET = 4000

# The original sends the XSRF token in the query for these methods (cookies cannot be changed on an
# open WebSocket, so the backend's XSRF check reads it from there).
XSRF_METHODS = frozenset({"DELETE", "PATCH", "POST", "PUT"})

UNCAUGHT_ERROR_TEXT = "Uncaught server-side exception. Check logs for additional details."
BAD_JSON_TEXT = "JSON input is required."
_REQUIRED_KEYS = ("message_id", "method", "path")


# ---------------------------------------------------------------------------------------------
# min_version
# ---------------------------------------------------------------------------------------------

_STRICT_VERSION_RE = re.compile(r"^(\d+)\.(\d+)(?:\.(\d+))?(?:([ab])(\d+))?$", re.ASCII)

# (major, minor, patch, prerelease) where a release sorts after all of its prereleases, exactly
# as distutils' StrictVersion compared them.
VersionKey = tuple[int, int, int, tuple[str, int] | tuple[str]]


def parse_strict_version(text: str) -> VersionKey:
    """Parse a distutils ``StrictVersion`` string (``0.0.7``, ``0.0.1a3``, ``1.2``).

    Raises ``ValueError`` for anything else, like StrictVersion did.
    """
    match = _STRICT_VERSION_RE.match(text)
    if match is None:
        raise ValueError(f"invalid version number {text!r}")
    major, minor, patch, pre_tag, pre_num = match.groups()
    pre: tuple[str, int] | tuple[str] = (pre_tag, int(pre_num)) if pre_tag else ("~",)
    # "~" sorts after "a" and "b", so a final release is newer than its prereleases.
    return (int(major), int(minor), int(patch or 0), pre)


_OUR_VERSION = parse_strict_version(PROTOCOL_VERSION)


class VersionStatus(Enum):
    OK = "ok"
    UNPARSEABLE = "unparseable"
    OUTDATED = "outdated"


@dataclass(frozen=True)
class VersionCheck:
    status: VersionStatus
    #: The close reason for a refused connection (empty when status is OK).
    reason: str = ""


def check_min_version(min_version: str | None) -> VersionCheck:
    """Judge a client's ``min_version`` query parameter against our protocol version."""
    if min_version is None:
        return VersionCheck(VersionStatus.OK)
    try:
        requested = parse_strict_version(min_version)
    except ValueError:
        return VersionCheck(
            VersionStatus.UNPARSEABLE, f'Invalid "min_version" provided: {min_version}'
        )
    if requested > _OUR_VERSION:
        return VersionCheck(
            VersionStatus.OUTDATED,
            f"Requested version ({min_version}) > Current version ({PROTOCOL_VERSION}). "
            "Please upgrade this package.",
        )
    return VersionCheck(VersionStatus.OK)


def close_code_for_status(status: int) -> int:
    """The WebSocket close code we use where the original closed with an HTTP status."""
    return CLOSE_CODE_OFFSET + status


class CloseReason(Protocol):
    """A received close, as trio-websocket's ``CloseReason`` carries it."""

    @property
    def code(self) -> int: ...

    @property
    def reason(self) -> str | None: ...


def close_of(close: CloseReason | None) -> tuple[int | None, str]:
    """The close code (None when no close frame arrived) and reason text (never None) of a
    closed WebSocket: what ``ConnectionClosed.reason`` holds, in the form errors report it."""
    if close is None:
        return None, ""
    return close.code, close.reason or ""


# ---------------------------------------------------------------------------------------------
# Client messages
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProxyRequest:
    """One validated request message from the client."""

    #: The message_id exactly as the client's JSON spelled it, ready to splice into our frames.
    message_id_json: str
    method: str
    #: Request target on the backend: an absolute path with an optional query, ASCII only.
    path: str
    body: bytes | None


@dataclass(frozen=True)
class CancelRequest:
    """``{"message_id": X, "cancel": true}``: our extension to stop one in-flight request."""

    message_id_json: str


@dataclass(frozen=True)
class ErrorFrame:
    """An error the proxy itself answers with, as one final frame."""

    status: int
    status_text: str
    message_id_json: str | None = None

    def encode(self) -> str:
        return error_frame(self.status, self.status_text, self.message_id_json)


ClientMessage = ProxyRequest | CancelRequest | ErrorFrame

# RFC 9110 token characters: what an HTTP method may be made of.
# \Z, not $: "$" also matches before a trailing newline, which would let "GET\n" through.
_TOKEN_RE = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
# Printable ASCII without space: what h11 accepts in a request target. Anything else (space, CR,
# LF, NUL, DEL, other controls) could split the request line or inject a header.
_TARGET_RE = re.compile(r"^[\x21-\x7e]+\Z")
# Characters below 0x21 or DEL: never valid in a path, even before percent-encoding.
_CONTROL_RE = re.compile(r"[\x00-\x20\x7f]")


def is_token(text: str) -> bool:
    """An RFC 9110 token: what a method or a header name is made of."""
    return _TOKEN_RE.match(text) is not None


def _is_message_id(value: object) -> bool:
    # Clients send strings; numbers are echoed back too, as the original did. Booleans are ints to
    # Python but never a sensible id.
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def validate_path(path: str) -> str:
    """Return ``path`` as a request target for the backend, or raise ``ValueError``.

    The target must be origin-form (``/path?query``): an absolute URL, an authority-like
    ``//host/...`` or anything not starting with ``/`` could make a lenient backend or an
    intermediate treat it as another host. Non-ASCII text is percent-encoded as UTF-8, the way a
    browser would; control characters and spaces are refused rather than guessed at.
    """
    if not path.startswith("/"):
        raise ValueError("path must start with '/'")
    if path.startswith("//") or path.startswith("/\\"):
        raise ValueError("path must not name a host")
    if _CONTROL_RE.search(path):
        raise ValueError("path must not contain spaces or control characters")
    if not path.isascii():
        try:
            path = quote(path, safe="".join(chr(c) for c in range(0x21, 0x7F)))
        except UnicodeEncodeError:  # a lone surrogate from a \ud800 escape
            raise ValueError("path is not valid Unicode text") from None
    if "#" in path:
        # A fragment never travels to a server.
        path = path.split("#", 1)[0]
    if not _TARGET_RE.match(path):  # pragma: no cover - the checks above already ensure this
        raise ValueError("path is not a valid request target")
    return path


def parse_client_message(message: str | bytes) -> ClientMessage:
    """Turn one WebSocket message from the client into a request, a cancel, or an error frame.

    Never raises: every input maps to one of the three outcomes.
    """
    return _parse_message(message, json.loads, _b64decode)


def _b64decode(text: str) -> bytes:
    # As base64.b64decode(validate=True), ~50x faster here; padding after a whole group
    # ("QUJD=") is refused on every Python, as 3.13's base64 does (3.10 to 3.12 accepted it).
    return pybase64.b64decode(text, validate=True)


def _parse_message(
    message: str | bytes,
    loads: Callable[[str], object],
    b64decode: Callable[[str], bytes],
) -> ClientMessage:
    if isinstance(message, bytes):
        return ErrorFrame(400, "Binary messages are not supported: send JSON text.")
    try:
        contents = loads(message)
    except (ValueError, RecursionError):
        return ErrorFrame(400, BAD_JSON_TEXT)
    if not isinstance(contents, dict):
        return ErrorFrame(400, BAD_JSON_TEXT)

    raw_id = contents.get("message_id")
    # ensure_ascii: a lone surrogate ("\ud800" in the client's JSON) stays a JSON escape; raw, it
    # would make every frame echoing this id unencodable as UTF-8 and crash the socket.
    id_json = json.dumps(raw_id) if _is_message_id(raw_id) else None

    if contents.get("cancel") is True and id_json is not None:
        return CancelRequest(id_json)

    missing = [key for key in _REQUIRED_KEYS if key not in contents]
    if missing:
        return ErrorFrame(
            400,
            "Invalid request. The body must contain the following keys: "
            f"{', '.join(_REQUIRED_KEYS)}. Missing: {', '.join(missing)}",
            id_json,
        )
    if id_json is None:
        return ErrorFrame(400, "Invalid request: message_id must be a string or an integer.")

    def bad(text: str) -> ErrorFrame:
        return ErrorFrame(400, f"Invalid request: {text}", id_json)

    method = contents["method"]
    if not isinstance(method, str) or not _TOKEN_RE.match(method):
        return bad("method must be an HTTP token such as GET or POST.")
    path = contents["path"]
    if not isinstance(path, str):
        return bad("path must be a string.")
    try:
        target = validate_path(path)
    except ValueError as exc:
        return bad(f"{exc}.")

    headers = contents.get("headers")
    # The original ignores "headers"; we do too, but a wrong type is still a client bug worth a clear
    # answer rather than silence.
    if headers is not None and not (
        isinstance(headers, dict) and all(isinstance(v, str) for v in headers.values())
    ):
        return bad("headers must be an object of strings.")

    body: bytes | None = None
    body_b64 = contents.get("body_base64")
    text_body = contents.get("body")
    if body_b64 is not None and not isinstance(body_b64, str):
        return bad("body_base64 must be a string.")
    if text_body is not None and not isinstance(text_body, str):
        return bad("body must be a string.")
    if body_b64:
        try:
            body = b64decode(body_b64)
        except (binascii.Error, ValueError):
            return bad("body_base64 is not valid base64.")
    elif text_body is not None:
        try:
            body = text_body.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate from a \ud800 escape
            return bad("body is not valid Unicode text.")

    return ProxyRequest(id_json, method.upper(), target, body)


# ---------------------------------------------------------------------------------------------
# Server frames. Built by hand: they are on the hot path, and a body frame is a fixed skeleton
# around a base64 string that needs no escaping, so json.dumps would only spend time re-scanning
# ~87 KB of base64 per frame.
# ---------------------------------------------------------------------------------------------


def b64(data: bytes) -> str:
    # pybase64 (SIMD) straight to a str: binascii plus decode("ascii") took 215 us per 64 KiB
    # here, about half of a tunnelled download's CPU in the proxy; this takes 5 us.
    return pybase64.b64encode_as_string(data)


@functools.lru_cache(maxsize=512)
def header_case(name: str) -> str:
    """``content-type`` -> ``Content-Type``: tornado's spelling, which the original sent."""
    return "-".join(word.capitalize() for word in name.split("-"))


def response_headers(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """Backend response headers as the original's frame carried them: repeats joined by ','."""
    result: dict[str, str] = {}
    for raw_name, raw_value in raw:
        name = header_case(raw_name.decode("latin-1"))
        value = raw_value.decode("latin-1")
        result[name] = f"{result[name]},{value}" if name in result else value
    return result


def first_frame(
    message_id_json: str,
    status: int,
    status_text: str,
    headers: Mapping[str, str],
    data: bytes,
    done: bool,
) -> str:
    """The first frame of a response: status, statusText, headers, and the first body slice."""
    parts = [
        '{"message_id":',
        message_id_json,
        ',"status":',
        str(int(status)),
        ',"statusText":',
        json.dumps(status_text),
        ',"headers":',
        json.dumps(dict(headers)),
    ]
    if data:
        parts += [',"data":"', b64(data), '"']
    parts.append(',"done":true}' if done else ',"done":false}')
    return "".join(parts)


def data_frame(message_id_json: str, data: bytes, done: bool) -> str:
    """A later frame of a response: only the message_id, a body slice and the done flag."""
    tail = '","done":true}' if done else '","done":false}'
    # One join, not a chain of +: each + of a 64 KiB body's ~87 KB of base64 copies it into a
    # fresh string, and those large short-lived allocations cost more than the copies (measured
    # here: 190 us a frame with join against 290 us with +, most of a download's proxy CPU).
    return "".join(('{"message_id":', message_id_json, ',"data":"', b64(data), tail))


def error_frame(status: int, status_text: str, message_id_json: str | None = None) -> str:
    """An error the proxy produces itself: always one frame, always ``done``."""
    parts = ['{"done":true,"status":', str(int(status)), ',"statusText":', json.dumps(status_text)]
    if message_id_json is not None:
        parts += [',"message_id":', message_id_json]
    parts.append("}")
    return "".join(parts)


def diagnose_frame(message: str, has_auth_cookie: bool, outdated: bool) -> str:
    return json.dumps(
        {
            "message_id": message,
            "extension_version": PROTOCOL_VERSION,
            "has_authentication_cookie": has_auth_cookie,
            "is_outdated_extension": outdated,
        }
    )


# ---------------------------------------------------------------------------------------------
# Schemes, hosts and the auth URL
# ---------------------------------------------------------------------------------------------


def http_scheme(scheme: str) -> str:
    """The HTTP scheme of a WebSocket scheme (an HTTP scheme stays as it is)."""
    return {"ws": "http", "wss": "https"}.get(scheme, scheme)


LOCAL_HOSTNAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def split_host(host: str) -> tuple[str, int | None]:
    """``example:80`` -> (``example``, 80); ``[::1]:8889`` -> (``::1``, 8889)."""
    host = host.strip()
    if host.startswith("["):
        end = host.find("]")
        if end < 0:
            return host, None
        name, rest = host[1:end], host[end + 1 :]
        port = rest[1:] if rest.startswith(":") else ""
    else:
        name, _, port = host.rpartition(":") if host.count(":") == 1 else (host, "", "")
    return name.lower().rstrip("."), int(port) if port.isdigit() else None


def is_local_host(host: str | None, extra_names: Iterable[str] = ()) -> bool:
    """The DNS-rebinding check: does this Host header name this machine?

    A page on evil.example whose DNS name was re-pointed at 127.0.0.1 reaches a loopback server
    with ``Host: evil.example``; refusing non-local names stops it, as Jupyter's own check does.
    """
    if not host:
        return False
    name, _ = split_host(host)
    allowed = LOCAL_HOSTNAMES | {n.lower() for n in extra_names}
    if name in allowed:
        return True
    # Any 127.x.y.z is loopback too.
    parts = name.split(".")
    return len(parts) == 4 and parts[0] == "127" and all(p.isdigit() for p in parts)


@functools.lru_cache(maxsize=256)
def is_loopback_address(address: str | None) -> bool:
    """Whether the local address a client reached us on is a loopback one.

    On a dual-stack listener (bound to ``::``) an IPv4 client arrives as ``::ffff:127.0.0.1``:
    that is loopback too, or the DNS-rebinding check would be skipped for it. Cached: a
    server has few local addresses, and parsing one costs more than the rest of the check.
    """
    if not address:
        return False
    if address == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def auth_url_target(auth_url: str, scheme: str, host: str) -> str:
    """Validate the auth URL against the WebSocket's own origin and return its request target.

    ``scheme`` is the WebSocket request's scheme (ws/wss or http/https) and ``host`` its Host.
    The URL must name exactly that scheme and host:port, because its path is fetched from the
    backend with the user's credentials: anything else would let a page make us fetch from
    wherever it liked.
    """
    try:
        parts = urlsplit(auth_url)
        url_port = parts.port
    except ValueError as exc:
        raise AuthUrlError(f"auth URL is not a valid URL: {exc}") from None
    want_scheme = http_scheme(scheme)
    want_name, want_port = split_host(host)
    if parts.scheme != want_scheme or parts.hostname is None or parts.username is not None:
        raise AuthUrlError(f"auth URL must be on {want_scheme}://{host}, got another origin")
    default = DEFAULT_PORTS.get(want_scheme)
    url_port = default if url_port is None else url_port  # an explicit :0 is not the default
    if parts.hostname.lower().rstrip(".") != want_name or url_port != (
        default if want_port is None else want_port
    ):
        raise AuthUrlError(f"auth URL must be on {want_scheme}://{host}, got another origin")
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    try:
        return validate_path(target)
    except ValueError as exc:
        # Callers handle AuthUrlError only: a bare ValueError would crash the client's socket.
        raise AuthUrlError(f"auth URL has an invalid path: {exc}") from None


def cookie_pairs(set_cookie_values: Iterable[str]) -> dict[str, str]:
    """``name=value`` of each ``Set-Cookie``, attributes dropped, later names winning."""
    result: dict[str, str] = {}
    for value in set_cookie_values:
        pair = value.split(";", 1)[0].strip()
        name, sep, val = pair.partition("=")
        if sep and name.strip():
            result[name.strip()] = val.strip()
    return result


def parse_cookie_header(values: Iterable[str]) -> dict[str, str]:
    """The cookies of one or more ``Cookie`` headers (lenient: a bad pair is skipped)."""
    result: dict[str, str] = {}
    for header in values:
        for pair in header.split(";"):
            name, sep, val = pair.strip().partition("=")
            if sep and name:
                result[name] = val
    return result


def cookie_header(cookies: Mapping[str, str]) -> str:
    return "; ".join(f"{name}={value}" for name, value in cookies.items())


def cookie_headers(cookies: Mapping[str, str]) -> list[tuple[bytes, bytes]]:
    """The ``Cookie`` header line a backend request carries for ``cookies`` (none if empty)."""
    return [(b"cookie", cookie_header(cookies).encode("latin-1"))] if cookies else []


def xsrf_cookie_value(cookies: Mapping[str, str]) -> str | None:
    value = cookies.get("_xsrf")
    if not value:
        return None
    # Tornado quotes cookie values that need it; the query wants the bare value.
    if len(value) >= 2 and value[0] == value[-1] == '"':
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(f"_xsrf={value}")
            return jar["_xsrf"].value
        except Exception:  # a malformed quoted value: send it as it is
            return value
    return value


def add_xsrf_query(target: str, method: str, xsrf: str | None) -> str:
    """Append ``_xsrf=...`` for state-changing methods, keeping the client's query."""
    if not xsrf or method not in XSRF_METHODS:
        return target
    sep = "&" if "?" in target else "?"
    return f"{target}{sep}_xsrf={quote(xsrf, safe='')}"


# ---------------------------------------------------------------------------------------------
# Header filtering
# ---------------------------------------------------------------------------------------------

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)

# Headers of the browser's WebSocket upgrade that must not be replayed on a proxied request.
_NOT_FORWARDED = HOP_BY_HOP | {
    b"host",
    b"content-length",
    b"content-type",
    # We hand the client decoded bytes; letting the backend compress would pass gzip through.
    b"accept-encoding",
    # The proxy judged the browser's origin itself; the backend was never told about it.
    b"origin",
    b"cookie",
    b"sec-websocket-key",
    b"sec-websocket-version",
    b"sec-websocket-extensions",
    b"sec-websocket-protocol",
    b"sec-websocket-accept",
}


def _connection_tokens(headers: Sequence[tuple[bytes, bytes]]) -> set[bytes]:
    tokens: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b","))
    return tokens


def upgrade_request_headers(
    headers: Sequence[tuple[bytes, bytes]],
) -> list[tuple[bytes, bytes]]:
    """The WebSocket upgrade's headers that a proxied request carries on (cookies excluded)."""
    extra = _connection_tokens(headers)
    return [
        (name, value)
        for name, value in headers
        if (lname := name.lower()) not in _NOT_FORWARDED and lname not in extra
    ]


def strip_hop_by_hop(headers: Sequence[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Drop hop-by-hop headers, and any named in ``Connection``, for the reverse proxy."""
    extra = _connection_tokens(headers)
    return [
        (name, value)
        for name, value in headers
        if (lname := name.lower()) not in HOP_BY_HOP and lname not in extra
    ]


#: Response headers the server in front of the backend writes itself (hypercorn and the proxy's
#: own door add Date and Server to every answer): the backend's copies would make two of each.
SERVER_WRITTEN = frozenset({b"date", b"server"})


def forwarded_response_headers(
    headers: Sequence[tuple[bytes, bytes]],
) -> list[tuple[bytes, bytes]]:
    """The backend's response headers as the reverse proxy passes them to the client."""
    dropped = SERVER_WRITTEN
    if any(n.lower() == b"transfer-encoding" for n, _ in headers):
        # The body was framed by its Transfer-Encoding, not by a Content-Length beside it, and
        # the server in front of us frames it anew: a proxy must not pass such a Content-Length
        # on (RFC 9112 6.3), or the client would read a body of the wrong length.
        dropped = SERVER_WRITTEN | {b"content-length"}
    return [(n, v) for n, v in strip_hop_by_hop(headers) if n.lower() not in dropped]


def declares_body(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """Whether a request announces a body (a Content-Length, even 0, or a Transfer-Encoding)."""
    return any(n.lower() in (b"content-length", b"transfer-encoding") for n, _ in headers)


def header_values(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> list[str]:
    return [v.decode("latin-1") for n, v in headers if n.lower() == name]


def first_header(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> str | None:
    for n, v in headers:
        if n.lower() == name:
            return v.decode("latin-1")
    return None
