"""Every read endpoint the clients use, and the desktop's hot write pair, against a baseline in the same run
(issue 15): req/s and p99 of this checkout with its response cache on and off, each ratio to the baseline.

    flock /tmp/ccsm-bench.lock uv run --frozen --no-sync python bench/api_throughput.py     (or: make bench-api)
    OLD_URL=http://127.0.0.1:4100 make bench-api       # against the old Node backend, run by hand beside us
    BASE_REF=<commit> make bench-api                    # against another commit (default: main's HEAD)
    BASE_REF=<commit> BASE_ENV="RESPONSE_CACHE=false" make bench-api    # that commit configured otherwise

The baseline is the old backend at `OLD_URL` when it is set (its tokens come from its own logins:
`OLD_USERNAME`/`OLD_PASSWORD`, default the seed's admin, and the auth code `OLD_AUTHCODE`, default 555, for
`/api/desktop/*`; `OLD_PID`, its process id, adds its CPU time per request to the table); otherwise it is
`BASE_REF` (default `main`), checked out in a temporary `git worktree` with its own locked environment and
started beside us on the same database. Ours runs twice, as `python -m ccsm_api` does, with the production
defaults (access log on): with the response cache, and with `RESPONSE_CACHE=false`. All three are real
processes on a fresh seeded database (the old backend over its own copy of the same seed); each endpoint is
measured on the three in turn (interleaved, so a noisy neighbour hurts all three alike) with `wrk -t2 -c32
-d<BENCH_SECONDS>s --latency`, the issue's set-up, admin token (the desktop token for `/api/desktop/*`). The
write pair is `POST /api/desktop/activities/start-unallocated` then `.../complete` with a fresh uuid, 32
connections each doing pairs back to back for BENCH_SECONDS (a Python client: wrk cannot chain two requests per
connection). The server CPU time per request is read from /proc for every process whose id is known.

The last column is the goal: 3x the old backend for a cached read, 1.5x for an uncached one, 2x for the write pair.
Against a commit it is what that commit still needs, from the issue's figures for the commit it measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from api_common import ROOT, Conn, Server, bench_database, cpu_seconds, now, pct, run, token

from ccsm_core.settings import Settings

SECONDS = int(os.environ.get("BENCH_SECONDS", "4"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "1"))
OLD_URL = os.environ.get("OLD_URL", "").rstrip("/")
BASE_REF = os.environ.get("BASE_REF", "main")
ONLY = os.environ.get("BENCH_ONLY", "")  # a substring: measure only the matching endpoints (when profiling)
EXTRA_ENV = {"ACCESS_LOG": os.environ.get("BENCH_ACCESS_LOG", "true")}
BASE_ENV = dict(item.split("=", 1) for item in os.environ.get("BASE_ENV", "").split() if "=" in item)
PAIR_CONNECTIONS = 32
UV = shutil.which("uv") or str(Path.home() / ".local" / "bin" / "uv")

READ_GOAL, UNCACHED_GOAL, WRITE_GOAL = 3.0, 1.5, 2.0
# (path, desktop token?, ours/old req/s in the run: what "needed from today" was derived from)
ENDPOINTS: list[tuple[str, bool, float]] = [
    ("/api/users", False, 1.83),
    ("/api/users/roles", False, 1.98),
    ("/api/customers", False, 2.09),
    ("/api/lookups/project-form", False, 1.20),
    ("/api/lookups/task-data-definitions", False, 1.85),
    ("/api/lookups/task-categories", False, 3.44),
    ("/api/lookups/item-categories", False, 2.23),
    ("/api/projects", False, 1.64),
    ("/api/projects/1", False, 1.11),
    ("/api/items/status-summary?projectId=1", False, 1.76),
    ("/api/items?projectId=1", False, 2.98),
    ("/api/time-tracking?userId=3&date=2026-02-02", False, 1.48),
    ("/api/time-tracking/metrics?userId=3&dateFrom=2026-02-01&dateTo=2026-02-07", False, 1.27),
    ("/api/desktop/bootstrap", True, 12.07),
    ("/api/desktop/project-task-data?projectId=1&taskId=1", True, 1.60),
    ("/api/desktop/available-tasks?userId=2&projectId=1", True, 2.02),
    ("/api/desktop/project-items?projectId=1&projectTypeId=1", True, 2.06),
    ("/api/desktop/item-tracking-tasks?projectId=1", True, 2.22),
    ("/api/desktop/item-status-rule?projectId=1&taskId=1&applyAfterFinish=0", True, 2.10),
    ("/api/desktop/unfinished-tasks?userId=3", True, 1.63),
    ("/api/desktop/assignments?userId=3", True, 2.03),
]
WRITE_PAIR = "start-unallocated + complete"
WRITE_PAIR_TODAY = 1.0  # not in the table; against a commit the goal is then shown as 2x


@dataclass
class Side:
    name: str
    url: str
    web: dict[str, str]
    desktop: dict[str, str]
    pid: int | None = None


@dataclass
class Figure:
    rps: float
    p99_ms: float
    cpu_us: float = float("nan")  # server CPU time per request (per pair for the write pair): robust to load


def timed(side: Side, measure: Callable[[], Figure], seconds: float) -> Figure:
    """`measure()` with the server's CPU time per request (or pair) over it, when its process is known."""
    before = cpu_seconds(side.pid) if side.pid else 0.0
    figure = measure()
    if side.pid:
        figure.cpu_us = (cpu_seconds(side.pid) - before) * 1e6 / max(1.0, figure.rps * seconds)
    return figure


