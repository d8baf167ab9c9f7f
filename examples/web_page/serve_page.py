"""Serve the example page (index.html) and httpws.js on their own origin.

    python examples/web_page/serve_page.py --port 8000

prints ``Serving http://127.0.0.1:8000/`` and serves until Ctrl-C. ``/httpws.js`` is the JS
client shipped inside the installed trio_httpws package (``trio_httpws/static/httpws.js``,
read with importlib.resources), so the page always uses the client that matches the proxy. A
real front end would copy that file into its own static assets the same way.

The page is a different origin from the proxy (another port is enough), so the proxy must
allow it: ``trio-httpws --allow-origin http://127.0.0.1:8000`` (or
``TRIO_HTTPWS_ALLOW_ORIGIN=http://127.0.0.1:8000`` for ``hypercorn trio_httpws:app``).
``--port 0`` picks a free port; the printed line says which.
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
from importlib.resources import files
from pathlib import Path
from typing import ClassVar

PAGE = Path(__file__).with_name("index.html")


def httpws_js() -> bytes:
    return files("trio_httpws").joinpath("static", "httpws.js").read_bytes()


class PageHandler(http.server.BaseHTTPRequestHandler):
    routes: ClassVar = {
        "/": (PAGE.read_bytes, "text/html; charset=utf-8"),
        "/index.html": (PAGE.read_bytes, "text/html; charset=utf-8"),
        "/httpws.js": (httpws_js, "text/javascript; charset=utf-8"),
    }

    def do_GET(self) -> None:
        route = self.routes.get(self.path.split("?", 1)[0])
        if route is None:
            self.send_error(404)
            return
        read, content_type = route
        body = read()
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0: any free port")
    args = parser.parse_args()
    with http.server.ThreadingHTTPServer((args.host, args.port), PageHandler) as server:
        host, port = server.server_address[:2]
        print(f"Serving http://{host}:{port}/", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            server.serve_forever()


if __name__ == "__main__":
    main()
