"""Prometheus metrics on a port of their own, scraped after real traffic on every door.

A real proxy on 127.0.0.1 (each door), a real Jupyter Server 2 or the tornado fake backend,
and the metrics listener scraped over HTTP; every count is asserted as an exact delta.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import trio
import trio_websocket
from prometheus_client.parser import text_string_to_metric_families

import trio_httpws
from trio_httpws._jupyter import free_port
from trio_httpws._metrics_export import registry_for, render
from trio_httpws._outcome import Outcome

from ..support._http import http_request
from ..support.fake_backend import FakeBackend
from ..support.jupyter import Jupyter
from ..support.ws import connect

COLAB = "https://colab.research.google.com"
EVIL = "https://evil.example"
REPO = Path(__file__).resolve().parent.parent
OUTCOMES = [o.value for o in Outcome]

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def scrape(metrics: str) -> Samples:
    response = await http_request(metrics, "GET", "/metrics")
    assert response.status == 200
    assert (response.get("content-type") or "").startswith("text/plain; version=")
    return parse(response.body.decode())


class Meter:
    """Deltas of a proxy's metrics since ``mark``."""

    def __init__(self, metrics: str) -> None:
        self.metrics = metrics
        self.base: Samples = {}
        self.now: Samples = {}

    async def mark(self) -> None:
        self.base = self.now = await scrape(self.metrics)

    def delta(self, name: str, **labels: str) -> float:
        key = (name, frozenset(labels.items()))
        return self.now[key] - self.base[key]

    def value(self, name: str, **labels: str) -> float:
        return self.now[(name, frozenset(labels.items()))]

    async def settle(self, done: Callable[[Meter], bool]) -> None:
        """Scrape until ``done``: a door counts an exchange just after the client has its end."""
        with trio.fail_after(15):
            while True:
                self.now = await scrape(self.metrics)
                if done(self):
                    return
                await trio.sleep(0.02)


@asynccontextmanager
async def metered_proxy(
    config: trio_httpws.Config, door: str
) -> AsyncIterator[tuple[str, Meter, trio_httpws.Proxy]]:
    """``config`` served on ``door`` with a metrics listener: (proxy URL, its meter, Proxy)."""
    proxy = trio_httpws.Proxy(config)
    try:
        async with trio.open_nursery() as nursery:
            if door == "handler":
                async with running_handler_proxy_of(proxy) as url:
                    await nursery.start(trio_httpws.serve_metrics, proxy, "127.0.0.1", 0)
                    yield url, Meter(f"http://127.0.0.1:{proxy.metrics_port}"), proxy
                    nursery.cancel_scope.cancel()
                    return
            port = await nursery.start(
                partial(
                    trio_httpws.serve,
                    config,
                    "127.0.0.1",
                    0,
                    server=door,
                    metrics_port=0,
                    proxy=proxy,
                )
            )
            yield f"http://127.0.0.1:{port}", Meter(f"http://127.0.0.1:{proxy.metrics_port}"), proxy
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await proxy.aclose()


@asynccontextmanager
async def running_handler_proxy_of(proxy: trio_httpws.Proxy) -> AsyncIterator[str]:
    """``trio_httpws.handler()`` for ``proxy`` under trio-websocket (WebSockets only)."""
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            partial(
                trio_websocket.serve_websocket,
                trio_httpws.handler(proxy.config, proxy=proxy),
                "127.0.0.1",
                0,
                ssl_context=None,
            )
        )
        yield f"http://127.0.0.1:{server.port}"
        nursery.cancel_scope.cancel()


# -- real traffic, exact deltas -----------------------------------------------------------------