def wrk(url: str, headers: dict[str, str]) -> Figure:
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
    return Figure(rps, float(m.group(1)) * scale)


def write_pairs(side: Side) -> Figure:
    """Pairs per second (each pair is two requests) and the p99 of one pair, over PAIR_CONNECTIONS connections."""
    port = int(side.url.rsplit(":", 1)[1])
    prefix = "/api/desktop/activities"

    async def go() -> Figure:
        conns = [await Conn.open(port) for _ in range(PAIR_CONNECTIONS)]
        latencies: list[float] = []
        deadline = now() + SECONDS

        async def loop(conn: Conn) -> None:
            while now() < deadline:
                sent = now()
                moment = dt.datetime.now(dt.UTC)
                body = {"uuid": str(uuid.uuid4()), "user_id": 1, "timestamp": moment.isoformat()}
                status, answer = await conn.request("POST", f"{prefix}/start-unallocated", side.desktop, _json(body))
                if status != 200 or b'"success":true' not in answer.replace(b" ", b""):
                    raise AssertionError(f"start: {status} {answer[:200]!r}")
                body["timestamp"] = (moment + dt.timedelta(minutes=3)).isoformat()
                status, answer = await conn.request("POST", f"{prefix}/complete", side.desktop, _json(body))
                if status != 200 or b"ignored" in answer or b"duplicate" in answer:
                    raise AssertionError(f"complete: {status} {answer[:200]!r}")
                latencies.append(now() - sent)

        started = now()
        try:
            await asyncio.gather(*(loop(c) for c in conns))
        finally:
            for c in conns:
                c.close()
        return Figure(len(latencies) / (now() - started), pct(latencies, 99) * 1000)

    result: Figure = run(go())
    return result


def _json(value: object) -> bytes:
    import orjson

    return orjson.dumps(value)


def _login(base: str, path: str, body: dict[str, str]) -> dict[str, str]:
    r = httpx.post(f"{base}{path}", json=body, timeout=10)
    r.raise_for_status()
    return {"Authorization": f"Bearer {r.json()['accessToken']}"}


def old_side() -> Side:
    web = _login(
        OLD_URL,
        "/api/login",
        {"username": os.environ.get("OLD_USERNAME", "admin"), "password": os.environ.get("OLD_PASSWORD", "Admin#2025")},
    )
    desktop = _login(OLD_URL, "/api/desktop/login-authcode", {"code": os.environ.get("OLD_AUTHCODE", "555")})
    pid = int(os.environ["OLD_PID"]) if os.environ.get("OLD_PID") else None
    return Side("old", OLD_URL, web, desktop, pid)


def our_tokens(settings: Settings) -> tuple[dict[str, str], dict[str, str]]:
    web = {"Authorization": f"Bearer {token(settings, 1, 1, 'admin')}"}
    desktop = {"Authorization": f"Bearer {token(settings, 1, 1, 'admin', desktop=True)}"}
    return web, desktop


