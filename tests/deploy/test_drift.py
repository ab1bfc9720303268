"""One URL table: the committed edge config and ALB template are what the renderer makes of it today, the ALB
rules and the nginx locations route every path as the table does, the dev server serves each route from the
service that owns it, and the container/compose/ECS numbers agree with the code's."""

from __future__ import annotations

import ipaddress
import math
import re
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from starlette.routing import BaseRoute, Match, Route, WebSocketRoute

import devserver
from ccsm_core.routing import DEFAULT_SERVICE, RULES, SERVICE_PORTS, SERVICES, service_for
from ccsm_core.server import KEEP_ALIVE_S, WATCHDOG_MARGIN_S, WS_PING_INTERVAL_S
from ccsm_core.settings import SECRET_FIELDS
from deploy import render
from deploy.cloudformation import FORBIDDEN_BODY
from deploy.topology import (
    ALB_IDLE_TIMEOUT_S,
    DEREGISTRATION_DELAY_S,
    SHUTDOWN_FORCE_MS,
    SHUTDOWN_GRACE_MS,
    alb_rules,
    deployments,
    service_deploy,
)
from tests.deploy import alb
from tests.harness import ROOT, make_settings

# The edge and the dev server match like the services: Express-style in any case (the ALB only as written).
SAMPLE_PATHS = sorted(
    set(alb.SAMPLE_PATHS)
    | {"/API/LOGIN", "/Api/Desktop/Login-Authcode/", "/API", "/API/USERS/1", "/WS/DESKTOP", "/Ws/desktop", "/APIX"}
)
COMPOSE_SCHEMA = ROOT.parent / "shared" / "vendor" / "compose-spec.json"


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    loaded: dict[str, Any] = load_yaml(ROOT / "ecs" / "ccsm.yaml")
    return loaded


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = load_yaml(ROOT / "compose.yaml")
    return loaded


def resources_of(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in template["Resources"].items() if r["Type"] == kind}


def test_the_committed_edge_config_and_template_are_what_the_url_table_renders_today() -> None:
    assert render.drifted() == []


# --- the ALB ------------------------------------------------------------------------------------------------


def target_group_service(template: dict[str, Any], ref: dict[str, str]) -> str:
    port = template["Resources"][ref["Ref"]]["Properties"]["Port"]
    return {p: s for s, p in SERVICE_PORTS.items()}[port]


def template_rules(template: dict[str, Any], sites: tuple[str, ...]) -> tuple[list[alb.Rule], alb.Decision]:
    """The HTTPS listener's rules and default as the template declares them, with DesktopSiteCidrs = `sites`."""

    def sources_of(value: Any) -> tuple[str, ...]:
        assert value == {"Ref": "DesktopSiteCidrs"}
        return sites

    rules = [
        alb.parse_rule(
            r["Properties"]["Priority"],
            r["Properties"]["Conditions"],
            r["Properties"]["Actions"],
            lambda ref: target_group_service(template, ref),
            sources_of,
        )
        for r in resources_of(template, "AWS::ElasticLoadBalancingV2::ListenerRule").values()
    ]
    (default,) = template["Resources"]["HttpsListener"]["Properties"]["DefaultActions"]
    return rules, alb.parse_action(default, lambda ref: target_group_service(template, ref))


def test_the_alb_rules_are_the_url_tables_with_the_code_login_split_off(template: dict[str, Any]) -> None:
    rules, _ = template_rules(template, ("0.0.0.0/0",))
    found = {r.priority: (r.patterns, r.sources is not None, r.action) for r in rules}
    assert found == {
        rule.priority: (
            rule.patterns,
            rule.from_sites,
            ("fixed-response", "403", FORBIDDEN_BODY) if rule.deny else ("forward", rule.service),
        )
        for rule in alb_rules()
    }
    # every pattern of the table is in exactly one forwarding rule, to the table's service
    forwarded = sorted(p for r in rules if r.action[0] == "forward" for p in r.patterns)
    assert forwarded == sorted(p for rule in RULES for p in rule.patterns)


