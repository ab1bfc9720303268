"""The compose stack against real containers (issue 13), in the order a user meets it: `make up`, the smoke checks
through the edge, `make run` beside it, Redis fan-out across gateway containers, a rolling replacement of the api
under load, a database outage, `docker compose stop` of every service, `make down`. Every request goes through
the edge's port on 127.0.0.1 (or `docker exec`); every wait polls a state with a deadline."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any, TypeVar

import httpx
import pytest
from websockets.sync.client import ClientConnection, connect

from deploy import engine
from deploy.compose import duration_s
from deploy.topology import service_deploy
from tests.compose.conftest import ADMIN, AUTHCODE, PROJECT, Drill
from tests.harness import ROOT, close_code, drop_run_data, free_port, make_settings

T = TypeVar("T")
APP_SERVICES = ("auth", "ws-gateway", "api", "api-b")
LONG_RUNNING = ("mysql", "redis", *APP_SERVICES, "edge")
GATEWAY_PORT = service_deploy("ws-gateway").port
LOAD_RATE_PER_S = 50


def poll(fn: Callable[[], T | None], within_s: float, what: str, every_s: float = 0.2) -> T:
    """Call `fn` until it returns something other than None; a deadline, never a fixed wait."""
    deadline = time.monotonic() + within_s
    while True:
        value = fn()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {within_s:.0f} s")
        time.sleep(every_s)  # the polling interval, bounded by the deadline


def ps(drill: Drill) -> dict[str, list[dict[str, Any]]]:
    """Service -> its containers (`docker inspect`), stopped ones included."""
    ids = drill.stack.run("ps", "--all", "--quiet", capture=True).stdout.split()
    by_service: dict[str, list[dict[str, Any]]] = {}
    for c in engine.inspect(*ids):
        by_service.setdefault(c["Config"]["Labels"]["com.docker.compose.service"], []).append(c)
    return by_service


def login(client: httpx.Client) -> dict[str, str]:
    r = client.post("/api/login", json=ADMIN)
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['accessToken']}"}


def ws_url(drill: Drill) -> str:
    return drill.base_url.replace("http://", "ws://", 1) + "/ws/desktop"


def open_socket(drill: Drill, headers: dict[str, str], sockets: ExitStack) -> ClientConnection:
    """A desktop's socket through the edge, closed with `sockets`; returned once the gateway said `connected`."""
    ws = sockets.enter_context(connect(ws_url(drill), additional_headers=headers, open_timeout=10))
    frame = json.loads(ws.recv(timeout=10))
    assert frame["type"] == "connected", frame
    return ws


def next_db_changed(ws: ClientConnection, within_s: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + within_s
    while True:
        frame: dict[str, Any] = json.loads(ws.recv(timeout=max(0.01, deadline - time.monotonic())))
        if frame.get("type") == "db-changed":
            return frame


def customer(name: str) -> dict[str, str]:
    return {
        "name": name,
        "state": "NY",
        "county": "Kings",
        "contact_name": "Dee Rill",
        "contact_email": "dee@example.com",
        "contact_phone": "555-0100",
    }


def customer_names(client: httpx.Client, headers: dict[str, str]) -> set[str]:
    r = client.get("/api/customers", headers=headers)
    assert r.status_code == 200, r.text
    return {row["name"] for row in r.json()}


def gateway_sockets(drill: Drill, container_id: str) -> int:
    """Connections from the edge established on the gateway's port inside one container (its /proc/net/tcp, read
    with `docker exec`): the sockets the edge proxies there, not the health check's own."""
    edge = socket.inet_aton(drill.env["BACKEND_NETWORK"] + ".10")[::-1].hex().upper()
    script = (
        "n = 0\n"
        "for line in open('/proc/net/tcp').read().splitlines()[1:]:\n"
        "    f = line.split()\n"
        f"    n += f[1].endswith(':{GATEWAY_PORT:04X}') and f[2].startswith('{edge}:') and f[3] == '01'\n"
        "print(n)\n"
    )
    return int(engine.docker("exec", container_id, "python", "-c", script).stdout)


def ms(values: list[float]) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"p50 {statistics.median(ordered) * 1000:.0f} / p99 {p99 * 1000:.0f} / max {ordered[-1] * 1000:.0f} ms"


@pytest.fixture
def client(drill: Drill) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=drill.base_url, timeout=30) as c:
        yield c


