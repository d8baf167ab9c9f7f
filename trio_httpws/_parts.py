"""A tunnel request message that arrives in parts: its body is decoded as the parts come.

A 40 MiB upload is one 55 MB JSON text message. Building it as one ``str``, parsing it and
base64-decoding it are each one long call that holds the GIL, so each would stall every other
socket for tens of milliseconds, even in a worker thread. Under hypercorn the session asks for
large text messages in parts of about 1 MiB (``_hypercorn_fix``) and feeds them here: nearly all
of such a message is the ``body_base64`` value, so the assembler cuts that run of base64 out of
the text as it arrives and decodes it a part at a time. What is left (keys, path, headers) is a
small JSON text, parsed at the end with a placeholder where the body was. No step is longer
than one part's worth of work, and the last one (joining the body, which releases the GIL, and
parsing the small rest) is meant for a worker thread.

The result is exactly ``parse_client_message``'s for the whole text, whatever the text and
wherever it is cut. What the fast path does not expect (an escape inside the body, a key that
never comes, the placeholder written by the client) falls back to rebuilding the whole text and
parsing that: slower, never different.
"""

from __future__ import annotations

import binascii
import json
import re
from enum import Enum, auto

from ._protocol import (
    ClientMessage,
    _b64decode,
    _parse_message,
    parse_client_message,
    parse_large_client_message,
)

# The opening of the body's value. The run of base64 after it is cut out only if the parse at the
# end finds the placeholder exactly once, as the top-level body_base64: a nested or escaped key,
# or one inside a string, then costs a fallback, never a wrong body.
_BODY_KEY = re.compile(r'"body_base64"\s*:\s*"')
#: How far back each search for the key reaches into text already searched (the key and the
#: spaces around its colon may straddle two parts).
_KEY_OVERLAP = 64
_NOT_B64 = re.compile(r"[^A-Za-z0-9+/]")
#: Stands for the body in the condensed text. ``@`` is not base64: never a valid body itself.
PLACEHOLDER = "@trio_httpws:body@"
#: Text before the body that the assembler holds while looking for the key; past it, it falls
#: back (a large message whose bulk is not a body_base64 value).
HEAD_LIMIT = 1 << 20


class _Where(Enum):
    HEAD = auto()  # before the body's value
    BODY = auto()  # inside it, in the base64 characters
    PAD = auto()  # inside it, in the "=" padding
    TAIL = auto()  # after it
    WHOLE = auto()  # fallen back: keeping the text as it came


class _Fallback(Exception):
    pass


