"""The services' metrics (ccsm_core.metrics): aggregated per interval, written as CloudWatch EMF lines in the JSON
log. First the aggregation on its own, then real service processes under a known load: the EMF lines they print
must add up to exactly what was sent."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
import uuid
from collections import defaultdict
from typing import Any

import httpx
import orjson
import pytest
import redis
import yaml

from ccsm_core import metrics as m
from ccsm_core.settings import Settings
from deploy.cloudformation import CODE_LOGIN_FAILED
from tests.gateway.rawclient import CLOSE, RawSocket, close_code
from tests.gateway.wsclient import DB_CHANGED, opened, recv_type, token_for
from tests.harness import ADMIN, ROOT, ServiceProcess, running

UNITS = {"Count", "Milliseconds", "None"}


def emf_lines(proc: ServiceProcess) -> list[dict[str, Any]]:
    return [line for line in proc.log_events() if "_aws" in line]


def check_emf(doc: dict[str, Any], namespace: str) -> None:
    """What CloudWatch requires of an EMF document (AWS: "Specification: Embedded metric format")."""
    aws = doc["_aws"]
    assert isinstance(aws["Timestamp"], int)
    assert abs(aws["Timestamp"] / 1000 - time.time()) < 600
    (directive,) = aws["CloudWatchMetrics"]
    assert directive["Namespace"] == namespace
    (dimension_set,) = directive["Dimensions"]
    assert dimension_set[0] == m.SERVICE
    for name in dimension_set:
        assert isinstance(doc[name], str), name  # each dimension's value is a string member of the root
    assert directive["Metrics"], doc
    for metric in directive["Metrics"]:
        assert metric["Unit"] in UNITS
        assert isinstance(doc[metric["Name"]], int | float), metric


def by_dimensions(lines: list[dict[str, Any]], *keys: str) -> dict[tuple[str, ...], list[dict[str, Any]]]:
    out: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    for line in lines:
        (directive,) = line["_aws"]["CloudWatchMetrics"]
        if directive["Dimensions"] == [[m.SERVICE, *keys]]:
            out[tuple(line[k] for k in keys)].append(line)
    return out


# --- the aggregation -----------------------------------------------------------------------------------------


class FakeRoute:
    def __init__(self, path: str) -> None:
        self.path = path


def test_a_thousand_requests_become_one_line_per_route_family_and_status_class() -> None:
    metrics = m.Metrics("api", "CCSM/test")
    users, user, health = FakeRoute("/api/users"), FakeRoute("/api/users/{id}"), FakeRoute("/health")
    for i in range(1000):
        metrics.request(users if i % 2 else user, 200, 0.001 * (i % 100 + 1))
    for _ in range(7):
        metrics.request(health, 200, 0.0002)
        metrics.request(None, 404, 0.0001)
    metrics.request(users, 503, 2.0)
    metrics.request(users, 0, 0.1)  # the client left before an answer: not counted

    lines = metrics.collect()
    for line in lines:
        check_emf(line, "CCSM/test")
    found = {(line[m.ROUTE_FAMILY], line[m.STATUS_CLASS]): line for line in lines}
    assert sorted(found) == [("/api/users", "2xx"), ("/api/users", "5xx"), ("/health", "2xx"), ("unmatched", "4xx")]
    ok = found[("/api/users", "2xx")]
    assert ok[m.REQUESTS] == 1000
    # latencies were 1..100 ms evenly: p50 ~50 ms and p99 ~99 ms, each within one bucket (25 %)
    assert 50 <= ok[m.LATENCY_P50] <= 50 * 1.25
    assert 99 <= ok[m.LATENCY_P99] <= 100
    assert ok[m.LATENCY_MAX] == 100.0
    assert found[("/api/users", "5xx")][m.REQUESTS] == 1
    assert found[("unmatched", "4xx")][m.REQUESTS] == 7
    assert metrics.collect() == []  # a new interval starts empty


def test_login_failures_readiness_gauges_and_counters_are_reported_per_interval() -> None:
    metrics = m.Metrics("ws-gateway", "CCSM/test")
    sockets = [1, 2, 3]
    closes = [5]
    metrics.gauge(m.OPEN_SOCKETS, lambda: len(sockets))
    metrics.counter(m.SLOW_CONSUMER_CLOSES, lambda: closes[0])
    metrics.login_failed("authcode")
    metrics.login_failed("authcode")
    metrics.login_failed("login")
    for ms in (1, 2, 3, 40):
        metrics.broadcast(ms / 1000)
    closes[0] = 7

    lines = metrics.collect(ready=True)
    for line in lines:
        check_emf(line, "CCSM/test")
    failures = by_dimensions(lines, m.ENDPOINT)
    assert {k: v[0][m.LOGIN_FAILURES] for k, v in failures.items()} == {("authcode",): 2, ("login",): 1}
    (service,) = by_dimensions(lines)[()]
    assert service[m.READY] == 1
    assert service[m.OPEN_SOCKETS] == 3
    assert service[m.SLOW_CONSUMER_CLOSES] == 2  # what the running total grew by in the interval
    assert service[m.BROADCASTS] == 4
    assert service[m.FANOUT_MAX] == 40.0
    assert service[m.FANOUT_P50] <= 3 * 1.25

    (next_interval,) = metrics.collect(ready=False)
    assert next_interval[m.READY] == 0
    assert (next_interval[m.SLOW_CONSUMER_CLOSES], next_interval[m.BROADCASTS]) == (0, 0)
    assert m.FANOUT_P99 not in next_interval


def test_the_route_family_is_the_first_two_segments_of_the_route() -> None:
    assert m.route_family("/api/time-tracking/{id}/complete") == "/api/time-tracking"
    assert m.route_family("/api/login") == "/api/login"
    assert m.route_family("/health") == "/health"


# --- real processes ---------------------------------------------------------------------------------------------

FAST_METRICS = {"METRICS_INTERVAL_MS": "500", "METRICS_NAMESPACE": "CCSM/emf-test"}


@pytest.mark.slow
def test_the_api_process_prints_emf_lines_that_add_up_to_the_requests_it_served(settings: Settings) -> None:
    admin = token_for(settings, user_id=1, role=1)
    sent = {("/health", "2xx"): 25, ("/api/lookups", "2xx"): 10, ("/api/users", "4xx"): 7, ("unmatched", "4xx"): 4}
    slowest_ms = 0.0
    with running("ccsm_api", settings, FAST_METRICS) as api:
        with httpx.Client(base_url=api.base_url, timeout=10) as http:
            calls = (
                [("/health", {}, 200)] * 25
                + [("/api/lookups/task-categories", {"Authorization": f"Bearer {admin}"}, 200)] * 10
                + [("/api/users", {}, 401)] * 7
                + [("/api/no-such-thing", {}, 404)] * 4
            )
            for path, headers, status in calls:
                started = time.perf_counter()
                assert http.get(path, headers=headers).status_code == status
                slowest_ms = max(slowest_ms, (time.perf_counter() - started) * 1000)
        api.wait_for_line('"Ready":1')  # a periodic flush, with the readiness the process sees
        assert api.stop() == 0  # the shutdown flushes what is left
    lines = emf_lines(api)
    for line in lines:
        check_emf(line, "CCSM/emf-test")
    requests = by_dimensions(lines, m.ROUTE_FAMILY, m.STATUS_CLASS)
    assert {key: sum(line[m.REQUESTS] for line in group) for key, group in requests.items()} == sent
    for key, group in requests.items():
        assert len(group) < sent[key] or sent[key] == 1  # aggregated: never a line per request
        for line in group:
            assert 0 < line[m.LATENCY_P50] <= line[m.LATENCY_P99] <= line[m.LATENCY_MAX] <= slowest_ms
    service = by_dimensions(lines)[()]
    assert service
    assert all(line[m.READY] == 1 for line in service)
    print(f"\napi EMF: {len(lines)} lines for {sum(sent.values())} requests: {dict(sorted(sent.items()))}")


def metric_filter_fields() -> dict[str, str]:
    """The fields the template's code-login metric filter matches, read from the committed ecs/ccsm.yaml."""
    template = yaml.safe_load((ROOT / "ecs" / "ccsm.yaml").read_text(encoding="utf-8"))
    pattern = template["Resources"]["CodeLoginFailuresMetricFilter"]["Properties"]["FilterPattern"]
    fields = dict(re.findall(r'\(\$\.(\w+) = "([^"]*)"\)', pattern))
    assert pattern == "{ " + " && ".join(f'($.{k} = "{v}")' for k, v in fields.items()) + " }"
    return fields