def test_the_code_login_is_open_by_default(template: dict[str, Any]) -> None:
    assert template["Parameters"]["DesktopSiteCidrs"]["Default"] == "0.0.0.0/0"
    rules, default = template_rules(template, ("0.0.0.0/0",))
    for path in alb.SAMPLE_PATHS:
        assert alb.decide(rules, default, path, alb.OTHER_ADDRESS) == ("forward", service_for(path)), path


@pytest.mark.parametrize("path", alb.SAMPLE_PATHS)
@pytest.mark.parametrize("client", [alb.SITE_ADDRESS, alb.OTHER_ADDRESS])
def test_the_alb_routes_each_path_like_the_url_table(template: dict[str, Any], path: str, client: str) -> None:
    """With the code login limited to a site: from there it reaches auth, from elsewhere it is 403 (never the api
    service's `/api/*` rule), and every other path goes where the URL table says."""
    sites = ("198.51.100.0/24",)
    rules, default = template_rules(template, sites)
    assert alb.decide(rules, default, path, client) == alb.expected(path, client, sites)


# --- the edge (nginx) ---------------------------------------------------------------------------------------


def nginx_route(config: str, path: str) -> str:
    """nginx's choice for `path` in routes.conf: regex locations in order (`~*` ignoring ASCII case), first
    match, else `location /`."""
    upstream_service = {svc.upstream: svc.name for svc in deployments()}
    blocks = re.findall(r"location (~(\*?) (\S+)|/) \{\s*proxy_pass http://(\w+);", config)
    assert blocks, "no locations found in routes.conf"
    for _, any_case, regex, upstream in blocks:
        if regex and re.search(regex, path, re.IGNORECASE | re.ASCII if any_case else 0):
            return upstream_service[upstream]
    (default,) = [upstream for kind, _, _, upstream in blocks if kind == "/"]
    return upstream_service[default]


@pytest.mark.parametrize("path", SAMPLE_PATHS)
def test_the_edge_config_routes_each_path_like_the_services_match_it(path: str) -> None:
    config = (ROOT / "edge" / "conf.d" / "routes.conf").read_text(encoding="utf-8")
    assert nginx_route(config, path) == service_for(path, case_sensitive=False)


def test_upper_case_logins_reach_auth_at_the_edge_and_the_default_service_on_aws(template: dict[str, Any]) -> None:
    config = (ROOT / "edge" / "conf.d" / "routes.conf").read_text(encoding="utf-8")
    assert nginx_route(config, "/API/LOGIN") == service_for("/API/LOGIN", case_sensitive=False) == "auth"
    rules, default = template_rules(template, ("0.0.0.0/0",))
    on_aws = alb.decide(rules, default, "/API/LOGIN", alb.OTHER_ADDRESS)
    assert on_aws == ("forward", service_for("/API/LOGIN")) == ("forward", DEFAULT_SERVICE)  # README, "Security"


@pytest.mark.parametrize("path", SAMPLE_PATHS)
def test_the_dev_server_matches_each_path_where_the_url_table_says_the_services_do(path: str) -> None:
    """The dev server's concatenated routes: the first service route that matches `path` (any method) is the
    one of the service the table names for the services' own matching; no match falls to the default."""
    settings = make_settings()
    owners = {key(r): name for name, spec in devserver.specs(settings).items() for r in spec.routes}
    app = devserver.create_app(settings)
    scope = {"type": "http", "path": path, "method": "GET"}
    ws_scope = {"type": "websocket", "path": path}
    for r in app.routes:
        if key(r) in owners and r.matches(ws_scope if isinstance(r, WebSocketRoute) else scope)[0] != Match.NONE:
            assert owners[key(r)] == service_for(path, case_sensitive=False)
            return
    assert service_for(path, case_sensitive=False) == DEFAULT_SERVICE


