"""The committed template deployed to the emulator and read back through the AWS APIs (ELB, ECS, EC2, CloudWatch,
Logs), not from the YAML: what the load balancer routes where, how targets are checked and drained, what each task
runs with, where the services run, the migration task and the dashboard. What the emulator does not model
(deployment configuration, circuit breaker, scaling, alarms, metric filters) is checked on the template in
tests/deploy/test_cloudformation.py."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from ccsm_core import metrics
from ccsm_core.routing import SERVICE_PORTS
from ccsm_core.server import WATCHDOG_MARGIN_S
from ccsm_core.settings import env_vars
from deploy.topology import (
    ALB_IDLE_TIMEOUT_S,
    DEREGISTRATION_DELAY_S,
    SHUTDOWN_FORCE_MS,
    SHUTDOWN_GRACE_MS,
    deployments,
    service_deploy,
)
from tests.aws.conftest import REGISTRY, SITES, Stack
from tests.aws.emulator import PRIVATE_CIDRS, PUBLIC_CIDRS
from tests.deploy import alb

pytestmark = pytest.mark.slow

SECRET_VARIABLES = {var.name for var in env_vars() if var.secret}


def listeners(stack: Stack) -> dict[int, dict[str, Any]]:
    elb = stack.client("elbv2")
    (balancer,) = [
        lb
        for lb in elb.describe_load_balancers()["LoadBalancers"]
        if lb["DNSName"] == stack.outputs["LoadBalancerDnsName"]
    ]
    found = elb.describe_listeners(LoadBalancerArn=balancer["LoadBalancerArn"])["Listeners"]
    return {listener["Port"]: listener for listener in found}


def target_groups(stack: Stack) -> dict[str, dict[str, Any]]:
    """Service name -> its target group, as the ELB API describes it (the stack's outputs name the ARNs)."""
    elb = stack.client("elbv2")
    out = {}
    for svc in deployments():
        (group,) = elb.describe_target_groups(TargetGroupArns=[stack.outputs[f"{svc.logical}TargetGroupArn"]])[
            "TargetGroups"
        ]
        out[svc.name] = group
    return out


def services(stack: Stack) -> dict[str, dict[str, Any]]:
    described = stack.client("ecs").describe_services(
        cluster=stack.outputs["ClusterName"], services=stack.service_names()
    )["services"]
    by_name = {s["serviceName"]: s for s in described}
    return {svc.name: by_name[stack.outputs[f"{svc.logical}ServiceName"]] for svc in deployments()}


def container_of(stack: Stack, task_definition: str) -> dict[str, Any]:
    described = stack.client("ecs").describe_task_definition(taskDefinition=task_definition)["taskDefinition"]
    (container,) = described["containerDefinitions"]
    return dict(container)


def test_the_stack_is_created_from_the_committed_template(stack: Stack) -> None:
    (described,) = stack.client("cloudformation").describe_stacks(StackName=stack.name)["Stacks"]
    assert described["StackStatus"] == "CREATE_COMPLETE"
    assert {"ClusterName", "LoadBalancerDnsName", "MigrationTaskDefinition", "DashboardName"} <= set(stack.outputs)


def test_the_https_listener_routes_every_path_like_the_url_table(stack: Stack) -> None:
    https = listeners(stack)[443]
    assert https["Protocol"] == "HTTPS"
    assert https["Certificates"] == [{"CertificateArn": stack.network.certificate_arn}]
    by_arn = {group["TargetGroupArn"]: name for name, group in target_groups(stack).items()}
    rules = stack.client("elbv2").describe_rules(ListenerArn=https["ListenerArn"])["Rules"]
    parsed = [
        alb.parse_rule(int(r["Priority"]), r["Conditions"], r["Actions"], by_arn.__getitem__, tuple)
        for r in rules
        if not r["IsDefault"]
    ]
    (default,) = [r for r in rules if r["IsDefault"]]
    (default_action,) = default["Actions"]
    fallback = alb.parse_action(default_action, by_arn.__getitem__)
    sites = tuple(SITES.split(","))
    assert {r.sources for r in parsed if r.sources is not None} == {sites}
    for path in alb.SAMPLE_PATHS:
        for client in (alb.SITE_ADDRESS, alb.OTHER_ADDRESS):
            assert alb.decide(parsed, fallback, path, client) == alb.expected(path, client, sites), (path, client)


def test_plain_http_is_redirected_to_https(stack: Stack) -> None:
    http = listeners(stack)[80]
    assert http["Protocol"] == "HTTP"
    assert http["DefaultActions"] == [
        {"Type": "redirect", "RedirectConfig": {"Protocol": "HTTPS", "Port": "443", "StatusCode": "HTTP_301"}}
    ]


def test_the_load_balancer_outlasts_the_websocket_heartbeat_and_sits_in_the_public_subnets(stack: Stack) -> None:
    elb = stack.client("elbv2")
    (balancer,) = [
        lb
        for lb in elb.describe_load_balancers()["LoadBalancers"]
        if lb["DNSName"] == stack.outputs["LoadBalancerDnsName"]
    ]
    assert balancer["Scheme"] == "internet-facing"
    assert sorted(z["SubnetId"] for z in balancer["AvailabilityZones"]) == sorted(stack.network.public_subnets)
    attributes = {
        a["Key"]: a["Value"]
        for a in elb.describe_load_balancer_attributes(LoadBalancerArn=balancer["LoadBalancerArn"])["Attributes"]
    }
    assert attributes["idle_timeout.timeout_seconds"] == str(ALB_IDLE_TIMEOUT_S)
    assert attributes["routing.http.drop_invalid_header_fields.enabled"] == "true"


@pytest.mark.parametrize("name", [svc.name for svc in deployments()])
def test_each_target_group_checks_health_and_drains_within_the_grace_period(stack: Stack, name: str) -> None:
    group = target_groups(stack)[name]
    assert (group["Protocol"], group["Port"], group["TargetType"]) == ("HTTP", SERVICE_PORTS[name], "ip")
    assert (group["HealthCheckPath"], group["HealthCheckPort"], group["Matcher"]) == (
        "/health",
        "traffic-port",
        {"HttpCode": "200"},
    )
    assert group["HealthCheckIntervalSeconds"] == 10
    assert group["HealthCheckTimeoutSeconds"] < group["HealthCheckIntervalSeconds"]
    assert (group["HealthyThresholdCount"], group["UnhealthyThresholdCount"]) == (2, 3)
    attributes = stack.client("elbv2").describe_target_group_attributes(TargetGroupArn=group["TargetGroupArn"])
    delay = {a["Key"]: a["Value"] for a in attributes["Attributes"]}["deregistration_delay.timeout_seconds"]
    assert int(delay) == DEREGISTRATION_DELAY_S < SHUTDOWN_GRACE_MS / 1000


@pytest.mark.parametrize("name", [svc.name for svc in deployments()])
def test_each_task_runs_its_image_with_every_secret_by_reference(stack: Stack, name: str) -> None:
    svc = service_deploy(name)
    running = services(stack)[name]
    container = container_of(stack, running["taskDefinition"])
    assert container["image"] == f"{REGISTRY}/ccsm-{name}:{stack.parameters[f'{svc.logical}ImageTag']}"
    assert container["portMappings"] == [{"containerPort": svc.port, "protocol": "tcp"}]
    environment = {e["name"]: e["value"] for e in container["environment"]}
    assert not SECRET_VARIABLES & set(environment)
    assert all(stack.parameters["JwtSecretArn"] not in str(v) for v in environment.values())
    assert {s["name"]: s["valueFrom"] for s in container["secrets"]} == {
        "DB_PASSWORD": stack.parameters["DbPasswordSecretArn"],
        "JWT_SECRET": stack.parameters["JwtSecretArn"],
    }
    assert container["stopTimeout"] >= math.ceil(SHUTDOWN_FORCE_MS / 1000 + WATCHDOG_MARGIN_S)
    assert container["stopTimeout"] <= 120  # Fargate's maximum
    assert environment["SHUTDOWN_FORCE_MS"] == str(SHUTDOWN_FORCE_MS)
    log = container["logConfiguration"]
    assert log["logDriver"] == "awslogs"
    assert log["options"]["awslogs-group"] == stack.outputs["LogGroupName"]
    groups = stack.client("logs").describe_log_groups(logGroupNamePrefix=stack.outputs["LogGroupName"])["logGroups"]
    assert [g["logGroupName"] for g in groups] == [stack.outputs["LogGroupName"]]
    assert environment["METRICS_NAMESPACE"] == f"CCSM/{stack.parameters['EnvironmentName']}"
    if svc.nofile:
        assert container["ulimits"] == [{"name": "nofile", "softLimit": svc.nofile, "hardLimit": svc.nofile}]
    else:
        assert "ulimits" not in container


def test_the_tasks_believe_forwarded_addresses_from_the_load_balancers_subnets_only(stack: Stack) -> None:
    """Issue 12 item 7: TRUSTED_PROXIES is the ALB's subnets (as EC2 describes them), not the VPC."""
    described = stack.client("ec2").describe_subnets(SubnetIds=stack.network.public_subnets)["Subnets"]
    alb_cidrs = sorted(s["CidrBlock"] for s in described)
    assert alb_cidrs == sorted(PUBLIC_CIDRS)
    for name, running in services(stack).items():
        environment = {e["name"]: e["value"] for e in container_of(stack, running["taskDefinition"])["environment"]}
        assert sorted(environment["TRUSTED_PROXIES"].split(",")) == alb_cidrs, name
        assert not any(cidr in environment["TRUSTED_PROXIES"] for cidr in PRIVATE_CIDRS), name


@pytest.mark.parametrize("name", [svc.name for svc in deployments()])
def test_the_services_run_in_the_private_subnets_without_public_addresses(stack: Stack, name: str) -> None:
    svc = service_deploy(name)
    running = services(stack)[name]
    assert running["launchType"] == "FARGATE"
    assert running["desiredCount"] == running["runningCount"] == 2  # MinTasks
    network = running["networkConfiguration"]["awsvpcConfiguration"]
    assert sorted(network["subnets"]) == sorted(stack.network.private_subnets)
    assert network["assignPublicIp"] == "DISABLED"
    assert running["loadBalancers"] == [
        {
            "targetGroupArn": stack.outputs[f"{svc.logical}TargetGroupArn"],
            "containerName": name,
            "containerPort": svc.port,
        }
    ]
    groups = stack.client("ec2").describe_security_groups(GroupIds=network["securityGroups"])["SecurityGroups"]
    assert [g["VpcId"] for g in groups] == [stack.network.vpc_id]


def test_the_migration_task_definition_applies_the_migrations_of_its_image(stack: Stack) -> None:
    container = container_of(stack, stack.outputs["MigrationTaskDefinition"])
    assert container["command"] == ["python", "-m", "ccsm_core", "migrate"]
    assert container["image"] == f"{REGISTRY}/ccsm-api:{stack.parameters['MigrationImageTag']}"
    assert {s["name"] for s in container["secrets"]} == {"DB_PASSWORD", "JWT_SECRET"}
    assert container["logConfiguration"]["options"]["awslogs-stream-prefix"] == "migrate"


def test_the_dashboard_shows_each_services_alb_ecs_and_own_metrics(stack: Stack) -> None:
    body = json.loads(
        stack.client("cloudwatch").get_dashboard(DashboardName=stack.outputs["DashboardName"])["DashboardBody"]
    )
    widgets = {w["properties"]["title"]: w["properties"] for w in body["widgets"]}
    text = json.dumps(body)
    assert "${" not in text  # every placeholder was filled in
    for name, group in target_groups(stack).items():
        full_name = "targetgroup/" + group["TargetGroupArn"].split(":targetgroup/")[1]
        for title, metric in (
            ("ALB: requests per service", "RequestCount"),
            ("ALB: 4xx / 5xx per service", "HTTPCode_Target_5XX_Count"),
            ("ALB: 4xx / 5xx per service", "HTTPCode_Target_4XX_Count"),
            ("ALB: target response time p50 / p99 (s)", "TargetResponseTime"),
        ):
            rows = [r for r in widgets[title]["metrics"] if r[1] == metric and full_name in r]
            assert rows, (name, title, metric)
        stats = {r[-1]["stat"] for r in widgets["ALB: target response time p50 / p99 (s)"]["metrics"] if full_name in r}
        assert stats == {"p50", "p99"}
    for title, metric in (
        ("ECS: CPU % per service", "CPUUtilization"),
        ("ECS: memory % per service", "MemoryUtilization"),
        ("ECS: running tasks", "RunningTaskCount"),
    ):
        rows = widgets[title]["metrics"]
        assert {r[r.index("ServiceName") + 1] for r in rows} == set(stack.service_names()), title
        assert {r[1] for r in rows} == {metric}
        assert {r[r.index("ClusterName") + 1] for r in rows} == {stack.outputs["ClusterName"]}
    namespace = f"CCSM/{stack.parameters['EnvironmentName']}"
    for metric in (
        metrics.REQUESTS,
        metrics.LATENCY_P99,
        metrics.READY,
        metrics.LOGIN_FAILURES,
        "CodeLoginFailures",
        metrics.OPEN_SOCKETS,
        metrics.BROADCASTS,
        metrics.SLOW_CONSUMER_CLOSES,
        metrics.FANOUT_P99,
    ):
        assert f'"{metric}' in text or f'\\"{metric}\\"' in text, metric
    assert namespace in text
