"""The redaction rules (``_redact``), without sockets: what a log line, an error or a report may show."""

from __future__ import annotations

import logging
from urllib.parse import quote, urlsplit

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from trio_httpws._redact import (
    HIDDEN,
    REDACTED,
    USERINFO_REFUSED,
    RedactingFormatter,
    RedactingParser,
    complaint,
    log_path,
    redact,
    redact_tokens,
    redact_userinfo,
    refuse_userinfo,
)

#: Tokens as Jupyter makes them (hex, long): never a part of REDACTED or of the text around them.
tokens = st.text("0123456789abcdef", min_size=8, max_size=48)
#: What a user name or a password may hold in a URL (no "/", "@", space or quote).
userinfo = st.text(
    st.characters(blacklist_characters="/@'\"", blacklist_categories=("Cs", "Zs", "Cc")),
    min_size=1,
    max_size=20,
)
#: The same, as ``urlsplit`` reads it: no "?", "#" or brackets, which end or change the netloc.
url_userinfo = userinfo.filter(lambda text: not set(text) & set("?#[]\\"))
paths = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
texts = st.text(max_size=200)


@given(paths, st.text(max_size=40))
@example("/api/kernels", "token=abc")
def test_log_path_never_shows_the_query(path: str, query: str) -> None:
    shown = log_path(f"{path}?{query}")
    assert "?" not in shown
    assert f"{path}?{query}".startswith(shown + "?")


def test_log_path_keeps_a_target_without_query() -> None:
    assert log_path("/api/kernels/1/channels") == "/api/kernels/1/channels"


@given(
    tokens,
    st.sampled_from(["token", "TOKEN", "password", "_xsrf", "jupyter_http_over_ws_auth_url"]),
)
def test_redact_tokens_hides_every_secret_parameter(token: str, name: str) -> None:
    text = f"GET /api?a=1&{name}={token}&b=2 failed"
    shown = redact_tokens(text)
    assert token not in shown
    assert shown == f"GET /api?a=1&{name}={REDACTED}&b=2 failed"


@given(tokens, st.sampled_from(["Authorization: token {}", "{}", "/x/{}/y", "cookie={}"]))
def test_redact_tokens_hides_a_given_secret_anywhere(token: str, template: str) -> None:
    assert token not in redact_tokens(template.format(token), [token])


def test_redact_tokens_hides_the_quoted_form_too() -> None:
    secret = "a b/c"
    shown = redact_tokens(f"auth url ?next={quote(secret, safe='')}", [secret])
    assert quote(secret, safe="") not in shown


@given(texts, st.lists(st.one_of(st.none(), tokens), max_size=3))
def test_redact_tokens_is_idempotent(text: str, secrets: list[str | None]) -> None:
    once = redact_tokens(text, secrets)
    assert redact_tokens(once, secrets) == once


def test_redact_tokens_leaves_an_empty_value_and_the_words_around_it() -> None:
    # The doctor's own fix sentences name the parameter without a value.
    text = "paste the whole URL the runtime printed, ?token= included."
    assert redact_tokens(text) == text


@given(userinfo, userinfo)
def test_userinfo_never_survives(user: str, password: str) -> None:
    text = f"GET http://{user}:{password}@localhost:8888/api failed"
    for shown in (redact(text), redact_tokens(text), redact_userinfo(text)):
        assert f"{user}:{password}@" not in shown
    assert redact_userinfo(text, "X") == "GET http://X@localhost:8888/api failed"


@given(tokens)
def test_redact_blanks_url_queries(token: str) -> None:
    text = f"backend URL 'http://h:1/?token={token}' is invalid"
    shown = redact(text)
    assert token not in shown
    assert shown == f"backend URL 'http://h:1/?{HIDDEN}' is invalid"


@pytest.mark.parametrize(
    "text",
    [
        "e.g. http://localhost:8888/?token=...; got 'ftp://x/'",
        "e.g. http://localhost:8888/?token=…",
        "paste http://localhost:8888/u/a/?token=... into Colab",
        "GET /api/status?token=... answered",
    ],
)
def test_an_example_url_stays_readable(text: str) -> None:
    # "..." only shows where the token goes: hiding it left "e.g. http://localhost:8888/?… got"
    assert redact(text) == text
    assert redact_tokens(text) == text


@given(tokens, st.sampled_from(["...", "…"]))
def test_a_value_that_only_starts_like_an_example_is_hidden(token: str, dots: str) -> None:
    for query in (f"token={dots}{token}", f"token={dots}&token={token}", f"token={token}{dots}"):
        text = f"url 'http://h:1/?{query}' and token={dots}{token} x"
        assert token not in redact(text)
        assert token not in redact_tokens(text)


@given(texts)
def test_redact_is_idempotent(text: str) -> None:
    assert redact(redact(text)) == redact(text)


@given(st.sampled_from(["http", "https", "htp", "ftp"]), url_userinfo, url_userinfo, tokens)
def test_refuse_userinfo_refuses_without_echoing(
    scheme: str, user: str, password: str, token: str
) -> None:
    url = f"{scheme}://{user}:{password}@localhost:8889/?token={token}"
    with pytest.raises(ValueError, match="user name or password") as info:
        refuse_userinfo(urlsplit(url))
    assert str(info.value) == USERINFO_REFUSED
    with pytest.raises(ValueError, match=r"^mine$"):
        refuse_userinfo(urlsplit(url), "mine")


def test_refuse_userinfo_passes_a_plain_url() -> None:
    refuse_userinfo(urlsplit("http://localhost:8889/?token=x@y"))  # "@" in the query: no userinfo


def test_complaint_drops_what_the_parser_quotes() -> None:
    exc = ValueError("illegal header line: b'Cookie: secret=abc'")
    assert complaint(exc) == "illegal header line"


def test_the_parser_never_prints_a_token_back(capsys: pytest.CaptureFixture[str]) -> None:
    parser = RedactingParser(prog="p")
    parser.add_argument("--n", type=int)
    with pytest.raises(SystemExit) as info:
        parser.parse_args(["--n", "http://localhost:8889/?token=abc123secret"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "abc123secret" not in err
    assert f"'http://localhost:8889/?{HIDDEN}'" in err


def test_the_formatter_hides_the_token_and_every_token_parameter() -> None:
    formatter = RedactingFormatter("%(levelname)s %(message)s", ["s3cret", None])
    record = logging.LogRecord(
        "x", logging.ERROR, __file__, 1, "%s and %s", ("Bearer s3cret", "/?token=other"), None
    )
    assert formatter.format(record) == f"ERROR Bearer {REDACTED} and /?token={REDACTED}"