async def test_twenty_gets_count_twenty(jupyter: Jupyter, door: str) -> None:
    config = trio_httpws.Config(backend=jupyter.url)
    async with metered_proxy(config, door) as (url, meter, _):
        await meter.mark()
        sizes = []
        for _ in range(20):
            response = await http_request(url, "GET", f"/api/status?token={jupyter.token}")
            assert response.status == 200
            sizes.append(len(response.body))
        requests = "trio_httpws_requests_total"
        await meter.settle(lambda m: m.delta(requests, flow="reverse", status_class="2xx") >= 20)
        assert meter.delta(requests, flow="reverse", status_class="2xx") == 20
        for other in ("1xx", "3xx", "4xx", "5xx", "none"):
            assert meter.delta(requests, flow="reverse", status_class=other) == 0
        body = "trio_httpws_http_body_bytes_total"
        assert meter.delta(body, flow="reverse", direction="to_client") == sum(sizes)
        assert meter.delta(body, flow="reverse", direction="from_client") == 0
        assert meter.delta("trio_httpws_backend_first_byte_seconds_count") == 20
        assert meter.delta("trio_httpws_requests_total", flow="tunnel", status_class="2xx") == 0
        # Nothing in flight: every pooled connection is idle, and kept.
        assert meter.value("trio_httpws_backend_connections_open") >= 1
        assert meter.value("trio_httpws_backend_connections_idle") == meter.value(
            "trio_httpws_backend_connections_open"
        )


async def test_tunnel_requests_and_their_socket(jupyter: Jupyter, door: str) -> None:
    config = trio_httpws.Config(backend=jupyter.url)
    async with metered_proxy(config, door) as (url, meter, _):
        auth = urlencode({"jupyter_http_over_ws_auth_url": f"{url}/?token={jupyter.token}"})
        await meter.mark()
        sent = received = 0
        async with connect(
            url, f"/http_over_websocket?min_version=0.0.7&{auth}", headers=[("Origin", COLAB)]
        ) as ws:
            await meter.settle(lambda m: m.delta("trio_httpws_websockets_open", kind="tunnel") == 1)
            for n in range(20):
                message = json.dumps({"message_id": n, "method": "GET", "path": "/api/status"})
                await ws.send_message(message)
                sent += len(message.encode())
                while True:
                    frame = await ws.get_message()
                    assert isinstance(frame, str)
                    received += len(frame.encode())
                    parsed = json.loads(frame)
                    assert parsed.get("status", 200) == 200, parsed
                    if parsed["done"]:
                        break
        ended = "trio_httpws_websockets_total"
        # hypercorn does not tell the app the client's close code: its close reads as a drop.
        outcome = "client_left" if door == "hypercorn" else "client_close"
        await meter.settle(lambda m: m.delta(ended, kind="tunnel", outcome=outcome) >= 1)
        assert meter.delta("trio_httpws_requests_total", flow="tunnel", status_class="2xx") == 20
        assert meter.delta("trio_httpws_requests_total", flow="reverse", status_class="2xx") == 0
        assert meter.delta(ended, kind="tunnel", outcome=outcome) == 1
        assert meter.value("trio_httpws_websockets_open", kind="tunnel") == 0
        payload = "trio_httpws_websocket_payload_bytes_total"
        assert meter.delta(payload, kind="tunnel", direction="to_client") == received
        assert meter.delta(payload, kind="tunnel", direction="from_client") == sent
        # The 20 requests, and the auth URL fetched for the socket (and its redirects).
        assert meter.delta("trio_httpws_backend_first_byte_seconds_count") >= 21


TEXT = "héllo wörld ✓ " * 10  # 140 characters, 180 bytes in UTF-8


