"""Throughput and p99 of three hot GETs with a valid token, each against a bare Starlette endpoint returning the
same bytes, in the same run (the ratio is the cost of our request path: edge middleware, guard, queries/cache,
JSON encoding).

    flock /tmp/ccsm-bench.lock uv run --frozen --no-sync python bench/api_throughput.py     (or: make bench-api)

Both servers are real processes under the same uvicorn settings (uvloop, httptools, no access log), one process
each, on a fresh seeded database; the load generator is `wrk -t2 -c32 -d<BENCH_SECONDS>s --latency` on the same
machine (apt-get install wrk), the issue's reference set-up. The endpoints and their old-backend figures on this
machine class (issue 5): task-categories 1,560 req/s, items 1,490, bootstrap 610; the target is 2x those.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from api_common import Server, bench_database, token

SECONDS = int(os.environ.get("BENCH_SECONDS", "8"))
# The service's production defaults (LOG_LEVEL=info, ACCESS_LOG=true: one JSON line per request) unless overridden.
EXTRA_ENV = {"ACCESS_LOG": os.environ.get("BENCH_ACCESS_LOG", "true")}
ENDPOINTS = [
    ("/api/lookups/task-categories", 1560),
    ("/api/items?projectId=1", 1490),
    ("/api/desktop/bootstrap", 610),
]


def wrk(url: str, headers: dict[str, str]) -> tuple[float, float]:
    args = ["wrk", "-t2", "-c32", f"-d{SECONDS}s", "--latency"]
    for k, v in headers.items():
        args += ["-H", f"{k}: {v}"]
    out = subprocess.run([*args, url], capture_output=True, text=True, check=True, timeout=SECONDS + 30).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    m = re.search(r"\s99%\s+([\d.]+)(us|ms|s)", out)
    assert m is not None, out
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if non2xx:
        raise AssertionError(f"{url}: {non2xx.group(1)} failed responses")
    return rps, float(m.group(1)) * scale


def main() -> None:
    with bench_database() as settings, tempfile.TemporaryDirectory() as tmp:
        headers = {"Authorization": f"Bearer {token(settings, 3, 2, 'pnair')}"}
        ours = Server([str(Path(__file__).resolve().parent / "api_server.py")], settings, EXTRA_ENV)
        bare = None
        try:
            specs = []
            for i, (path, _) in enumerate(ENDPOINTS):
                r = httpx.get(f"http://127.0.0.1:{ours.port}{path}", headers=headers, timeout=10)
                assert r.status_code == 200, (path, r.status_code, r.text[:200])
                file = Path(tmp) / f"body{i}.json"
                file.write_bytes(r.content)
                specs.append(f"{path.split('?')[0]}={file}")
            bare = Server([str(Path(__file__).resolve().parent / "api_bare.py"), *specs], settings)
            rows = []
            for path, node in ENDPOINTS:
                o_rps, o_p99 = wrk(f"http://127.0.0.1:{ours.port}{path}", headers)
                b_rps, b_p99 = wrk(f"http://127.0.0.1:{bare.port}{path}", headers)
                rows.append((path, o_rps, o_p99, b_rps, b_p99, node))
        finally:
            ours.stop()
            if bare is not None:
                bare.stop()
    print(f"wrk -t2 -c32 -d{SECONDS}s, valid employee token; bare = Starlette returning the same bytes (same run)")
    print(f"{'endpoint':<30} {'ours r/s':>9} {'p99 ms':>7} {'bare r/s':>9} {'p99 ms':>7} {'ours/bare':>9} "
          f"{'Node r/s':>8} {'ours/Node':>9}")  # fmt: skip
    for path, o_rps, o_p99, b_rps, b_p99, node in rows:
        print(
            f"{path:<30} {o_rps:>9.0f} {o_p99:>7.1f} {b_rps:>9.0f} {b_p99:>7.1f} {o_rps / b_rps:>9.2f} "
            f"{node:>8} {o_rps / node:>8.2f}x"
        )


if __name__ == "__main__":
    main()