# --- make up ---------------------------------------------------------------------------------------------------


def test_make_up_starts_every_service_healthy_after_the_migrate_and_seed_jobs(drill: Drill) -> None:
    services = ps(drill)
    for name in LONG_RUNNING:
        (container,) = services[name]
        assert container["State"]["Running"], name
        assert container["State"]["Health"]["Status"] == "healthy", name
    for job in ("migrate", "seed"):
        (container,) = services[job]
        assert (container["State"]["Status"], container["State"]["ExitCode"]) == ("exited", 0), job
    # The edge alone publishes a port, on 127.0.0.1 only.
    published = {
        name: c["HostConfig"]["PortBindings"]
        for name, cs in services.items()
        for c in cs
        if c["HostConfig"]["PortBindings"]
    }
    assert list(published) == ["edge"]
    assert [b["HostIp"] for bindings in published["edge"].values() for b in bindings] == ["127.0.0.1"]
    # The gateway's descriptor limit is the compose default, which this engine grants.
    (gateway,) = services["ws-gateway"]
    limits = engine.docker(
        "exec", gateway["Id"], "python", "-c", "import resource; print(*resource.getrlimit(resource.RLIMIT_NOFILE))"
    ).stdout.split()
    assert limits == ["8192", "8192"]
    images = sorted({c["Config"]["Image"] for cs in services.values() for c in cs})
    drill.report.check("make up: healthy, jobs exited 0", services=len(services), images=" ".join(images))


def test_the_smoke_checks_pass_through_the_edge(drill: Drill) -> None:
    smoke = drill.make(
        "smoke",
        f"BASE_URL={drill.base_url}",
        SMOKE_USERNAME=ADMIN["username"],
        SMOKE_PASSWORD=ADMIN["password"],
        SMOKE_AUTHCODE=AUTHCODE,
    )
    assert smoke.returncode == 0, smoke.stdout + smoke.stderr
    assert "smoke: 9 passed, 0 failed" in smoke.stdout
    slowest = max(smoke.stdout.splitlines()[:-1], key=lambda line: float(line.split(" ms")[0].split()[-1]))
    drill.report.check("make smoke through the edge", result="9/9", slowest=" ".join(slowest.split()[1:-1]))


def test_a_second_make_up_that_recreates_the_services_keeps_the_edge_routing_to_them(drill: Drill) -> None:
    """A changed setting (as after editing code: a new image) recreates the services under a running edge, at
    new addresses; `make up` reloads the edge (before, the next login through it was a 502)."""
    (edge_before,) = drill.stack.container_ids("edge")
    (auth_before,) = drill.stack.container_ids("auth")
    workers_before = drill.stack.edge_workers()
    up = drill.make("up", LOG_LEVEL="warning")
    assert up.returncode == 0, up.stdout[-2000:] + up.stderr[-2000:]
    assert drill.stack.container_ids("edge") == [edge_before]
    assert drill.stack.container_ids("auth") != [auth_before]
    # Docker may give a new container a freed address back, so routing alone does not show it: the edge's
    # workers were replaced, i.e. it loaded its configuration (and resolved the names) again.
    assert not drill.stack.edge_workers() & workers_before
    with httpx.Client(base_url=drill.base_url, timeout=30) as c, ExitStack() as sockets:
        headers = login(c)
        open_socket(drill, headers, sockets)
    drill.report.check("make up again, services recreated", edge="kept", login="200", ws="connected")


