"""What counting for the metrics costs the proxy: a py-spy profile of the door under small GETs.

    python bench/profile_counting.py --original-python .nox/bench-original/bin/python

Starts the benchmark's Notebook 6 backend and the ``trio-httpws`` command on its own door with
``--metrics-port`` (scraped every second, as ``run.py --metrics`` does), records the door's
process with ``py-spy record -f raw`` while one keep-alive socket sends ``GET /api`` back to
back, then sums the samples spent counting:

- every sample with a frame in ``trio_httpws/_stats.py`` (the counting functions);
- every sample whose innermost trio_httpws frame is on a line that counts in place (an
  increment of a ``stats``/``tally``/``payload`` field, or a ``perf_counter`` read of the
  backend pool's timings), found by reading the sources;
- apart: the scrapes (frames in ``_metrics.py``/``_metrics_export.py``/prometheus_client).

Prints the samples, the share of the proxy's CPU each takes, and the requests served.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import h11
import trio
from bench_procs import REPO, _spawn, start_notebook

from trio_httpws._jupyter import free_port

PACKAGE = REPO / "trio_httpws"
#: Source lines that count in place (no function call to show in a profile).
COUNTING_LINE = re.compile(
    r"stats\b|tally|\.payload \+=|payload_size\(|\.received \+=|perf_counter"
)
#: Files whose pool timing reads are all the metrics' own.
TIMING_FILES = ("_backend.py",)
FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*):(?P<line>\d+)\)$")


def counting_lines() -> set[tuple[str, int]]:
    """(file name, line number) of every line of the package that counts in place."""
    found = set()
    for path in PACKAGE.glob("*.py"):
        for number, text in enumerate(path.read_text().splitlines(), 1):
            code = text.split("#", 1)[0]
            if "perf_counter" in code and path.name not in TIMING_FILES:
                continue  # elsewhere perf_counter times the access line, not the metrics
            if COUNTING_LINE.search(code) and not code.lstrip().startswith(("def ", "from ")):
                found.add((path.name, number))
    return found


def classify(stack: list[str], lines: set[tuple[str, int]]) -> str:
    """ "scrape", "counting" or "other" for one sampled stack (outermost frame first)."""
    ours: tuple[str, int] | None = None
    for frame in stack:
        match = FRAME.match(frame.strip())
        if match is None:
            continue
        file = match["file"]
        name = Path(file).name
        if "prometheus_client" in file or name in ("_metrics.py", "_metrics_export.py"):
            return "scrape"
        if "trio_httpws" in file:
            if name == "_stats.py":
                return "counting"
            ours = (name, int(match["line"]))
    return "counting" if ours in lines else "other"


def summarize(raw: Path, requests: int, rate: int) -> str:
    lines = counting_lines()
    samples: Counter[str] = Counter()
    for text in raw.read_text().splitlines():
        stack, _, count = text.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        samples[classify(frames, lines)] += int(count)
    total = sum(samples.values())
    if not total:
        return "no samples"

    def share(kind: str) -> str:
        per_request = samples[kind] / rate / requests * 1e6
        return (
            f"{samples[kind]} samples ({100 * samples[kind] / total:.2f}% of the proxy's CPU, "
            f"{per_request:.1f} us per request)"
        )

    return "\n".join(
        [
            f"requests served: {requests}; samples of the proxy process: {total} at {rate} Hz "
            f"({total / rate / requests * 1e6:.0f} us of the proxy's CPU per request, py-spy's "
            "pauses included)",
            f"counting: {share('counting')}",
            f"scrapes (exposition, once a second): {share('scrape')}",
            f"everything else: {share('other')}",
        ]
    )


async def small_gets(base: str, metrics: str, seconds: float) -> int:
    """GET /api back to back on one keep-alive socket for ``seconds``; scrape every second."""
    host, _, port = base.removeprefix("http://").rpartition(":")
    served = 0

    async def scrape() -> None:
        mhost, _, mport = metrics.removeprefix("http://").rpartition(":")
        request = f"GET /metrics HTTP/1.1\r\nHost: {mhost}\r\nConnection: close\r\n\r\n"
        while True:
            async with await trio.open_tcp_stream(mhost, int(mport)) as stream:
                await stream.send_all(request.encode())
                while await stream.receive_some(65536):
                    pass
            await trio.sleep(1)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(scrape)
        async with await trio.open_tcp_stream(host, int(port)) as stream:
            conn = h11.Connection(h11.CLIENT)
            deadline = trio.current_time() + seconds
            while trio.current_time() < deadline:
                data = conn.send(h11.Request(method="GET", target="/api", headers=[("Host", host)]))
                await stream.send_all((data or b"") + (conn.send(h11.EndOfMessage()) or b""))
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        conn.receive_data(await stream.receive_some(65536))
                    elif isinstance(event, h11.Response) and event.status_code != 200:
                        raise RuntimeError(f"GET /api: {event.status_code}")
                    elif isinstance(event, h11.EndOfMessage):
                        break
                conn.start_next_cycle()
                served += 1
        nursery.cancel_scope.cancel()
    return served


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--original-python",
        default=os.environ.get(
            "BENCH_ORIGINAL_PYTHON", str(REPO / ".nox/bench-original/bin/python")
        ),
    )
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of small GETs")
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument(
        "--py-spy", default=shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    )
    parser.add_argument("--keep", type=Path, help="also copy the raw profile here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="trio-httpws-profile-") as tmp:
        workdir = Path(tmp)
        notebook = start_notebook(os.path.abspath(args.original_python), "unused", workdir)
        port, metrics_port = free_port(), free_port()
        command = [sys.executable, "-m", "trio_httpws", "--backend", notebook.base,
                   "--host", "127.0.0.1", "--port", str(port), "--allow-origin", "*",
                   "--metrics-port", str(metrics_port)]  # fmt: skip
        door = _spawn("door", command, dict(os.environ), workdir, f"http://127.0.0.1:{port}")
        raw = workdir / "profile.txt"
        try:
            door.wait_ready(None)
            spy = subprocess.Popen(
                [args.py_spy, "record", "-f", "raw", "-r", str(args.rate), "-o", str(raw),
                 "--pid", str(door.pid)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            time.sleep(2)  # py-spy attaches
            served = trio.run(
                small_gets, door.base, f"http://127.0.0.1:{metrics_port}", args.duration
            )
            spy.send_signal(2)  # SIGINT: py-spy writes the profile and exits
            spy.wait(timeout=60)
        finally:
            door.stop()
            notebook.stop()
        if args.keep:
            shutil.copy(raw, args.keep)
        print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        print(summarize(raw, served, args.rate))
    return 0


if __name__ == "__main__":
    sys.exit(main())
