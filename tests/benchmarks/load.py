"""Load from `wrk` (a C load generator, so that the client is not the limit) against servers run
the README's way: gunicorn, 2 workers x 4 threads (gthread). The figures come from a small Lua
done() hook: requests answered, the run's length, p50/p95/p99 latency and errors."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import requests

from tests.benchmarks.conftest import report
from tests.conftest import ROOT

WRK_SECONDS = int(os.environ.get("BENCH_WRK_SECONDS", "15"))
CONNECTIONS = 20
GUNICORN = str(Path(sys.executable).parent / "gunicorn")

DONE_HOOK = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("WRK requests=%d seconds=%.3f p50_ms=%.2f p95_ms=%.2f p99_ms=%.2f errors=%d bytes=%d\\n",
    summary.requests, summary.duration / 1000000, latency:percentile(50) / 1000, latency:percentile(95) / 1000,
    latency:percentile(99) / 1000, e.connect + e.read + e.write + e.status + e.timeout, summary.bytes))
end
"""
# Requests from a file of paths, one a line (signed tracking tokens cannot be made in Lua); each
# of wrk's threads starts at its own place in the list, so that no two ask for the same path at
# the same moment, as two readers of one email never do.
PATHS_FROM_FILE = """
local paths = {}
local n = 0
local threads = 0
setup = function(thread)
  thread:set("id", threads)
  threads = threads + 1
end
init = function(args)
  for line in io.lines(args[1]) do paths[#paths + 1] = line end
  n = id * math.floor(#paths / 2)
end
request = function()
  n = n + 1
  return wrk.format("GET", paths[(n - 1) % #paths + 1])
end
"""


def wrk(
    tmp_path: Path,
    name: str,
    url: str,
    headers: dict[str, str],
    script: str = "",
    args: tuple[str, ...] = (),
    answer_bytes: float | None = None,
) -> dict[str, float]:
    """Run wrk for WRK_SECONDS with 20 connections; report and return its figures. wrk counts
    only answers of 400 and up as errors: with `answer_bytes` (the mean size of the answers
    asked for, headers included: answer_size), the answers must average that size, so that a
    load answered with redirects or short pages cannot pass for the page."""
    lua = tmp_path / f"{name}.lua"
    lua.write_text(script + DONE_HOOK)
    command = ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{WRK_SECONDS}s", "--timeout", "30s", "-s", str(lua)]
    for key, value in headers.items():
        command += ["-H", f"{key}: {value}"]
    command += [url, "--", *args] if args else [url]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    found = {key: float(value) for key, value in re.findall(r"(\w+)=([\d.]+)", output.split("WRK", 1)[1])}
    assert found["errors"] == 0, output
    found["requests_per_s"] = found["requests"] / found["seconds"]
    if answer_bytes is not None:
        # Within a hundredth: a page in place of a redirect or an error is 20 times its size.
        assert found["bytes"] / found["requests"] >= 0.99 * answer_bytes, (found, answer_bytes)
    report(f"{name}_requests", int(found["requests"]))
    report(f"{name}_requests_per_s", f"{found['requests_per_s']:.0f}")
    for percentile in ("p50", "p95", "p99"):
        report(f"{name}_{percentile}_ms", f"{found[f'{percentile}_ms']:.2f}")
    return found


def answer_size(answer: requests.Response) -> int:
    """The bytes of an HTTP/1.1 answer as wrk counts them: status line, headers and body."""
    status_line = f"HTTP/1.1 {answer.status_code} {answer.reason}\r\n"
    return (
        len(status_line)
        + sum(len(f"{key}: {value}\r\n") for key, value in answer.headers.items())
        + 2
        + len(answer.content)
    )


WORKERS = 2
THREADS = 4


class Server:
    """The gunicorn processes serving one app; stopped together."""

    def __init__(self, processes: list[subprocess.Popen]):
        self.processes = processes

    def terminate(self) -> None:
        for process in self.processes:
            process.terminate()

    def wait(self, timeout: float | None = None) -> None:
        for process in self.processes:
            process.wait(timeout=timeout)


def gunicorn(app_name: str, port: int, env: dict[str, str], log) -> Server:
    """The README's settings: 2 workers x 4 threads (gthread), each worker here under a gunicorn
    of its own on the same port (SO_REUSEPORT), so that the kernel spreads wrk's 20 persistent
    connections between the two. Under one gunicorn both workers accept from one socket and
    whichever wakes first takes what is waiting: runs saw 17, 18 and all 20 of the connections
    on one worker, which halves the throughput of a page bound by one worker's interpreter lock
    from one run to the next (in production the proxy in front opens a connection per request,
    and these are spread as they come). The app is imported before the worker forks (--preload),
    so that it serves from the first request."""
    processes = [
        subprocess.Popen(
            [
                GUNICORN,
                "-w",
                "1",
                "-k",
                "gthread",
                "--threads",
                str(THREADS),
                "--preload",
                "--reuse-port",
                "-b",
                f"127.0.0.1:{port}",
                app_name,
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        for _ in range(WORKERS)
    ]
    _wait_for_listeners(port, WORKERS)
    return Server(processes)


def _wait_for_listeners(port: int, count: int, timeout: float = 30) -> None:
    """Until `count` sockets listen on `port` (in /proc/net/tcp, state 0A is LISTEN)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open("/proc/net/tcp") as table:
            rows = [line.split() for line in table.readlines()[1:]]
        if sum(1 for row in rows if int(row[1].split(":")[1], 16) == port and row[3] == "0A") >= count:
            return
        time.sleep(0.1)
    raise TimeoutError(f"{count} listeners on port {port} not up after {timeout} s")


def load_average() -> str:
    """The machine's 1-minute load average: these machines are shared, figures vary with it."""
    return f"{os.getloadavg()[0]:.2f}"