def test_make_run_still_works_after_make_up(drill: Drill) -> None:
    """`make up` writes nothing `make run` reads: the dev server on the machine's MariaDB gets ready and logs in
    (the old `.env` from `make up` made readiness fail with "Access denied" and login answer 500)."""
    dotenv = ROOT / ".env"
    assert (dotenv.read_bytes() if dotenv.exists() else None) == drill.dotenv_before
    run_id = uuid.uuid4().hex[:8]
    port = free_port()
    settings = make_settings(db_name=f"ccsm_drill_{run_id}", redis_prefix=f"ccsm-drill-{run_id}:")
    env = {**drill.env, "PORT": str(port), "DB_NAME": settings.db_name, "REDIS_PREFIX": settings.redis_prefix}
    log = drill.workdir / f"make-run-{run_id}.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            ["make", "--no-print-directory", "run"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as dev:

            def ready() -> httpx.Response | None:
                if proc.poll() is not None:
                    raise AssertionError(f"make run exited {proc.returncode}: {log.read_text()[-3000:]}")
                try:
                    return dev.get("/ready")
                except httpx.TransportError:
                    return None

            started = time.monotonic()
            r = poll(ready, 120, "make run answering")
            answered_s = time.monotonic() - started
            assert (r.status_code, r.json()) == (200, {"status": "ready"})
            assert login(dev)["Authorization"].startswith("Bearer ")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the process group this test started (make, uv, the dev server)
        proc.wait(40)
        drop_run_data(settings)
    drill.report.check("make run after make up", ready="200", login="200", answered_in=f"{answered_s:.1f} s")


# --- Redis fan-out across gateway containers ---------------------------------------------------------------------


def test_a_write_through_the_edge_reaches_sockets_on_every_gateway_container(
    drill: Drill, client: httpx.Client
) -> None:
    headers = login(client)
    stack = drill.stack
    (first,) = stack.container_ids("ws-gateway")
    with ExitStack() as sockets:
        ws = open_socket(drill, headers, sockets)
        sent = time.monotonic()
        r = client.post("/api/customers", json=customer(f"fanout-{uuid.uuid4().hex[:8]}"), headers=headers)
        assert r.status_code == 201
        frame = next_db_changed(ws)
        one_s = time.monotonic() - sent
        assert frame["type"] == "db-changed"

    # A second gateway container; the edge reloads so its upstream name resolves to both.
    (second,) = set(stack.scale("ws-gateway", 2)) - {first}
    try:
        with ExitStack() as sockets:
            held: list[ClientConnection] = []

            def both_hold_one() -> bool | None:
                held.append(open_socket(drill, headers, sockets))
                counts = [gateway_sockets(drill, first), gateway_sockets(drill, second)]
                return True if min(counts) >= 1 else None if len(held) < 20 else False

            assert poll(both_hold_one, 60, "a socket on each gateway container", every_s=0) is True
            per_container = [gateway_sockets(drill, first), gateway_sockets(drill, second)]
            assert sum(per_container) == len(held)
            sent = time.monotonic()
            r = client.post("/api/customers", json=customer(f"fanout-{uuid.uuid4().hex[:8]}"), headers=headers)
            assert r.status_code == 201
            latencies = []
            for ws in held:
                assert next_db_changed(ws)["type"] == "db-changed"
                latencies.append(time.monotonic() - sent)
    finally:
        engine.docker("stop", second, timeout=60)
        engine.docker("rm", second)
        stack.reload_edge()
    drill.report.check(
        "db-changed across 2 gateway containers",
        one_gateway=f"{one_s * 1000:.0f} ms",
        sockets_per_container="/".join(map(str, per_container)),
        all_received=ms(latencies),
    )


# --- rolling replacement of the api ------------------------------------------------------------------------------