def test_the_edge_upstreams_are_the_compose_services_on_their_ports() -> None:
    config = (ROOT / "edge" / "conf.d" / "upstreams.conf").read_text(encoding="utf-8")
    servers = dict(re.findall(r"upstream (\w+) \{\s*server (\S+);", config))
    assert servers == {svc.upstream: f"{svc.name}:{SERVICE_PORTS[svc.name]}" for svc in deployments()}


# --- the dev server -----------------------------------------------------------------------------------------


def sample(route: BaseRoute) -> str:
    assert isinstance(route, Route | WebSocketRoute)
    return re.sub(r"\{[^}]+\}", "1", route.path)


def key(route: BaseRoute) -> tuple[str, str, frozenset[str]]:
    assert isinstance(route, Route | WebSocketRoute)
    methods = frozenset(route.methods or ()) if isinstance(route, Route) else frozenset()
    return (type(route).__name__, route.path, methods)


def test_the_dev_server_serves_each_route_from_the_service_the_url_table_names() -> None:
    settings = make_settings()
    owners: dict[tuple[str, str, frozenset[str]], str] = {}
    for name, spec in devserver.specs(settings).items():
        for route in spec.routes:
            assert service_for(sample(route)) == name, f"{sample(route)} is served by {name}"
            owners.setdefault(key(route), name)
    app = devserver.create_app(settings)
    served = [owners[key(r)] for r in app.routes if key(r) in owners]
    assert len(served) == len(owners)
    # First match wins, like the ALB: the service routes come in the table's order, the default's ops last.
    order = [rule.service for rule in RULES]
    assert [order.index(s) for s in served] == sorted(order.index(s) for s in served)
    ops = [sample(r) for r in app.routes if key(r) not in owners]
    assert {"/health", "/ready"} <= set(ops)
    assert service_for("/health") == service_for("/ready") == DEFAULT_SERVICE


# --- images, compose, ECS: the same numbers as the code ------------------------------------------------------


def test_the_image_runs_the_python_minor_version_the_tests_run_on() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    (minor,) = re.findall(r"^ARG PYTHON_IMAGE=python:(\d+)\.(\d+)-slim-\S+$", dockerfile, re.MULTILINE)
    assert tuple(map(int, minor)) == sys.version_info[:2]
    stages = re.findall(r"^FROM \$\{PYTHON_IMAGE\} AS (\w+)$", dockerfile, re.MULTILINE)
    assert stages == ["build", "runtime"]


def test_the_image_builds_with_the_uv_version_the_makefile_installs() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    (wanted,) = re.findall(r"^UV_VERSION := (\S+)$", makefile, re.MULTILINE)
    assert re.findall(r"^ARG UV_IMAGE=ghcr\.io/astral-sh/uv:(\S+)$", dockerfile, re.MULTILINE) == [wanted]
    assert re.findall(r"^FROM \$\{UV_IMAGE\} AS uv$", dockerfile, re.MULTILINE) == ["FROM ${UV_IMAGE} AS uv"]


def test_compose_builds_and_runs_each_service_with_its_module_and_port(compose: dict[str, Any]) -> None:
    for svc in deployments():
        service = compose["services"][svc.name]
        assert service["build"]["args"] == {
            "PYTHON_IMAGE": "${PYTHON_IMAGE:-python:3.11-slim-bookworm}",
            "UV_IMAGE": "${UV_IMAGE:-ghcr.io/astral-sh/uv:0.13.9}",
            "SERVICE_PACKAGE": svc.package,
            "SERVICE_MODULE": svc.module,
            "SERVICE_PORT": str(svc.port),
        }
        assert service["environment"]["PORT"] == str(svc.port)
        assert set(service["depends_on"]) >= {"mysql", "redis"}
        assert all(dep["condition"] != "service_started" for dep in service["depends_on"].values())
        grace = int(service["stop_grace_period"].removesuffix("s"))
        assert grace > SHUTDOWN_FORCE_MS / 1000 + WATCHDOG_MARGIN_S
    assert compose["services"]["migrate"]["command"] == ["python", "-m", "ccsm_core", "migrate"]


