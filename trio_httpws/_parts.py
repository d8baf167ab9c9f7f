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
wherever it is cut. A ``\\/`` inside the body (some encoders write ``/`` so) is read as ``/``.
What else the fast path does not expect (another escape inside the body, a key that never
comes, a long string elsewhere, the placeholder written by the client) falls back to the whole
text, rebuilt at the end and parsed by json's own parser: exact, but one long call.

``parse_large_client_message`` runs the same assembler over a whole message (trio-websocket,
other hypercorn versions) in slices, for a worker thread.
"""

from __future__ import annotations

import binascii
import json
import re
from enum import Enum, auto

from ._protocol import ClientMessage, _b64decode, _parse_message, b64, parse_client_message

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
#: Slice of a whole message fed at a time by parse_large_client_message.
STEP = 1 << 20


class _Where(Enum):
    HEAD = auto()  # before the body's value
    BODY = auto()  # inside it, in the base64 characters
    PAD = auto()  # inside it, in the "=" padding
    TAIL = auto()  # after it
    WHOLE = auto()  # fallen back: what came so far is kept as it is, what follows as text


class _Fallback(Exception):
    pass


class MessageAssembler:
    """Feed the parts of one text message in order with :meth:`feed`; then :meth:`finish`."""

    def __init__(self) -> None:
        self._where = _Where.HEAD
        #: HEAD: the text so far; later: the text up to and including the body's opening quote.
        self._head = ""
        self._searched = 0
        self._body = _Base64()
        #: The part before ended in a backslash: the first half of an escape, maybe "\/".
        self._backslash = False
        self._pad = ""
        self._tail: list[str] = []
        #: WHOLE: the text fed after the fall-back.
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

    def finish(self, whole: str | None = None) -> ClientMessage:
        """The message's outcome: exactly ``parse_client_message`` of the whole text.

        Meant for a worker thread. ``whole``, the text itself when the caller has it, spares
        rebuilding it for a fall-back.
        """
        if self._where is _Where.TAIL:
            try:
                return self._finish_condensed()
            except _Fallback:
                pass
        # Fallen back, or it ended before the body's key or inside the body (not JSON).
        text = "".join(self._whole_text()) if whole is None else whole
        return _parse_message(text, json.loads, _b64decode_stepped)

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
        if self._backslash:
            text = "\\" + text
            self._backslash = False
        end = text.find('"')
        run = text if end < 0 else text[:end]
        if "\\" in run:
            # Some encoders write "/" as "\/": a plain "/" to JSON. Any other escape (or a
            # backslash escaped itself) leaves a backslash behind and falls back.
            hold = end < 0 and run.endswith("\\")
            unescaped = (run[:-1] if hold else run).replace("\\/", "/")
            if "\\" in unescaped:
                self._fall_back(text)
                return
            self._backslash = hold
            text = unescaped + text[len(run) :]
            run = unescaped
            end = -1 if end < 0 else len(run)
        if not self._body.take(run):
            # Something other than base64 before the next quote: find it (a slower scan, once).
            match = _NOT_B64.search(run)
            assert match is not None  # take() accepts any run of base64 characters alone
            cut = match.start()
            taken = self._body.take(run[:cut])
            assert taken
            if run[cut] == "=":
                self._where = _Where.PAD
                self._feed_pad(text[cut:])
            else:
                self._fall_back(text[cut:])  # an escape, or not base64 at all
            return
        if end >= 0:
            self._end_body(text[end:])

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
        # What was taken apart stays so until finish() (in a worker thread) rebuilds it: here,
        # on the event loop, re-encoding a body decoded so far would be one long step.
        self._parts.append(rest)
        self._where = _Where.WHOLE

    def _whole_text(self) -> list[str]:
        """The text fed so far, rebuilt (decoding whole groups of base64 is exactly reversible;
        a "\\/" comes back as "/", the same string to JSON)."""
        held = "\\" if self._backslash else ""
        return [self._head, *self._body.text(), held, self._pad, *self._tail, *self._parts]

    # -- the end ---------------------------------------------------------------------------------

    def _finish_condensed(self) -> ClientMessage:
        if self._body.empty and not self._pad:
            # An empty body: the condensed text is the whole text.
            return parse_client_message(self._head + "".join(self._tail))
        seen = 0

        def pairs_hook(pairs: list[tuple[str, object]]) -> dict[str, object]:
            nonlocal seen
            seen += sum(1 for _, v in pairs if v == PLACEHOLDER)
            return dict(pairs)

        def loads(text: str) -> object:
            try:
                return json.loads(text, object_pairs_hook=pairs_hook)
            except RecursionError:
                # The hook's frame counts too: near the limit, let the plain parser judge.
                raise _Fallback from None

        def b64decode(text: str) -> bytes:
            if text != PLACEHOLDER:
                return _b64decode(text)  # another body_base64 than the one we cut out
            if seen != 1:
                raise _Fallback  # the client wrote the placeholder too
            return self._body.end(self._pad)

        return _parse_message(self._head + PLACEHOLDER + "".join(self._tail), loads, b64decode)


class _Base64:
    """A run of base64 characters decoded as it comes, judged at the end as b64decode would."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        # Characters not decoded yet: the last whole group and what follows it, so that the end
        # is decoded with what precedes it, as _b64decode sees the whole run ("QQ==" is valid,
        # "QUJD==" and "==" alone are not): one judge for the end, whichever way it is cut.
        self._carry = ""

    @property
    def empty(self) -> bool:
        return not self._chunks and not self._carry

    def take(self, run: str) -> bool:
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

    def end(self, pad: str) -> bytes:
        """The decoded run, ``pad`` after it; raises binascii.Error where b64decode would."""
        self._chunks.append(_b64decode(self._carry + pad))
        # bytes.join releases the GIL for a large join: fine in a worker thread.
        return b"".join(self._chunks)

    def text(self) -> list[str]:
        """The run as it came (whole groups of base64 re-encode to the same characters)."""
        return [*map(b64, self._chunks), self._carry]


def _b64decode_stepped(text: str) -> bytes:
    """``_protocol._b64decode(text)`` a STEP at a time: the same bytes, the same refusals."""
    data_end = len(text.rstrip("="))
    body = _Base64()
    for start in range(0, data_end, STEP):
        if not body.take(text[start : min(start + STEP, data_end)]):
            # Any character outside the alphabet before the final padding: _b64decode refuses
            # it too.
            raise binascii.Error("Non-base64 digit found")
    return body.end(text[data_end:])


def parse_large_client_message(message: str | bytes) -> ClientMessage:
    """``parse_client_message`` for a large whole message, in steps: for a worker thread.

    ``json.loads`` and base64 decoding would each hold the GIL for their whole run, ~0.1 s for a
    40 MiB upload, stalling every other thread (the event loop) as long; the assembler's steps
    each hold it a few milliseconds. Same result for every input.
    """
    if isinstance(message, bytes):
        return parse_client_message(message)
    assembler = MessageAssembler()
    for start in range(0, len(message), STEP):
        assembler.feed(message[start : start + STEP])
    return assembler.finish(whole=message)