def test_a_rolling_replacement_of_the_api_under_load_fails_no_request(drill: Drill, client: httpx.Client) -> None:
    headers = login(client)
    tag = uuid.uuid4().hex[:8]
    roll_done = threading.Event()
    roll_result: list[Any] = []

    def roll() -> None:
        try:
            roll_result.append(drill.stack.roll("api", log=lambda _line: None))
        except BaseException as exc:  # reported by the test, not lost on the thread
            roll_result.append(exc)
        finally:
            roll_done.set()

    async def load() -> tuple[list[tuple[int, str, float, float]], set[str]]:
        """(status, what failed, latency, sent at) per request, and the names of the acknowledged writes."""
        results: list[tuple[int, str, float, float]] = []
        acked: set[str] = set()

        async def one(c: httpx.AsyncClient, i: int) -> None:
            started = time.monotonic()
            what = ("POST /api/customers", "GET /api/customers", "GET /api/lookups/task-categories")[i % 3]
            try:
                if i % 3 == 0:
                    name = f"roll-{tag}-{i}"
                    r = await c.post("/api/customers", json=customer(name), headers=headers)
                    if r.status_code == 201:
                        acked.add(name)
                elif i % 3 == 1:
                    r = await c.get("/api/customers", headers=headers)
                else:
                    r = await c.get("/api/lookups/task-categories", headers=headers)
                detail = f"{what}: {r.text[:80]}" if r.status_code >= 300 else ""
                results.append((r.status_code, detail, time.monotonic() - started, started))
            except httpx.HTTPError as exc:
                results.append((0, f"{what}: {exc!r}", time.monotonic() - started, started))

        limits = httpx.Limits(max_connections=64, max_keepalive_connections=32)
        async with httpx.AsyncClient(base_url=drill.base_url, timeout=30, limits=limits) as c:
            tasks = []
            i = 0
            started = time.monotonic()
            thread: threading.Thread | None = None
            after_roll: float | None = None
            while True:
                elapsed = time.monotonic() - started
                if thread is None and elapsed >= 2:  # two seconds of load before the replacement starts
                    thread = threading.Thread(target=roll, name="roll")
                    thread.start()
                if roll_done.is_set() and after_roll is None:
                    after_roll = elapsed
                if after_roll is not None and elapsed - after_roll >= 2:  # and two after it
                    break
                tasks.append(asyncio.create_task(one(c, i)))
                i += 1
                # The load's pacing (a schedule, so slow iterations do not lower the rate), not synchronisation.
                await asyncio.sleep(max(0.0, started + i / LOAD_RATE_PER_S - time.monotonic()))
            await asyncio.gather(*tasks)
            assert thread is not None
            thread.join()
        return results, acked

    load_started = time.monotonic()
    results, acked = asyncio.run(load())
    load_s = time.monotonic() - load_started
    (outcome,) = roll_result
    if isinstance(outcome, BaseException):
        raise outcome
    failed = [(status, detail, sent) for status, detail, _, sent in results if not 200 <= status < 300]
    timeline = sorted((at, f"{r['service']} {event}") for r in outcome for event, at in r["timeline"].items())
    assert failed == [], (
        Counter((status, detail) for status, detail, _ in failed).most_common(5),
        [f"{sent:.2f}" for *_, sent in failed[:20]],
        [f"{at:.2f} {event}" for at, event in timeline],
    )
    assert [r["service"] for r in outcome] == ["api", "api-b"]
    assert [r["old_exit_code"] for r in outcome] == [0, 0]
    now = [cid for name in ("api", "api-b") for cid in drill.stack.container_ids(name)]
    assert [cid[:12] for cid in now] == [r["new"] for r in outcome]  # both replaced
    assert acked <= customer_names(client, headers)  # every acknowledged write is there
    drill.report.check(
        "rolling replacement of api under load",
        requests=len(results),
        failed=len(failed),
        rate=f"{len(results) / load_s:.0f}/s",
        latency=ms([latency for _, _, latency, _ in results]),
        drained=" / ".join(f"{r['old_drain_s']} s (exit {r['old_exit_code']})" for r in outcome),
        new_healthy=" / ".join(f"{r['new_healthy_s']} s" for r in outcome),
        roll=f"{sum(r['total_s'] for r in outcome):.1f} s",
    )


# --- the database container stopped and started ------------------------------------------------------------------


