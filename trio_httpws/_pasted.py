"""The URL a user pastes, as Jupyter prints it or as the browser's address bar shows it.

Jupyter prints ``http://localhost:8888/tree?token=...`` (or ``/lab?token=...``) and users paste
that, or whatever page they had open. Every part that takes such a URL (the doctor, the Python
client, ``httpws.js``) reads it by this one rule, so that they cannot drift: a known Jupyter page
is cut off and what comes before it is the base URL (``/u/a/tree?token=`` keeps ``/u/a/``). A
path with no known page is only a candidate: the caller asks ``<base>api/status`` whether it is
Jupyter's, since a base URL can be anything. ``httpws.js`` has the same rule in JavaScript,
and one table of cases (``tests/support/pasted_urls.json``) checks both.

Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit, urlunsplit

from ._protocol import DEFAULT_PORTS
from ._redact import redact_userinfo

#: Jupyter's page routes (Notebook 7, JupyterLab, Notebook 6): the first path segment that is one
#: of these starts a page, not the base URL. ``login`` and ``tree`` are pages of their own; the
#: rest are followed by a file or a name (``/lab`` alone is a page too).
PAGES = frozenset({"tree", "lab", "notebooks", "edit", "doc", "consoles", "terminals", "login"})


class PastedUrlError(ValueError):
    """A pasted URL that cannot name a Jupyter server; the message never shows a token."""


@dataclass(frozen=True)
class PastedUrl:
    #: ``scheme://host[:port]/base/``: always ends with ``/``, no query.
    base_url: str
    #: The ``token`` query parameter, if there was one.
    token: str | None
    #: The page path that was cut off (``/tree``, ``/lab/tree/a.ipynb``), or None.
    cut: str | None

    @property
    def base_path(self) -> str:
        """The base URL's path, ``/`` or ``/u/a/``."""
        return urlsplit(self.base_url).path

    def told(self) -> str | None:
        """What to tell the user about the cut, or None when nothing was cut."""
        if self.cut is None:
            return None
        return f"{self.cut} is a Jupyter page, not part of the server's URL: using {self.base_url}"


def split_pasted(url: str) -> PastedUrl:
    """Read a pasted URL by the one rule (see the module docstring)."""
    text = url.strip()
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018  # raises on a port that is not a number
    except ValueError:
        raise PastedUrlError(f"not a URL: {_shown(text)!r}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise PastedUrlError(
            "the URL must start with http:// or https:// and name a host, e.g. "
            f"http://localhost:8888/?token=...; got {_shown(text)!r}"
        )
    if "@" in parts.netloc:
        # Not echoed: the password is in it.
        raise PastedUrlError(
            "the URL must not carry a user name or password: Jupyter's login is the token, "
            "e.g. http://localhost:8888/?token=..."
        )
    tokens = parse_qs(parts.query).get("token")
    path, cut = split_page(parts.path)
    # Written as a browser's URL parser writes it, so that httpws.js gives the same string.
    netloc = parts.netloc.lower()
    if parts.port is not None and parts.port == DEFAULT_PORTS[scheme]:
        netloc = netloc.rsplit(":", 1)[0]
    base = urlunsplit((scheme, netloc, path, "", ""))
    return PastedUrl(base, tokens[0] if tokens else None, cut)


def split_page(path: str) -> tuple[str, str | None]:
    """A URL path -> (the base path, ending with ``/``; the Jupyter page cut off, or None)."""
    segments = path.split("/")
    for index, segment in enumerate(segments):
        if segment in PAGES:
            page = "/" + "/".join(segments[index:]).rstrip("/")
            return "/".join(segments[:index]).rstrip("/") + "/", page
    return path.rstrip("/") + "/", None


def _shown(text: str) -> str:
    """What an error may show of a pasted URL: up to its query (a token may follow), without
    its ``user:password@``."""
    return redact_userinfo(text.split("?", 1)[0].split("#", 1)[0])