@pytest.mark.parametrize("server", ["hypercorn", "trio", "handler"])
@pytest.mark.parametrize(
    ("path", "kind"),
    [("/plain-echo-ws", "relay"), ("/http_over_websocket/proxied_ws/plain-echo-ws", "proxied_ws")],
)
async def test_relayed_bytes_are_payload_bytes_in_the_access_line_too(
    fake_backend: FakeBackend, server: str, path: str, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    # One unit everywhere: the payload in UTF-8 bytes, whether the door splices the frames or a
    # frame relay decodes them to characters (hypercorn, handler(), proxied_ws).
    caplog.set_level(logging.INFO, logger="trio_httpws.access")
    config = trio_httpws.Config(backend=fake_backend.url, allow_origins=(COLAB,))
    async with metered_proxy(config, server) as (url, meter, _):
        await meter.mark()
        async with connect(url, f"{path}?token=secret-t0ken", headers=[("Origin", COLAB)]) as ws:
            await ws.send_message(TEXT)
            assert await ws.get_message() == TEXT
            await ws.send_message(b"\x00" * 7)
            assert await ws.get_message() == b"\x00" * 7
        ended = "trio_httpws_websockets_total"
        await meter.settle(lambda m: m.value("trio_httpws_websockets_open", kind=kind) == 0)
        assert sum(meter.delta(ended, kind=kind, outcome=o) for o in OUTCOMES) == 1
        payload = "trio_httpws_websocket_payload_bytes_total"
        size = len(TEXT.encode()) + 7
        assert meter.delta(payload, kind=kind, direction="to_client") == size
        assert meter.delta(payload, kind=kind, direction="from_client") == size
    [line] = [r for r in caplog.records if r.name == "trio_httpws.access"]
    assert line.fields["bytes"] == size  # type: ignore[attr-defined]


async def test_a_refused_origin(fake_backend: FakeBackend, door: str) -> None:
    config = trio_httpws.Config(backend=fake_backend.url, allow_origins=(COLAB,))
    async with metered_proxy(config, door) as (url, meter, _):
        await meter.mark()
        refused = await http_request(url, "GET", "/headers", headers=[("Origin", EVIL)])
        assert refused.status == 403
        with pytest.raises(trio_websocket.ConnectionRejected):
            async with connect(url, "/plain-echo-ws", headers=[("Origin", EVIL)]):
                pass  # pragma: no cover - the handshake fails
        ended = "trio_httpws_websockets_total"
        await meter.settle(lambda m: m.delta(ended, kind="relay", outcome="refused_origin") >= 1)
        assert meter.delta("trio_httpws_refusals_total", reason="origin") == 2
        assert meter.delta(ended, kind="relay", outcome="refused_origin") == 1
        assert meter.delta("trio_httpws_requests_total", flow="reverse", status_class="4xx") == 1
        # The backend never saw them.
        assert meter.delta("trio_httpws_backend_first_byte_seconds_count") == 0
        for reason in ("host", "path", "size", "min_version", "bad_request", "head_timeout"):
            assert meter.delta("trio_httpws_refusals_total", reason=reason) == 0


async def test_a_closed_backend(fake_backend: FakeBackend, door: str) -> None:
    # Nothing listens there: every connect fails.
    gone = trio_httpws.Config(backend=f"http://127.0.0.1:{free_port()}")
    async with metered_proxy(gone, door) as (url, meter, _):
        await meter.mark()
        assert (await http_request(url, "GET", "/api/status")).status == 502
        with pytest.raises(trio_websocket.ConnectionRejected) as rejected:
            async with connect(url, "/plain-echo-ws"):
                pass  # pragma: no cover - the handshake fails
        assert rejected.value.status_code == 502
        ended = "trio_httpws_websockets_total"
        await meter.settle(lambda m: m.delta(ended, kind="relay", outcome="backend_error") >= 1)
        assert meter.delta("trio_httpws_backend_connect_failures_total") == 2
        assert meter.delta("trio_httpws_requests_total", flow="reverse", status_class="5xx") == 1
        assert meter.delta(ended, kind="relay", outcome="backend_error") == 1
        assert meter.value("trio_httpws_backend_connections_open") == 0
    # A backend that closes the socket: that counter, and none other.
    config = trio_httpws.Config(backend=fake_backend.url)
    async with metered_proxy(config, door) as (url, meter, _):
        await meter.mark()
        async with connect(url, "/close-on-first-message-ws") as ws:
            await ws.send_message("close, please")
            with pytest.raises(trio_websocket.ConnectionClosed):
                await ws.get_message()
        await meter.settle(lambda m: m.value("trio_httpws_websockets_open", kind="relay") == 0)
        assert meter.delta(ended, kind="relay", outcome="backend_close") == 1
        assert sum(meter.delta(ended, kind="relay", outcome=o) for o in OUTCOMES) == 1


async def test_slot_waits_and_timeouts(fake_backend: FakeBackend, door: str) -> None:
    config = trio_httpws.Config(backend=fake_backend.url, max_connections=1, pool_timeout=0.3)
    async with metered_proxy(config, door) as (url, meter, _):
        await meter.mark()
        results: list[int] = []

        async def get(delay: float) -> None:
            results.append((await http_request(url, "GET", f"/slow?delay={delay}")).status)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(get, 3)
            await meter.settle(lambda m: m.value("trio_httpws_backend_connections_open") == 1)
            nursery.start_soon(get, 0)  # waits for the one slot, past pool_timeout: a 503
        assert sorted(results) == [200, 503]
        await meter.settle(lambda m: m.delta("trio_httpws_backend_slot_wait_seconds_count") >= 1)
        assert meter.delta("trio_httpws_backend_slot_wait_seconds_count") == 1
        assert meter.delta("trio_httpws_backend_slot_wait_seconds_sum") >= 0.3
        assert meter.delta("trio_httpws_backend_timeouts_total", phase="slot") == 1
        assert meter.delta("trio_httpws_requests_total", flow="reverse", status_class="5xx") == 1


async def test_a_shutdown(fake_backend: FakeBackend, door: str) -> None:
    config = trio_httpws.Config(backend=fake_backend.url, shutdown_timeout=5)
    proxy = trio_httpws.Proxy(config)
    serving = trio.CancelScope()

    async def run_proxy(task_status: trio.TaskStatus[int]) -> None:
        with serving:
            await trio_httpws.serve(
                config, server=door, metrics_port=0, proxy=proxy, task_status=task_status
            )

    slow_status: list[int] = []
    try:
        async with trio.open_nursery() as nursery:
            url = f"http://127.0.0.1:{await nursery.start(run_proxy)}"
            metrics = f"http://127.0.0.1:{proxy.metrics_port}"

            async def slow() -> None:
                slow_status.append((await http_request(url, "GET", "/slow?delay=2")).status)

            async with connect(url, "/plain-echo-ws") as ws:
                await ws.send_message("before")
                assert await ws.get_message() == "before"
                nursery.start_soon(slow)
                await Meter(metrics).settle(
                    lambda m: m.value("trio_httpws_backend_connections_open") == 1
                )
                serving.cancel()  # the proxy shuts down
                with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                    await ws.get_message()
                assert closed.value.reason is not None
                assert closed.value.reason.code == 1001
            # In the grace, the slow request still in flight: the metrics still answer, and
            # count the socket the shutdown closed (just after its client had the 1001).
            during = Meter(metrics)
            await during.settle(
                lambda m: (
                    m.value("trio_httpws_websockets_total", kind="relay", outcome="shutdown") == 1
                )
            )
    finally:
        with trio.CancelScope(shield=True):
            await proxy.aclose()
    assert slow_status == [200]
    shutdown = (
        "trio_httpws_websockets_total",
        frozenset({"kind": "relay", "outcome": "shutdown"}.items()),
    )
    # Closed with the proxy, once the grace was over: nobody listens there any more.
    with pytest.raises(OSError, match="all attempts to connect"):
        await trio.open_tcp_stream("127.0.0.1", proxy.metrics_port or 0)
    after = parse(render(registry_for(proxy.stats)).decode())
    assert after[shutdown] == 1
    assert after[("trio_httpws_websockets_open", frozenset({"kind": "relay"}.items()))] == 0


# -- the metrics port serves /metrics and nothing else ------------------------------------------


async def test_the_metrics_port_serves_metrics_only(jupyter: Jupyter, door: str) -> None:
    token = jupyter.token
    config = trio_httpws.Config(backend=jupyter.url)
    async with metered_proxy(config, door) as (url, meter, _):
        # Traffic that carries the token in every place it can: query, cookie, auth URL.
        assert (await http_request(url, "GET", f"/api/status?token={token}")).status == 200
        cookie = [("Cookie", f"token={token}"), ("Authorization", f"token {token}")]
        await http_request(url, "GET", f"/api/contents?token={token}", headers=cookie)
        auth = urlencode({"jupyter_http_over_ws_auth_url": f"{url}/?token={token}"})
        async with connect(url, f"/http_over_websocket?{auth}", headers=[("Origin", COLAB)]):
            pass
        metrics = meter.metrics
        for target in ("/", "/api/status", f"/api/status?token={token}", "/metrics/", "/metricsx"):
            answer = await http_request(metrics, "GET", target)
            assert answer.status == 404, target
            assert token.encode() not in answer.body
            assert b"trio_httpws_" not in answer.body
        assert (await http_request(metrics, "POST", "/metrics", body=b"x")).status == 405
        head = await http_request(metrics, "HEAD", "/metrics")
        assert (head.status, head.body) == (200, b"")
        # Prometheus may add a query (its scrape parameters): still the metrics.
        scraped = await http_request(metrics, "GET", "/metrics?format=prometheus")
        assert scraped.status == 200
        assert b"trio_httpws_requests_total" in scraped.body
        assert token.encode() not in scraped.body
        assert b"/api/" not in scraped.body  # no path either


async def test_metrics_on_the_proxys_port_are_jupyters(jupyter: Jupyter, door: str) -> None:
    config = trio_httpws.Config(backend=jupyter.url)
    async with metered_proxy(config, door) as (url, _, _):
        target = f"/metrics?token={jupyter.token}"
        through = await http_request(url, "GET", target)
        direct = await http_request(jupyter.url, "GET", target)
        assert through.status == direct.status == 200
        assert b"trio_httpws_" not in through.body
        # Jupyter Server's own metrics (its request histogram), forwarded like any path.
        assert b"http_request_duration_seconds" in through.body


# -- without prometheus_client, and under ASGI servers -------------------------------------------


@pytest.fixture
def no_prometheus_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """prometheus_client as if it were not installed: its import fails."""
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    monkeypatch.delitem(sys.modules, "trio_httpws._metrics_export")
    monkeypatch.delattr(trio_httpws, "_metrics_export")


async def test_without_prometheus_client_the_error_names_the_install(
    no_prometheus_client: None, fake_backend: FakeBackend, door: str
) -> None:
    config = trio_httpws.Config(backend=fake_backend.url, metrics_port=0)
    with trio.fail_after(10), pytest.raises(trio_httpws.ConfigError) as info:
        await trio_httpws.serve(config, server=door)  # raises before anything listens
    text = str(info.value)
    assert "prometheus_client" in text
    assert "pip install -e '.[metrics]'" in text
    assert "pip install trio-httpws" not in text  # not on a package index yet


async def test_a_metrics_port_in_use_is_named(fake_backend: FakeBackend, door: str) -> None:
    taken = trio.socket.socket()
    await taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    config = trio_httpws.Config(backend=fake_backend.url, metrics_port=port)
    try:
        # An OSError, in the exception groups of the nurseries it crosses.
        with trio.fail_after(10), pytest.raises(BaseException) as info:  # noqa: PT011
            await trio_httpws.serve(config, server=door)
    finally:
        taken.close()
    errors: list[BaseException] = [info.value]
    while hasattr(errors[-1], "exceptions"):
        errors.append(errors[-1].exceptions[0])
    assert isinstance(errors[-1], OSError)
    assert f"cannot serve metrics on 127.0.0.1:{port}" in str(errors[-1])


def run_cli(argv: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    # prometheus_client blocked as if not installed; the clone's trio_httpws imported.
    code = (
        "import sys; sys.modules['prometheus_client'] = None; "
        "from trio_httpws._cli import main; sys.exit(main(sys.argv[1:]))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-c", code, *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def test_the_command_without_prometheus_client(door: str) -> None:
    # Before anything starts (no Jupyter is started for nothing): status 2 and the sentence.
    done = run_cli(["--metrics-port", "9", "--server", door])
    assert done.returncode == 2
    assert "pip install -e '.[metrics]'" in done.stderr
    assert "Traceback" not in done.stderr


async def test_the_command_serves_metrics(fake_backend: FakeBackend, door: str) -> None:
    port, metrics_port = free_port(), free_port()
    command = [sys.executable, "-m", "trio_httpws", "--backend", fake_backend.url,
               "--port", str(port), "--metrics-port", str(metrics_port),
               "--server", door]  # fmt: skip
    banner = await serves_and_counts(command, {}, port, metrics_port, "stdout", b"Press Ctrl-C")
    assert f"Prometheus metrics: http://127.0.0.1:{metrics_port}/metrics" in banner


async def serves_and_counts(
    command: list[str], env: dict[str, str], port: int, metrics_port: int, out: str, ready: bytes
) -> str:
    """Run ``command`` until it writes ``ready`` on ``out``; one GET to its port is counted on
    its metrics port. What it wrote until ready."""
    env = {**os.environ, "PYTHONPATH": str(REPO), **env}
    async with trio.open_nursery() as nursery:
        process = await nursery.start(
            partial(trio.run_process, command, env=env, check=False, **{out: subprocess.PIPE})
        )
        try:
            said = await read_until(getattr(process, out), ready)
            assert (await http_request(f"http://127.0.0.1:{port}", "GET", "/headers")).status == 200
            meter = Meter(f"http://127.0.0.1:{metrics_port}")
            await meter.settle(
                lambda m: (
                    m.value("trio_httpws_requests_total", flow="reverse", status_class="2xx") == 1
                )
            )
        finally:
            process.terminate()
    return said


async def read_until(stream: Any, marker: bytes) -> str:
    data = b""
    with trio.fail_after(30):
        while marker not in data:
            chunk = await stream.receive_some(4096)
            assert chunk, data
            data += chunk
    return data.decode()


async def test_asgi_app_serves_metrics_from_its_lifespan(fake_backend: FakeBackend) -> None:
    port, metrics_port = free_port(), free_port()
    command = [sys.executable, "-m", "hypercorn", "--worker-class", "trio",
               "--bind", f"127.0.0.1:{port}", "trio_httpws:app"]  # fmt: skip
    env = {"TRIO_HTTPWS_BACKEND": fake_backend.url, "TRIO_HTTPWS_METRICS_PORT": str(metrics_port)}
    await serves_and_counts(command, env, port, metrics_port, "stderr", b"Running on")


def test_asgi_app_under_several_hypercorn_workers_refuses_metrics(
    fake_backend: FakeBackend,
) -> None:
    port, metrics_port = free_port(), free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "TRIO_HTTPWS_BACKEND": fake_backend.url,
           "TRIO_HTTPWS_METRICS_PORT": str(metrics_port)}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "hypercorn", "--worker-class", "trio", "--workers", "2",
         "--bind", f"127.0.0.1:{port}", "trio_httpws:app"],
        capture_output=True, text=True, timeout=60, env=env, check=False,
    )  # fmt: skip
    # Every worker refuses to start, before any of them listens for metrics: the server ends.
    assert "hypercorn runs 2 workers here" in done.stderr
    assert "--workers 1" in done.stderr


