"""What may be shown of a text that may hold a secret: every redaction rule of the project.

Tokens travel in URLs (``?token=...``, the tunnel's auth URL), in ``user:password@`` and in
malformed request lines, and every one of those can end up in a log line, an error message or the
doctor's report. The rules that hide them live here, once: the proxy's log lines show a target's
path only (:func:`log_path`), error messages and refused command lines blank URL queries and
``token=``-like values (:func:`redact`), the doctor hides the token it was given and every
``token=`` value (:func:`redact_tokens`), and a URL with ``user:password@`` is refused without
being echoed (:func:`refuse_userinfo`). The two command lines share the parser that redacts its
own error messages and the one place their log records go out (:class:`RedactingParser`,
:func:`log_to_stderr`).

Pure: no trio, socket, ssl or select import.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections.abc import Iterable
from typing import NoReturn
from urllib.parse import SplitResult, quote

#: What the doctor shows in place of a secret.
REDACTED = "<redacted>"
#: What error messages show in place of a secret (shorter: they quote a user's command line).
HIDDEN = "…"
#: ``refuse_userinfo``'s message: it says why, and never shows the URL.
USERINFO_REFUSED = "url must not carry a user name or password"

#: A value that only shows where a secret goes (``?token=...`` in an example of a message), ended
#: by the end of the value: no secret, and hiding it would make the example unreadable.
_PLACEHOLDER = r"(?:\.\.\.|…)[;,:.)]?(?=[&\s'\"]|$)"
#: A parameter whose value is a secret, and that value (``token=abc``, ``password=...``,
#: ``jupyter_http_over_ws_auth_url=...``). A value already hidden as REDACTED is left alone.
_SECRET_PARAM = re.compile(
    r"(?i)((?:token|password|passwd|secret|key|_xsrf|auth[a-z_]*)=)"
    rf"(?!<redacted>|{_PLACEHOLDER})[^&\s'\"]+"
)
_USERINFO = re.compile(r"(//)[^/@\s'\"]*@")
_URL_QUERY = re.compile(r"(://[^\s'\"?#]*[?#])([^\s'\"]*)")
#: A URL query made of placeholders only (``token=...``): an example, shown as it is.
_EXAMPLE_QUERY = re.compile(rf"[\w-]+={_PLACEHOLDER}(?:&[\w-]+={_PLACEHOLDER})*")


def log_path(target: str) -> str:
    """A request target without its query, which may carry a token: what log lines may show."""
    return target.split("?", 1)[0]


def complaint(exc: BaseException) -> str:
    """A parser's complaint without what it quotes after its first colon (h11's ``illegal
    header line: b'...'``): a malformed line may hold a token or a cookie."""
    return str(exc).split(":", 1)[0]


def redact(text: str) -> str:
    """``text`` with URL queries, URL credentials and ``token=``-like values blanked, for error
    messages: a mistyped command line often holds a token URL."""
    text = _URL_QUERY.sub(_hide_query, text)
    return redact_userinfo(_SECRET_PARAM.sub(rf"\1{HIDDEN}", text))


def _hide_query(match: re.Match[str]) -> str:
    if _EXAMPLE_QUERY.fullmatch(match.group(2)):
        return match.group(0)
    return match.group(1) + HIDDEN


def redact_userinfo(text: str, mark: str = HIDDEN) -> str:
    """``text`` with the ``user:password@`` of every URL in it replaced by ``mark``."""
    return _USERINFO.sub(lambda m: f"{m.group(1)}{mark}@", text)


def redact_tokens(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` with each of ``secrets`` (also URL-quoted), every ``token=``-like value and any
    URL's ``user:password@`` shown as REDACTED; the URL itself (its path, the parameters' names)
    stays readable."""
    for secret in secrets:
        if secret:
            for form in {secret, quote(secret, safe="")}:
                text = text.replace(form, REDACTED)
    return redact_userinfo(_SECRET_PARAM.sub(rf"\1{REDACTED}", text), REDACTED)


def refuse_userinfo(parts: SplitResult, message: str = USERINFO_REFUSED) -> None:
    """Raise ``ValueError(message)`` for a URL with ``user:password@``: it would go out in the
    Host header and into error messages, and Jupyter logs in by token. The message never holds
    the URL."""
    if "@" in parts.netloc:
        raise ValueError(message)


class RedactingParser(argparse.ArgumentParser):
    """An argument parser whose error messages never print a token URL back."""

    def error(self, message: str) -> NoReturn:
        # A mistyped command line often holds a token URL.
        super().error(redact(message))


class RedactingFormatter(logging.Formatter):
    """Log lines with ``secrets`` and every ``token=`` value hidden (see :func:`redact_tokens`)."""

    def __init__(self, fmt: str, secrets: Iterable[str | None] = ()) -> None:
        super().__init__(fmt)
        self._secrets = tuple(secrets)

    def format(self, record: logging.LogRecord) -> str:
        return redact_tokens(super().format(record), self._secrets)


def log_to_stderr(formatter: logging.Formatter, level: str) -> None:
    """Send every log record of ``level`` and above to stderr, through ``formatter`` only."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