class MessageAssembler:
    """Feed the parts of one text message in order with :meth:`feed`; then :meth:`finish`."""

    def __init__(self) -> None:
        self._where = _Where.HEAD
        #: HEAD: the text so far; later: the text up to and including the body's opening quote.
        self._head = ""
        self._searched = 0
        self._chunks: list[bytes] = []
        # Base64 characters not decoded yet: the last whole group and what follows it, so that the
        # final group is decoded with what precedes it, as b64decode sees it ("QUJD==" is valid,
        # "==" alone is not).
        self._carry = ""
        self._pad = ""
        self._tail: list[str] = []
        self._parts: list[str] = []

    @property
    def fell_back(self) -> bool:
        """True when the message is kept whole and will be parsed as one text."""
        return self._where is _Where.WHOLE

    def feed(self, part: str) -> None:
        if self._where is _Where.HEAD:
            self._feed_head(part)
        elif self._where is _Where.BODY:
            self._feed_body(part)
        elif self._where is _Where.PAD:
            self._feed_pad(part)
        elif self._where is _Where.TAIL:
            self._tail.append(part)
        else:
            self._parts.append(part)

    def finish(self) -> ClientMessage:
        """The message's outcome: exactly ``parse_client_message`` of the whole text."""
        if self._where is _Where.TAIL:
            try:
                return self._finish_condensed()
            except _Fallback:
                pass
        elif self._where is not _Where.WHOLE:
            # It ended before the body's key or inside the body (not JSON): rare, parse it whole.
            self._fall_back("")
        return _parse_whole("".join(self._whole_text()))

    # -- feeding ---------------------------------------------------------------------------------

    def _feed_head(self, part: str) -> None:
        text = self._head + part
        match = _BODY_KEY.search(text, max(0, self._searched - _KEY_OVERLAP))
        if match is None:
            self._head = text
            self._searched = len(text)
            if len(text) > HEAD_LIMIT:
                self._fall_back("")
            return
        self._head = text[: match.end()]
        self._where = _Where.BODY
        self._feed_body(text[match.end() :])

    def _feed_body(self, text: str) -> None:
        end = text.find('"')
        run = text if end < 0 else text[:end]
        if not self._take(run):
            # Something other than base64 before the next quote: find it (a slower scan, once).
            match = _NOT_B64.search(run)
            assert match is not None  # _take accepts any run of base64 characters alone
            cut = match.start()
            taken = self._take(run[:cut])
            assert taken
            if run[cut] == "=":
                self._where = _Where.PAD
                self._feed_pad(text[cut:])
            else:
                self._fall_back(text[cut:])  # an escape, or not base64 at all
            return
        if end >= 0:
            self._end_body(text[end:])

    def _take(self, run: str) -> bool:
        """Decode ``run`` (after what is carried) but the last group; False if not all base64."""
        data = self._carry + run
        # Keep 4 to 7 characters undecoded (see _carry).
        cut = (len(data) - 4) // 4 * 4 if len(data) >= 8 else 0
        if _NOT_B64.search(data, cut):
            return False
        if cut:
            try:
                decoded = binascii.a2b_base64(data[:cut])
            except (binascii.Error, ValueError):  # padding inside, or not ASCII
                return False
            # a2b_base64 skips characters outside the alphabet: a short result means there were
            # some (a cheap check where a regex scan of each part would cost several times more).
            if len(decoded) != cut // 4 * 3:
                return False
            self._chunks.append(decoded)
        self._carry = data[cut:]
        return True

    def _feed_pad(self, text: str) -> None:
        while text[:1] == "=" and len(self._pad) < 2:
            self._pad += "="
            text = text[1:]
        if not text:
            return
        if text[0] == '"':
            self._end_body(text)
        else:
            self._fall_back(text)

    def _end_body(self, rest: str) -> None:
        """The body's value ended: ``rest`` starts with its closing quote."""
        self._where = _Where.TAIL
        self._tail.append(rest)

    def _fall_back(self, rest: str) -> None:
        self._parts = [*self._whole_text(), rest]
        self._where = _Where.WHOLE
        self._head, self._chunks, self._carry, self._pad, self._tail = "", [], "", "", []

    def _whole_text(self) -> list[str]:
        """The text fed so far, rebuilt (decoding whole groups of base64 is exactly reversible)."""
        if self._where is _Where.WHOLE:
            return self._parts
        body = [binascii.b2a_base64(chunk, newline=False).decode("ascii") for chunk in self._chunks]
        return [self._head, *body, self._carry, self._pad, *self._tail]

    # -- the end ---------------------------------------------------------------------------------

    def _finish_condensed(self) -> ClientMessage:
        value = self._carry + self._pad
        if not self._chunks and not value:
            # An empty body: the condensed text is the whole text.
            return parse_client_message(self._head + "".join(self._tail))
        seen = 0

        def pairs_hook(pairs: list[tuple[str, object]]) -> dict[str, object]:
            nonlocal seen
            seen += sum(1 for _, v in pairs if v == PLACEHOLDER)
            return dict(pairs)

        def loads(text: str) -> object:
            return json.loads(text, object_pairs_hook=pairs_hook)

        def b64decode(text: str) -> bytes:
            if text != PLACEHOLDER:
                return _b64decode(text)  # another body_base64 than the one we cut out
            if seen != 1:
                raise _Fallback  # the client wrote the placeholder too
            # The last group with what was carried: raises binascii.Error when invalid.
            self._chunks.append(_b64decode(value))
            # bytes.join releases the GIL for a large join: fine in a worker thread.
            return b"".join(self._chunks)

        return _parse_message(self._head + PLACEHOLDER + "".join(self._tail), loads, b64decode)


def _parse_whole(text: str) -> ClientMessage:
    if len(text) > HEAD_LIMIT:
        return parse_large_client_message(text)
    return parse_client_message(text)