async def test_asgi_app_without_prometheus_client_fails_its_startup(
    no_prometheus_client: None, fake_backend: FakeBackend
) -> None:
    app = trio_httpws.TrioHttpWsApp(trio_httpws.Config(backend=fake_backend.url, metrics_port=0))
    sent: list[dict[str, Any]] = []
    messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])

    async def receive() -> dict[str, Any]:
        return next(messages)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app({"type": "lifespan"}, receive, send)
    [failed] = sent
    assert failed["type"] == "lifespan.startup.failed"
    assert "pip install -e '.[metrics]'" in failed["message"]
    await app.proxy.aclose()


async def test_asgi_app_serves_metrics_from_startup_to_shutdown(
    fake_backend: FakeBackend,
) -> None:
    app = trio_httpws.TrioHttpWsApp(trio_httpws.Config(backend=fake_backend.url, metrics_port=0))
    to_app, app_receives = trio.open_memory_channel[dict[str, Any]](1)
    app_sends, from_app = trio.open_memory_channel[dict[str, Any]](1)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(app, {"type": "lifespan"}, app_receives.receive, app_sends.send)
        await to_app.send({"type": "lifespan.startup"})
        assert (await from_app.receive())["type"] == "lifespan.startup.complete"
        metrics = f"http://127.0.0.1:{app.proxy.metrics_port}"
        assert (await http_request(metrics, "GET", "/metrics")).status == 200
        await to_app.send({"type": "lifespan.shutdown"})
        assert (await from_app.receive())["type"] == "lifespan.shutdown.complete"
    with pytest.raises(OSError, match="all attempts to connect"):
        await trio.open_tcp_stream("127.0.0.1", app.proxy.metrics_port or 0)


async def test_asgi_app_without_lifespan_says_what_is_wrong(
    fake_backend: FakeBackend, caplog: pytest.LogCaptureFixture
) -> None:
    config = trio_httpws.Config(backend=fake_backend.url, metrics_port=0)
    app = trio_httpws.TrioHttpWsApp(config)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/api", "raw_path": b"/api",
             "query_string": b"", "headers": [], "scheme": "http"}  # fmt: skip
    await app(scope, receive, send)
    await app(scope, receive, send)
    assert sent[0]["status"] == 500
    assert b"runs no lifespan" in sent[1]["body"]
    said = [r for r in caplog.records if "runs no lifespan" in r.getMessage()]
    assert len(said) == 1  # once, not once per request
    await app.proxy.aclose()
