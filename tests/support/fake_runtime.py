"""A fake Jupyter runtime that answers Colab's direct flow correctly (CORS, credentials, PNA).

It proves the doctor's pass path for the direct flow independently of the proxy: served alone it is a
runtime with a good CORS answer and no tunnel; behind trio-httpws both flows work. Its kernels
only know how to print 42.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import tornado.web
import tornado.websocket

TOKEN = "fake-runtime-token"


def _logged_in(handler: tornado.web.RequestHandler) -> bool:
    """The token in the query (Colab's direct flow) or the login cookie (the tunnel's)."""
    return handler.get_query_argument("token", None) == TOKEN or (
        handler.get_cookie("_xsrf") == "fake-xsrf"
    )


class _Cors(tornado.web.RequestHandler):
    def prepare(self) -> None:
        origin = self.request.headers.get("Origin")
        if origin:
            self.set_header("Access-Control-Allow-Origin", origin)
            self.set_header("Access-Control-Allow-Credentials", "true")
            self.set_header("Vary", "Origin")
        public = self.request.method == "OPTIONS" or self.request.path == "/api"
        if not public and not _logged_in(self):
            raise tornado.web.HTTPError(403)

    def options(self, *args: Any) -> None:
        headers = self.request.headers
        self.set_header("Access-Control-Allow-Methods", headers["Access-Control-Request-Method"])
        self.set_header(
            "Access-Control-Allow-Headers", headers.get("Access-Control-Request-Headers", "")
        )
        if headers.get("Access-Control-Request-Private-Network") == "true":
            self.set_header("Access-Control-Allow-Private-Network", "true")
        self.set_status(204)


class Api(_Cors):
    def get(self) -> None:
        self.write({"version": "2.99.0"})


class Status(_Cors):
    def get(self) -> None:
        self.write({"started": "now"})


#: One kernel spec per conda environment, as nb_conda_kernels lists them: well over 64 KiB.
KERNEL_SPECS = {
    f"conda-env-{i}-py": {"name": f"conda-env-{i}-py", "spec": {"argv": ["python"] * 40}}
    for i in range(400)
}


class KernelSpecs(_Cors):
    def get(self) -> None:
        self.write({"default": "conda-env-0-py", "kernelspecs": KERNEL_SPECS})


class Kernels(_Cors):
    def post(self) -> None:
        self.set_status(201)
        self.write({"id": str(uuid.uuid4()), "name": "python3"})


class Kernel(_Cors):
    def delete(self, kernel_id: str) -> None:
        self.set_status(204)


class Sessions(_Cors):
    pass


class _Socket(tornado.websocket.WebSocketHandler):
    def check_origin(self, origin: str) -> bool:
        return True

    async def get(self, *args: Any, **kwargs: Any) -> None:
        if not _logged_in(self):
            self.set_status(403)
            self.finish()
            return
        await super().get(*args, **kwargs)


class Channels(_Socket):
    def on_message(self, message: str | bytes) -> None:
        request = json.loads(message)
        parent = {"msg_id": request["header"]["msg_id"]}
        for msg_type, content in (
            ("status", {"execution_state": "busy"}),
            ("stream", {"name": "stdout", "text": "42\n"}),
            ("execute_reply", {"status": "ok"}),
            ("status", {"execution_state": "idle"}),
        ):
            reply = {"msg_type": msg_type, "parent_header": parent, "content": content}
            self.write_message(json.dumps(reply))


class Events(_Socket):
    pass


class Login(tornado.web.RequestHandler):
    """The auth URL: logs in with the token (sets the _xsrf cookie, as Jupyter does)."""

    def get(self) -> None:
        if self.get_query_argument("token", None) == TOKEN:
            self.set_cookie("_xsrf", "fake-xsrf")
        self.write("logged in")


def make_runtime_app() -> tornado.web.Application:
    return tornado.web.Application(
        [
            (r"/", Login),
            (r"/api", Api),
            (r"/api/status", Status),
            (r"/api/kernelspecs", KernelSpecs),
            (r"/api/sessions", Sessions),
            (r"/api/kernels", Kernels),
            (r"/api/kernels/([^/]+)", Kernel),
            (r"/api/kernels/[^/]+/channels", Channels),
            (r"/api/events/subscribe", Events),
        ]
    )
