"""``_parts.MessageAssembler`` and the stepped parser: the same outcome as ``parse_client_message``.

Both exist only so that a large message never holds the event loop in one long call; neither may
change what a message means. hypothesis builds request messages (valid, broken, escaped, with
the placeholder or a nested ``body_base64`` written by the client), cuts them anywhere, and
compares. The sizes that switch paths (``STEP``, ``HEAD_LIMIT``) are made small so that short
texts cross them.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from trio_httpws import _parts
from trio_httpws._parts import PLACEHOLDER, MessageAssembler, parse_large_client_message
from trio_httpws._protocol import (
    BAD_JSON_TEXT,
    ClientMessage,
    ErrorFrame,
    ProxyRequest,
    parse_client_message,
)

from ..support.fuzz import examples


@contextmanager
def small_sizes(step: int = 8, head_limit: int = 64) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_parts, "STEP", step)
        mp.setattr(_parts, "HEAD_LIMIT", head_limit)
        yield


def assemble(text: str, cuts: list[int]) -> MessageAssembler:
    assembler = MessageAssembler()
    start = 0
    for cut in sorted({c % (len(text) + 1) for c in cuts}):
        assembler.feed(text[start:cut])
        start = cut
    assembler.feed(text[start:])
    return assembler


def message(body: bytes | str | None = None, **extra: object) -> str:
    contents: dict[str, object] = {"message_id": "m1", "method": "POST", "path": "/api/x"}
    if body is not None:
        contents["body_base64"] = (
            base64.b64encode(body).decode() if isinstance(body, bytes) else body
        )
    contents.update(extra)
    return json.dumps(contents)


# -- what the fast path is for -----------------------------------------------------------------


@pytest.mark.parametrize("part_size", [1, 3, 4, 7, 1000, 1 << 16])
def test_a_large_body_is_decoded_part_by_part(part_size: int) -> None:
    body = bytes(range(256)) * 1000 + b"xy"  # a padded end
    text = message(body, headers={"X-A": "b"})
    assembler = MessageAssembler()
    for start in range(0, len(text), part_size):
        assembler.feed(text[start : start + part_size])
    assert not assembler.fell_back
    assert assembler.finish() == ProxyRequest('"m1"', "POST", "/api/x", body)


def test_the_body_key_may_come_last_or_first() -> None:
    body = b"\x00\xff" * 5000
    encoded = base64.b64encode(body).decode()
    first = f'{{"body_base64": "{encoded}", "message_id": 7, "method": "put", "path": "/p?q=1"}}'
    assembler = assemble(first, [10, 20, 5000])
    assert not assembler.fell_back
    assert assembler.finish() == ProxyRequest("7", "PUT", "/p?q=1", body)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (
            '{"message_id": "m", "method": "POST", "path": "/", "body_base64": "QUJ\\u0044"}',
            "escape",
        ),
        ('{"message_id": "m", "method": "POST", "path": "/", "body_base64": "QU\\\\/D"}', "\\\\"),
        ('{"message_id": "m", "method": "POST", "path": "/", "body_base64": "QUJD\\"}', '\\"'),
        ('{"message_id": "m", "method": "POST", "path": "/", "body_base64": "QQ=A"}', "pad, data"),
        ('{"message_id": "m", "method": "POST", "path": "/", "body_base64": "QQ==="}', "3 pads"),
        ('{"message_id": "m", "method": "POST", "path": "/", "body_base64": "QUJD', "cut off"),
    ],
)
def test_what_the_fast_path_does_not_expect_is_parsed_whole(text: str, why: str) -> None:
    assembler = assemble(text, [40, 60])
    assert assembler.finish() == parse_client_message(text), why


def test_a_placeholder_written_by_the_client_is_not_taken_for_the_body() -> None:
    text = message(b"real body" * 10, path="/x", headers={"h": PLACEHOLDER})
    assert assemble(text, [30]).finish() == parse_client_message(text)
    # The client's own placeholder as the body: not base64, so refused as the whole text is.
    text = (
        '{"message_id": "m", "method": "POST", "path": "/", "x": {"body_base64": "QUJD"},'
        f' "body_base64": "{PLACEHOLDER}"}}'
    )
    result = assemble(text, [5]).finish()
    assert result == parse_client_message(text)
    assert isinstance(result, ErrorFrame)
    assert "base64" in result.status_text


def test_a_nested_body_base64_is_not_the_body() -> None:
    text = (
        '{"message_id": "m", "method": "POST", "path": "/", '
        '"headers": {"body_base64": "QUJD"}, "body_base64": "REVG"}'
    )
    assert assemble(text, [50]).finish() == ProxyRequest('"m"', "POST", "/", b"DEF")
    # The nested one only: no body.
    text = '{"message_id": "m", "method": "GET", "path": "/", "x": {"body_base64": "QUJD"}}'
    assert assemble(text, [50]).finish() == ProxyRequest('"m"', "GET", "/", None)


@pytest.mark.parametrize("body", ["", "==", "=", "QQ", "QQ=", "QQ==", "QUJD=", "QUJD==", "Q"])
def test_short_and_odd_endings_match(body: str) -> None:
    text = message(body)
    for cut in range(len(text) + 1):
        assert assemble(text, [cut]).finish() == parse_client_message(text), (body, cut)
    with small_sizes(step=4):
        assert parse_large_client_message(text) == parse_client_message(text), body


def test_no_key_within_the_head_limit_falls_back() -> None:
    with small_sizes():
        text = message(b"abc" * 100, path="/" + "p" * 200)  # the key comes after 64 characters
        assembler = assemble(text, [10, 100])
        assert assembler.fell_back
        assert assembler.finish() == parse_client_message(text)


H = '"message_id": "1", "method": "POST", "path": "/x"'


@pytest.mark.parametrize(
    "text",
    [
        # What json's pure-Python scanner (the stepped parser before) judged otherwise:
        "{" + H + ', "n": 1\u0662, "body": "' + "x" * 300 + '"}',  # a non-ASCII digit
        "{" + H + ', "x": ' + "[" * 600 + "1" + "]" * 600 + ', "body": "' + "x" * 300 + '"}',
        # Padding where a slice of the old stepped decoder ended (Python 3.10's lenient decoder).
        "{" + H + f', "y": "{PLACEHOLDER}", "body_base64": "' + "A" * 7 + '=="}',
        # Nesting near the recursion limit, with a body: the pairs hook's frame must not count.
        "{" + H + ', "x": ' + '{"a": ' * 985 + "1" + "}" * 985 + ', "body_base64": "QUJDREVG"}',
    ],
)
def test_fall_backs_are_exact(text: str) -> None:
    expected = parse_client_message(text)
    with small_sizes():
        for cuts in ([5], [40, 200], list(range(0, len(text), 97))):
            assert assemble(text, cuts).finish() == expected
        assert parse_large_client_message(text) == expected


def test_an_escaped_slash_is_a_slash() -> None:
    # Some JSON encoders (PHP's, for one) write every "/" as "\/".
    body = bytes(range(256)) * 3
    text = message(body).replace("/", r"\/")
    assert r"\/" in text
    for cut in range(len(text) + 1):
        assembler = assemble(text, [cut, cut + 1])
        assert not assembler.fell_back
        assert assembler.finish() == ProxyRequest('"m1"', "POST", "/api/x", body)


def test_a_late_escape_falls_back_after_a_large_body() -> None:
    body = base64.b64encode(bytes(range(255)) * 4000).decode()  # no padding
    text = "{" + H + ', "body_base64": "' + body + r'\u0041AAA"}'
    assembler = assemble(text, list(range(0, len(text), 65536)))
    assert assembler.fell_back
    assert assembler.finish() == parse_client_message(text)


def test_not_json() -> None:
    assert assemble("no json here", [3]).finish() == ErrorFrame(400, BAD_JSON_TEXT)


# -- the property --------------------------------------------------------------------------------

_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


@st.composite
def request_texts(draw: st.DrawFn) -> str:
    body = draw(st.binary(max_size=300))
    encoded = base64.b64encode(body).decode()
    variant = draw(st.sampled_from(["plain", "mangle", "escape", "nested", "dup", "placeholder"]))
    if variant == "mangle":  # characters in or around the base64 that make it invalid, or not
        at = draw(st.integers(0, len(encoded)))
        junk = draw(st.text(alphabet=_B64 + '=\\ "-\n\u00e9', max_size=4))
        encoded = encoded[:at] + junk + encoded[at:]
    pairs: list[tuple[str, object]] = [
        ("message_id", draw(st.one_of(st.text(max_size=5), st.integers()))),
        ("method", draw(st.sampled_from(["GET", "POST", "bad method"]))),
        ("path", draw(st.sampled_from(["/a", "/b?x=1", "nope"]))),
        ("headers", {"h": draw(st.sampled_from(["v", PLACEHOLDER, "QUJD"]))}),
    ]
    if variant == "nested":
        pairs.append(("x", {"body_base64": encoded}))
    if variant == "placeholder":
        pairs.append(("x", PLACEHOLDER))
    pairs.append(("body_base64", encoded))
    if variant == "dup":
        pairs.append(("body_base64", draw(st.sampled_from(["", "QUJD", encoded]))))
    if draw(st.booleans()):
        pairs.append(("body", "text body"))
    order = draw(st.permutations(range(len(pairs))))
    separator = draw(st.sampled_from([(",", ":"), (", ", ": "), (" ,", " :  ")]))
    members = [
        json.dumps(pairs[i][0]) + separator[1] + json.dumps(pairs[i][1], separators=separator)
        for i in order
    ]
    text = "{" + separator[0].join(members) + "}"
    if variant == "escape":
        text = text.replace("/", "\\/")  # as PHP's json_encode writes them
    if draw(st.booleans()):
        text = text[: draw(st.integers(0, len(text)))]  # cut off: not JSON
    return text


@settings(max_examples=examples(600), suppress_health_check=[HealthCheck.too_slow])
@given(text=request_texts(), cuts=st.lists(st.integers(0, 10_000), max_size=6))
@example(text=message(b"\x01" * 4), cuts=[0])
def test_the_assembler_and_the_stepped_parser_agree_with_the_plain_parser(
    text: str, cuts: list[int]
) -> None:
    expected: ClientMessage = parse_client_message(text)
    with small_sizes():
        assert assemble(text, cuts).finish() == expected
        assert parse_large_client_message(text) == expected