@pytest.mark.slow
def test_the_auth_process_counts_failed_logins_and_the_template_counts_the_same_code_logins(
    settings: Settings,
) -> None:
    # A Redis prefix of its own: the login budgets other tests spent do not apply here.
    own = dataclasses.replace(settings, redis_prefix=f"{settings.redis_prefix}emf-{uuid.uuid4().hex[:8]}:")
    with running("ccsm_auth", own, {**FAST_METRICS, "BCRYPT_ROUNDS": "8"}) as auth:
        with httpx.Client(base_url=auth.base_url, timeout=10) as http:
            for _ in range(3):
                assert http.post("/api/login", json={"username": "admin", "password": "wrong"}).status_code == 401
            for code in ("900001", "900002", "900003", "900004"):
                response = http.post("/api/desktop/login-authcode", json={"code": code})
                assert (response.status_code, response.json()) == (200, None)
            assert http.post("/api/login", json=ADMIN).status_code == 200
        assert auth.stop() == 0
    lines = emf_lines(auth)
    failures = by_dimensions(lines, m.ENDPOINT)
    assert {k: sum(line[m.LOGIN_FAILURES] for line in v) for k, v in failures.items()} == {
        ("login",): 3,
        ("authcode",): 4,
    }
    requests = by_dimensions(lines, m.ROUTE_FAMILY, m.STATUS_CLASS)
    assert {k: sum(line[m.REQUESTS] for line in v) for k, v in requests.items()} == {
        ("/api/login", "4xx"): 3,
        ("/api/login", "2xx"): 1,
        ("/api/desktop", "2xx"): 4,
    }
    # The CloudFormation metric filter matches exactly the failed code logins among the audit events.
    fields = metric_filter_fields()
    assert fields == CODE_LOGIN_FAILED
    events = [e for e in auth.log_events() if str(e.get("event", "")).startswith("auth.login")]
    matched = [e for e in events if all(e.get(k) == v for k, v in fields.items())]
    assert len(matched) == 4
    assert len(events) == 8
    assert not any("900001" in orjson.dumps(e).decode() for e in events)  # no code in the audit line