def test_the_database_stopped_gives_503s_and_started_recovers_without_a_restart(
    drill: Drill, client: httpx.Client
) -> None:
    headers = login(client)
    stack = drill.stack

    def app_starts() -> dict[str, tuple[str, int]]:
        return {
            name: (c["State"]["StartedAt"], c["RestartCount"])
            for name, cs in ps(drill).items()
            if name in APP_SERVICES
            for c in cs
        }

    before = app_starts()
    tag = uuid.uuid4().hex[:8]
    acked = {f"db-{tag}-before-{i}" for i in range(5)}
    for name in sorted(acked):
        assert client.post("/api/customers", json=customer(name), headers=headers).status_code == 201

    stopped_at = time.monotonic()
    stack.run("stop", "mysql", capture=True)
    stop_s = time.monotonic() - stopped_at

    def ready_status(wanted: int) -> Callable[[], httpx.Response | None]:
        def probe() -> httpx.Response | None:
            r = client.get("/ready")
            return r if r.status_code == wanted else None

        return probe

    r = poll(ready_status(503), 30, "/ready 503 with the database stopped")
    unready_s = time.monotonic() - stopped_at
    assert r.headers["content-type"].startswith("application/json")
    assert r.json().get("status") != "ready"
    refused = []
    for path, method, body in (
        ("/api/customers", "GET", None),
        ("/api/customers", "POST", customer(f"db-{tag}-refused")),
        ("/api/login", "POST", ADMIN),
    ):
        r = client.request(method, path, json=body, headers=headers if path != "/api/login" else None)
        assert r.status_code == 503, (path, r.status_code, r.text)
        assert r.headers["content-type"].startswith("application/json")
        assert "error" in r.json(), r.text
        refused.append(f"{method} {path} 503")
    assert client.get("/health").status_code == 200  # alive, only not ready

    started_at = time.monotonic()
    stack.run("start", "mysql", capture=True)
    (mysql,) = stack.container_ids("mysql")
    stack.wait_healthy([mysql])
    poll(ready_status(200), 60, "/ready 200 once the database is back")
    recovered_s = time.monotonic() - started_at
    after_names = {f"db-{tag}-after-{i}" for i in range(5)}
    for name in sorted(after_names):
        assert client.post("/api/customers", json=customer(name), headers=headers).status_code == 201
    names = customer_names(client, headers)
    assert acked | after_names <= names  # no acknowledged write lost
    assert f"db-{tag}-refused" not in names  # and the refused one not half-done
    assert app_starts() == before  # nothing restarted
    drill.report.check(
        "database stopped, then started",
        stop=f"{stop_s:.1f} s",
        ready_503_after=f"{unready_s:.1f} s",
        refused=", ".join(refused),
        recovered_in=f"{recovered_s:.1f} s",
        restarts=0,
    )


# --- docker compose stop of each service ---------------------------------------------------------------------------


def test_compose_stop_exits_every_service_0_within_its_grace_period(drill: Drill, client: httpx.Client) -> None:
    headers = login(client)
    client.close()  # no keep-alive connection of ours holds the edge open
    config = drill.stack.config()["services"]
    held = ExitStack()
    sockets = [open_socket(drill, headers, held) for _ in range(3)]
    figures = {}
    codes: list[int | None] = []
    for name in ("ws-gateway", "auth", "api", "api-b", "edge", "redis", "mysql"):
        grace_s = duration_s(config[name].get("stop_grace_period", "10s"))
        (container_id,) = drill.stack.container_ids(name)
        started = time.monotonic()
        drill.stack.run("stop", name, capture=True)
        took_s = time.monotonic() - started
        if name == "ws-gateway":
            codes = [close_code(ws) for ws in sockets]
        (state,) = [c["State"] for c in engine.inspect(container_id)]
        assert (state["Status"], state["ExitCode"]) == ("exited", 0), (name, state)
        assert not state["OOMKilled"]
        assert took_s < grace_s, (name, took_s, grace_s)
        figures[name] = f"exit {state['ExitCode']} in {took_s:.1f} s (grace {grace_s:.0f} s)"
    held.close()
    assert codes == [1012, 1012, 1012]
    drill.report.check("compose stop of each service", **figures, sockets="1012 x3")


# --- make down -------------------------------------------------------------------------------------------------------


def test_make_down_leaves_no_container_network_or_anonymous_volume(drill: Drill) -> None:
    down = drill.make("down")
    assert down.returncode == 0, down.stdout + down.stderr
    label = f"label=com.docker.compose.project={PROJECT}"
    containers = engine.docker("ps", "--all", "--quiet", "--filter", label).stdout.split()
    networks = engine.docker("network", "ls", "--quiet", "--filter", label).stdout.split()
    dangling = set(engine.docker("volume", "ls", "--quiet", "--filter", "dangling=true").stdout.split())
    named = engine.docker("volume", "ls", "--quiet", "--filter", label).stdout.split()
    assert containers == []
    assert networks == []
    assert dangling - drill.dangling_before - set(named) == set()  # anonymous ones would have no label
    assert sorted(named) == [f"{PROJECT}_mysql-data", f"{PROJECT}_redis-data"]  # the data stays until `down -v`
    drill.report.check("make down", containers=0, networks=0, anonymous_volumes=0, named_volumes_kept=len(named))