@contextlib.contextmanager
def base_worktree(ref: str) -> Iterator[tuple[Path, str]]:
    """`ref` checked out (detached) in a temporary worktree of this repository with its own environment from its
    own lock file (uv's cache makes that quick), removed afterwards."""
    commit = subprocess.run(
        ["git", "rev-parse", "--verify", f"{ref}^{{commit}}"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    path = Path(tempfile.mkdtemp(prefix="ccsm-bench-base-"))
    subprocess.run(["git", "worktree", "add", "--detach", "--quiet", str(path), commit], cwd=ROOT, check=True)
    try:
        env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"} | {"UV_PYTHON": "3.11"}
        subprocess.run([UV, "sync", "--frozen", "--quiet"], cwd=path, check=True, env=env)
        yield path, commit
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=ROOT, check=False)


def check(side: Side, path: str, desktop: bool) -> None:
    r = httpx.get(f"{side.url}{path}", headers=side.desktop if desktop else side.web, timeout=10)
    assert r.status_code == 200, (side.name, path, r.status_code, r.text[:200])


def measure(sides: list[Side]) -> dict[str, dict[str, Figure]]:
    """Per endpoint, each side in turn; with ROUNDS > 1 the best round per side (the machine is shared)."""
    results: dict[str, dict[str, Figure]] = {}
    chosen = [e for e in ENDPOINTS if ONLY in e[0]]
    for path, desktop, _ in chosen:
        for side in sides:
            check(side, path, desktop)
    for _ in range(ROUNDS):
        for path, desktop, _ in chosen:
            row = results.setdefault(path, {})
            for side in sides:
                headers = side.desktop if desktop else side.web
                got = timed(side, functools.partial(wrk, f"{side.url}{path}", headers), SECONDS)
                if side.name not in row or got.rps > row[side.name].rps:
                    row[side.name] = got
        if ONLY in WRITE_PAIR:
            row = results.setdefault(WRITE_PAIR, {})
            for side in sides:
                got = timed(side, functools.partial(write_pairs, side), SECONDS)
                if side.name not in row or got.rps > row[side.name].rps:
                    row[side.name] = got
    return results


def report(results: dict[str, dict[str, Figure]], baseline: str) -> None:
    against_old = bool(OLD_URL)
    print(f"wrk -t2 -c32 -d{SECONDS}s per read endpoint, interleaved, best of {ROUNDS}; baseline: {baseline}")
    print(f"load average before/after: {_load()}")
    head = (
        f"{'endpoint':<72} {'base r/s':>8} {'p99':>6} {'ours r/s':>8} {'p99':>6} {'ratio':>6} "
        f"{'nocache':>8} {'p99':>6} {'ratio':>6}  {'needed':>14}  {'CPU us/req: base':>16} {'ours':>5} {'nocache':>7}"
    )
    print(head)
    today = {p: r for p, _, r in ENDPOINTS} | {WRITE_PAIR: WRITE_PAIR_TODAY}
    for path, row in results.items():
        base, ours, off = row["base"], row["ours"], row["nocache"]
        write = path == WRITE_PAIR
        goal, goal_off = (WRITE_GOAL, WRITE_GOAL) if write else (READ_GOAL, UNCACHED_GOAL)
        if against_old:
            needed = f"{goal:.2f}x / {goal_off:.2f}x"
        else:
            needed = f"{goal / today[path]:.2f}x / {goal_off / today[path]:.2f}x"
        flag = "" if ours.p99_ms <= base.p99_ms and off.p99_ms <= base.p99_ms else "  (p99 above base)"
        print(
            f"{path:<72} {base.rps:>8.0f} {base.p99_ms:>6.1f} {ours.rps:>8.0f} {ours.p99_ms:>6.1f} "
            f"{ours.rps / base.rps:>5.2f}x {off.rps:>8.0f} {off.p99_ms:>6.1f} {off.rps / base.rps:>5.2f}x  "
            f"{needed:>14}  {base.cpu_us:>16.0f} {ours.cpu_us:>5.0f} {off.cpu_us:>7.0f}{flag}"
        )
    print("needed: cached / uncached (RESPONSE_CACHE=false) ratio to the baseline; write pair: pairs/s, p99 per pair")
    print("CPU us/req: the server process's CPU time per request (per pair), the figure a loaded machine moves least")
    if not against_old:
        print("(against a commit: the goal divided by the issue's ours/old figure for the commit it measured)")


_loads: list[str] = []


def _load() -> str:
    return " -> ".join(_loads)


def _sample_load() -> None:
    _loads.append(" ".join(Path("/proc/loadavg").read_text().split()[:3]))


def main() -> None:
    _sample_load()
    with bench_database() as settings, contextlib.ExitStack() as stack:
        web, desktop = our_tokens(settings)
        server = str(ROOT / "bench" / "api_server.py")
        ours = Server([server], settings, EXTRA_ENV)
        stack.callback(ours.stop)
        off = Server([server], settings, {**EXTRA_ENV, "RESPONSE_CACHE": "false"})
        stack.callback(off.stop)
        if OLD_URL:
            base = old_side()
            baseline = f"the old backend at {OLD_URL}"
        else:
            root, commit = stack.enter_context(base_worktree(BASE_REF))
            base_python = str(root / ".venv" / "bin" / "python")
            base_env = {**EXTRA_ENV, **BASE_ENV}
            proc = Server([str(root / "bench" / "api_server.py")], settings, base_env, root=root, python=base_python)
            stack.callback(proc.stop)
            base = Side("base", f"http://127.0.0.1:{proc.port}", web, desktop, proc.proc.pid)
            baseline = f"{BASE_REF} at {commit[:12]} (git worktree, port {proc.port}, same database) {BASE_ENV or ''}"
        sides = [
            Side("base", base.url, base.web, base.desktop, base.pid),
            Side("ours", f"http://127.0.0.1:{ours.port}", web, desktop, ours.proc.pid),
            Side("nocache", f"http://127.0.0.1:{off.port}", web, desktop, off.proc.pid),
        ]
        results = measure(sides)
    _sample_load()
    report(results, baseline)


if __name__ == "__main__":
    main()