def test_every_one_shot_compose_job_is_adopted_by_a_long_running_service(compose: dict[str, Any]) -> None:
    """`up --wait` (make up) treats a job's clean exit as a failure unless a long-running service depends on it
    with `service_completed_successfully` (docker/compose#10596)."""
    services = compose["services"]
    jobs = {name for name, s in services.items() if s.get("restart") == "no"}
    assert jobs == {"migrate", "seed"}
    for job in jobs:
        adopters = [
            name
            for name, s in services.items()
            if name not in jobs
            and (s.get("depends_on") or {}).get(job, {}).get("condition") == "service_completed_successfully"
        ]
        assert adopters, f"{job} is not adopted by a long-running service"


def test_compose_trusts_forwarded_addresses_from_the_edge_only(compose: dict[str, Any]) -> None:
    edge_ip = compose["services"]["edge"]["networks"]["backend"]["ipv4_address"]
    for svc in deployments():
        assert compose["services"][svc.name]["environment"]["TRUSTED_PROXIES"] == edge_ip
    # The network is a variable (a second project runs beside the first); every fixed address lies in it.
    (subnet,) = compose["networks"]["backend"]["ipam"]["config"]
    network = ipaddress.ip_network(subnet["subnet"].replace("${BACKEND_NETWORK:-172.30.40}", "172.30.40"))
    fixed = [s["networks"]["backend"]["ipv4_address"] for s in compose["services"].values() if "ipv4_address" in str(s)]
    assert len(fixed) == 3  # the edge and the two api containers
    assert all(ipaddress.ip_address(a.replace("${BACKEND_NETWORK:-172.30.40}", "172.30.40")) in network for a in fixed)
    assert compose["services"]["edge"]["ports"] == ["127.0.0.1:${EDGE_PORT:-4000}:4000"]
    assert "./edge/conf.d:/etc/nginx/conf.d:ro" in compose["services"]["edge"]["volumes"]