def logged(proc: ServiceProcess, text: str) -> bool:
    """Whether the process has printed `text` (a short bounded wait for its latest lines, not a sleep)."""
    try:
        proc.wait_for_line(text, timeout=0.05)
    except TimeoutError:
        return False
    return True


@pytest.mark.slow
def test_the_gateway_process_reports_sockets_broadcasts_fanout_and_slow_consumer_closes(settings: Settings) -> None:
    payload = orjson.dumps({"type": "db-changed", "reason": "pool-query", "pad": "x" * 16_000, "ts": 1})
    env = {**FAST_METRICS, "LOG_LEVEL": "debug"}  # "slow client closed" is per connection, so a debug line
    with running("ccsm_gateway", settings, env) as gw:
        gw.wait_for_line("subscribed to db-changed")
        slow = RawSocket(gw.port, token_for(settings, user_id=3), rcvbuf=4096)

        async def scenario() -> int:
            sockets = [await opened(gw, token_for(settings, user_id=2), max_size=None) for _ in range(3)]
            client = redis.asyncio.Redis.from_url(settings.redis_url)
            published = 0
            try:
                await asyncio.to_thread(gw.wait_for_line, '"OpenSockets":4')  # three and the slow one
                while not await asyncio.to_thread(logged, gw, "slow client closed"):
                    for _ in range(20):
                        await client.publish(settings.redis_prefix + DB_CHANGED, payload)
                    published += 20
                    for ws in sockets:
                        for _ in range(20):
                            await recv_type(ws, "db-changed")
                    assert published < 5_000, "the slow client was never dropped"
                await asyncio.to_thread(gw.wait_for_line, '"OpenSockets":3')
            finally:
                await client.aclose()
                for ws in sockets:
                    await ws.close()
            return published

        published = asyncio.run(scenario())
        while True:
            opcode, data = slow.frame(within=15)
            if opcode == CLOSE:
                assert close_code(data) == 1013
                break
        slow.close()
        assert gw.stop() == 0
    lines = by_dimensions(emf_lines(gw))[()]
    assert sum(line[m.BROADCASTS] for line in lines) == published
    assert sum(line[m.SLOW_CONSUMER_CLOSES] for line in lines) == 1
    fanout = [line for line in lines if line[m.BROADCASTS]]
    assert all(0 < line[m.FANOUT_P50] <= line[m.FANOUT_P99] <= line[m.FANOUT_MAX] for line in fanout)
    assert max(line[m.OPEN_SOCKETS] for line in lines) == 4
    print(f"\ngateway EMF: {len(lines)} lines, {published} broadcasts to 4 sockets, 1 closed with 1013")
