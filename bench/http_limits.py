"""The security review's header attacks on one service process reached without the edge (issue 12 item 6): what
each answer is, how long each connection is held, and the process's RSS (from /proc) before, at its peak and after.

    flock /tmp/ccsm-bench.lock uv run python bench/http_limits.py [--service ccsm_api] [--observe 60]

Attacks: one request with a 64 MiB header; eight at once; 3,000 slowloris connections (a header line every
second); 200 connections that send a partial head and then nothing. A connection still open after `--observe`
seconds is reported as held (the server would have kept it longer). The service runs with its default limits
(HEADER_LIMIT_BYTES, HEADER_TIMEOUT_MS, MAX_CONNECTIONS) on loopback; /health is the target, so it needs no
database. To measure another checkout (the code before a change), put its packages first on PYTHONPATH.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.harness import LineReader, free_port, make_settings  # noqa: E402
from tests.raw_http import Held, exchange, hold_many, parse  # noqa: E402

MIB = 1024 * 1024
HEAD = b"GET /health HTTP/1.1\r\nHost: bench.test\r\n"


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(field)


class Measured:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
        self.before = status_kib(pid, "VmRSS")

    def line(self) -> str:
        peak, after = status_kib(self.pid, "VmHWM"), status_kib(self.pid, "VmRSS")
        return f"RSS {self.before / 1024:.0f} MiB before, {peak / 1024:.0f} peak, {after / 1024:.0f} after"


def answer_of(held: Held) -> str:
    if held.still_open:
        return "still open"
    try:
        return str(parse(held.answer).status)
    except ValueError:
        return "closed without an answer"


def summary(results: list[Held]) -> str:
    answers = Counter(answer_of(h) for h in results)
    held = [h.held_s for h in results]
    return f"answers {dict(answers)}; held {min(held):.1f}-{max(held):.1f} s"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--service", default="ccsm_api")
    parser.add_argument("--observe", type=float, default=60.0, help="seconds before a held connection counts as held")
    args = parser.parse_args()

    settings = make_settings(log_level="warning")
    port = free_port()
    env = {**os.environ, **settings.to_env(), "PORT": str(port), "HOST": "127.0.0.1", "LOG_LEVEL": "info"}
    proc = subprocess.Popen(
        [sys.executable, "-m", args.service],
        cwd=str(ROOT / "tests"),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output = LineReader(proc, args.service)
    address = ("127.0.0.1", port)
    try:
        output.wait_for("Uvicorn running on", 60)
        load = os.getloadavg()
        print(f"{args.service} on :{port}; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True)
        big = HEAD + b"X-Big: " + b"a" * (64 * MIB) + b"\r\n\r\n"

        m = Measured(proc.pid)
        started = time.monotonic()
        one = exchange(address, big, timeout=120)
        print(f"one 64 MiB header: {one.status} in {time.monotonic() - started:.2f} s; {m.line()}", flush=True)

        m = Measured(proc.pid)

        def timed() -> tuple[int, float]:
            t = time.monotonic()
            return exchange(address, big, timeout=120).status, time.monotonic() - t

        with ThreadPoolExecutor(8) as pool:
            eight = list(pool.map(lambda _: timed(), range(8)))
        print(
            f"eight 64 MiB headers at once: {dict(Counter(s for s, _ in eight))}, "
            f"up to {max(t for _, t in eight):.2f} s each; {m.line()}",
            flush=True,
        )

        m = Measured(proc.pid)
        slow = hold_many(port, 3000, HEAD, b"X-Drip: 1\r\n", args.observe)
        print(f"3,000 slowloris connections: {summary(slow)}; {m.line()}", flush=True)

        m = Measured(proc.pid)
        partial = hold_many(port, 200, HEAD + b"X-Partial: abc", None, args.observe)
        print(f"200 partial heads: {summary(partial)}; {m.line()}", flush=True)
        after = exchange(address, HEAD + b"Connection: close\r\n\r\n")
        print(f"/health afterwards: {after.status}", flush=True)
    finally:
        proc.terminate()
        proc.wait(60)
        output.close()


if __name__ == "__main__":
    main()
