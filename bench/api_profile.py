"""A py-spy profile of the api service under wrk load, one endpoint at a time (issue 15: profile the fixed cost
per request before cutting it).

    flock /tmp/ccsm-bench.lock uv run --frozen --no-sync python bench/api_profile.py /api/users [RESPONSE_CACHE=false]
    ... bench/api_profile.py pair          # the desktop's write pair (bench/api_throughput.py) as the load

Prints the functions with the most samples, inclusive and self, from `py-spy record --format raw` (py-spy must be
on PATH: `pip install py-spy`; it needs ptrace, which root has).
"""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from api_common import ROOT, Server, bench_database, token

SECONDS = int(os.environ.get("BENCH_SECONDS", "8"))


def main() -> None:
    path = sys.argv[1]
    extra = dict(a.split("=", 1) for a in sys.argv[2:])
    with bench_database() as settings, tempfile.TemporaryDirectory() as tmp:
        desktop = path.startswith(("/api/desktop", "pair"))
        auth = f"Authorization: Bearer {token(settings, 1, 1, 'admin', desktop=desktop)}"
        server = Server([str(ROOT / "bench" / "api_server.py")], settings, {"ACCESS_LOG": "true", **extra})
        try:
            url = f"http://127.0.0.1:{server.port}{path}"
            out = Path(tmp) / "profile.txt"
            spy = subprocess.Popen(
                ["py-spy", "record", "-p", str(server.proc.pid), "-d", str(SECONDS), "-r", "200", "-f", "raw",
                 "-o", str(out), "--nonblocking"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            if path == "pair":
                import api_throughput

                desktop = {"Authorization": auth.split(": ", 1)[1]}
                side = api_throughput.Side("ours", f"http://127.0.0.1:{server.port}", desktop, desktop)
                print(f"pairs/s: {api_throughput.write_pairs(side).rps:.0f}")
            else:
                wrk = subprocess.run(
                    ["wrk", "-t2", "-c32", f"-d{SECONDS}s", "-H", auth, url], capture_output=True, text=True, check=True
                )
                print(wrk.stdout.splitlines()[-2])
            spy.wait(SECONDS + 30)
            report(out.read_text())
        finally:
            server.stop()


def report(raw: str, top: int = 45) -> None:
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        frames = [_frame(f) for f in stack.split(";")]
        total += n
        for frame in set(frames):
            inclusive[frame] += n
        own[frames[-1]] += n
    print(f"{total} samples")
    for title, counter in (("inclusive", inclusive), ("self", own)):
        print(f"--- {title}")
        for frame, n in counter.most_common(top):
            print(f"{100 * n / total:5.1f}%  {frame}")


def _frame(text: str) -> str:
    """`function (path/to/file.py:12)` -> `function (file.py)`."""
    name, _, where = text.partition(" (")
    return f"{name} ({where.split(':')[0].rsplit('/', 1)[-1]})"


if __name__ == "__main__":
    main()