def test_compose_takes_every_secret_from_the_environment_never_from_the_file(compose: dict[str, Any]) -> None:
    secret_names = {f.upper() for f in SECRET_FIELDS} | {"MYSQL_ROOT_PASSWORD", "MYSQL_PASSWORD"}
    for name, service in compose["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if key in secret_names:
                assert re.fullmatch(r"\$\{[A-Z_]+(:[?-][^}]*)?\}", str(value)), (name, key, value)


def test_compose_yaml_is_valid_against_the_compose_specification_schema(compose: dict[str, Any]) -> None:
    import json

    schema = json.loads(COMPOSE_SCHEMA.read_text(encoding="utf-8"))
    jsonschema.validate(compose, schema, cls=jsonschema.Draft7Validator)


def test_the_timing_chain_keeps_connections_and_shutdowns_consistent(template: dict[str, Any]) -> None:
    alb = template["Resources"]["LoadBalancer"]["Properties"]["LoadBalancerAttributes"]
    assert {"Key": "idle_timeout.timeout_seconds", "Value": str(ALB_IDLE_TIMEOUT_S)} in alb
    assert WS_PING_INTERVAL_S < ALB_IDLE_TIMEOUT_S < KEEP_ALIVE_S  # no 502 from reused connections
    for svc in deployments():
        props = template["Resources"][f"{svc.logical}TaskDefinition"]["Properties"]
        (container,) = props["ContainerDefinitions"]
        assert container["StopTimeout"] >= math.ceil(SHUTDOWN_FORCE_MS / 1000 + WATCHDOG_MARGIN_S)
        assert container["StopTimeout"] <= 120  # Fargate's maximum
        env = {e["Name"]: e["Value"] for e in container["Environment"] if "Name" in e}
        assert env["SHUTDOWN_GRACE_MS"] == str(SHUTDOWN_GRACE_MS)
        assert env["SHUTDOWN_FORCE_MS"] == str(SHUTDOWN_FORCE_MS)
        tg = template["Resources"][f"{svc.logical}TargetGroup"]["Properties"]
        delay = {a["Key"]: a["Value"] for a in tg["TargetGroupAttributes"]}["deregistration_delay.timeout_seconds"]
        assert int(delay) == DEREGISTRATION_DELAY_S < SHUTDOWN_GRACE_MS / 1000


def test_each_task_listens_on_its_port_behind_a_target_group_checked_on_health(template: dict[str, Any]) -> None:
    for name in SERVICES:
        svc = service_deploy(name)
        tg = template["Resources"][f"{svc.logical}TargetGroup"]["Properties"]
        assert (tg["Port"], tg["HealthCheckPath"], tg["Matcher"]) == (
            SERVICE_PORTS[name],
            "/health",
            {"HttpCode": "200"},
        )
        (container,) = template["Resources"][f"{svc.logical}TaskDefinition"]["Properties"]["ContainerDefinitions"]
        assert container["PortMappings"] == [{"ContainerPort": SERVICE_PORTS[name], "Protocol": "tcp"}]
        ingress = template["Resources"][f"{svc.logical}IngressFromAlb"]["Properties"]
        assert (ingress["FromPort"], ingress["ToPort"]) == (SERVICE_PORTS[name], SERVICE_PORTS[name])
        deployment = template["Resources"][f"{svc.logical}Service"]["Properties"]["DeploymentConfiguration"]
        assert deployment == {
            "MinimumHealthyPercent": 100,
            "MaximumPercent": 200,
            "DeploymentCircuitBreaker": {"Enable": True, "Rollback": True},
        }


def test_no_secret_is_in_a_task_environment_and_each_comes_by_reference(template: dict[str, Any]) -> None:
    secret_names = {f.upper() for f in SECRET_FIELDS} | {"DB_PASSWORD"}
    for name, resource in resources_of(template, "AWS::ECS::TaskDefinition").items():
        (container,) = resource["Properties"]["ContainerDefinitions"]
        env_names = {e["Name"] for e in container["Environment"] if "Name" in e}
        env_names |= {e["Fn::If"][1]["Name"] for e in container["Environment"] if "Fn::If" in e}
        assert not env_names & secret_names, name
        refs = [s for s in container["Secrets"] if "Name" in s] + [
            s["Fn::If"][1] for s in container["Secrets"] if "Fn::If" in s
        ]
        assert {s["Name"] for s in refs} == {"DB_PASSWORD", "JWT_SECRET", "JWT_SECRET_PREVIOUS", "JIRA_API_TOKEN"}, name
        assert all(set(s) == {"Name", "ValueFrom"} and "Ref" in s["ValueFrom"] for s in refs), name


def test_the_gateway_may_hold_many_sockets(template: dict[str, Any]) -> None:
    (container,) = template["Resources"]["GatewayTaskDefinition"]["Properties"]["ContainerDefinitions"]
    (limit,) = container["Ulimits"]
    assert limit["Name"] == "nofile"
    assert limit["SoftLimit"] >= 65536


def test_every_checkov_skip_says_why_in_place(template: dict[str, Any]) -> None:
    skips = [
        s for r in template["Resources"].values() for s in r.get("Metadata", {}).get("checkov", {}).get("skip", [])
    ]
    assert skips, "the template documents its skips"
    assert all(re.fullmatch(r"CKV2?_AWS_\d+", s["id"]) and len(s["comment"]) > 40 for s in skips)


def test_the_alarms_cover_5xx_unhealthy_hosts_restarts_readiness_latency_and_code_guessing(
    template: dict[str, Any],
) -> None:
    metrics = {a["Properties"]["MetricName"] for a in resources_of(template, "AWS::CloudWatch::Alarm").values()}
    assert metrics == {
        "HTTPCode_ELB_5XX_Count",
        "HTTPCode_Target_5XX_Count",
        "UnHealthyHostCount",
        "TaskUnexpectedStops",
        "Ready",
        "TargetResponseTime",
        "CodeLoginFailures",
    }
