"""What only the template can show: the emulator accepts alarms, metric filters and scaling as placeholders and keeps
no deployment configuration, so these are checked on ecs/ccsm.yaml (tests/aws checks the rest through the APIs)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from ccsm_core import metrics as m
from deploy.cloudformation import (
    CODE_LOGIN_ALARM_COUNT,
    CODE_LOGIN_ALARM_PERIOD_S,
    CODE_LOGIN_FAILED,
    CODE_LOGIN_FAILURES,
    json_filter,
)
from deploy.topology import ALB_SITE_CIDRS_MAX, ALB_VALUES_PER_RULE, alb_rules, deployments
from tests.harness import ROOT

TEMPLATE_BODY_LIMIT = 51_200  # AWS: larger templates must come from S3 ("CloudFormation quotas")


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "ecs" / "ccsm.yaml").read_text(encoding="utf-8"))
    return loaded


def resource(template: dict[str, Any], name: str) -> dict[str, Any]:
    props: dict[str, Any] = template["Resources"][name]["Properties"]
    return props


def task_environments(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out = {}
    for name, r in template["Resources"].items():
        if r["Type"] == "AWS::ECS::TaskDefinition":
            (container,) = r["Properties"]["ContainerDefinitions"]
            out[name] = {e["Name"]: e["Value"] for e in container["Environment"] if "Name" in e}
    return out


def test_the_tasks_trust_forwarded_addresses_from_the_alb_subnets_only(template: dict[str, Any]) -> None:
    assert "VpcCidr" not in template["Parameters"]
    assert template["Parameters"]["AlbSubnetCidrs"]["Type"] == "CommaDelimitedList"
    for name, env in task_environments(template).items():
        assert env["TRUSTED_PROXIES"] == {"Fn::Join": [",", {"Ref": "AlbSubnetCidrs"}]}, name


def test_the_code_login_restriction_is_one_parameter_open_by_default_within_the_alb_quotas(
    template: dict[str, Any],
) -> None:
    parameter = template["Parameters"]["DesktopSiteCidrs"]
    assert (parameter["Type"], parameter["Default"]) == ("CommaDelimitedList", "0.0.0.0/0")
    assert f"Up to {ALB_SITE_CIDRS_MAX} CIDRs" in parameter["Description"]
    users = [name for name, r in template["Resources"].items() if "DesktopSiteCidrs" in str(r)]
    (restricted,) = [r for r in alb_rules() if r.from_sites]
    assert users == [restricted.logical]
    assert len(restricted.patterns) + ALB_SITE_CIDRS_MAX <= ALB_VALUES_PER_RULE


def test_more_than_twenty_failed_code_logins_in_five_minutes_raise_an_alarm(template: dict[str, Any]) -> None:
    metric_filter = resource(template, "CodeLoginFailuresMetricFilter")
    assert metric_filter["LogGroupName"] == {"Ref": "LogGroup"}  # the services' log group
    assert metric_filter["FilterPattern"] == json_filter(CODE_LOGIN_FAILED)
    assert CODE_LOGIN_FAILED == {"event": "auth.login.failed", "endpoint": "authcode"}
    (transformation,) = metric_filter["MetricTransformations"]
    assert (transformation["MetricName"], transformation["MetricValue"]) == (CODE_LOGIN_FAILURES, "1")
    alarm = resource(template, "CodeLoginFailuresAlarm")
    assert alarm["Namespace"] == transformation["MetricNamespace"]
    assert (alarm["MetricName"], alarm["Statistic"], alarm["Period"], alarm["EvaluationPeriods"]) == (
        CODE_LOGIN_FAILURES,
        "Sum",
        CODE_LOGIN_ALARM_PERIOD_S,
        1,
    )
    assert (alarm["ComparisonOperator"], alarm["Threshold"]) == ("GreaterThanThreshold", CODE_LOGIN_ALARM_COUNT)
    assert (CODE_LOGIN_ALARM_COUNT, CODE_LOGIN_ALARM_PERIOD_S) == (20, 300)


@pytest.mark.parametrize("svc", deployments(), ids=lambda s: s.name)
def test_each_service_alarms_when_ready_fails_and_when_its_p99_is_slow(template: dict[str, Any], svc: Any) -> None:
    env = task_environments(template)[f"{svc.logical}TaskDefinition"]
    ready = resource(template, f"{svc.logical}ReadyAlarm")
    assert ready["Namespace"] == env["METRICS_NAMESPACE"]  # where the service writes its metrics
    assert (ready["MetricName"], ready["Statistic"]) == (m.READY, "Minimum")
    assert ready["Dimensions"] == [{"Name": m.SERVICE, "Value": svc.name}]
    assert (ready["ComparisonOperator"], ready["Threshold"]) == ("LessThanThreshold", 1)
    assert ready["TreatMissingData"] == "breaching"  # no task left to report is not "ready"
    p99 = resource(template, f"{svc.logical}ResponseTimeAlarm")
    assert (p99["Namespace"], p99["MetricName"], p99["ExtendedStatistic"]) == (
        "AWS/ApplicationELB",
        "TargetResponseTime",
        "p99",
    )
    assert "Statistic" not in p99
    assert {d["Name"] for d in p99["Dimensions"]} == {"LoadBalancer", "TargetGroup"}
    assert p99["Threshold"] == svc.p99_alarm_s
    assert p99["Dimensions"][1]["Value"] == {"Fn::GetAtt": [f"{svc.logical}TargetGroup", "TargetGroupFullName"]}


@pytest.mark.parametrize("svc", deployments(), ids=lambda s: s.name)
def test_each_service_scales_on_cpu_between_the_task_bounds(template: dict[str, Any], svc: Any) -> None:
    target = resource(template, f"{svc.logical}ScalableTarget")
    assert (target["MinCapacity"], target["MaxCapacity"]) == ({"Ref": "MinTasks"}, {"Ref": "MaxTasks"})
    assert target["ResourceId"] == {"Fn::Sub": f"service/${{Cluster}}/${{{svc.logical}Service.Name}}"}
    policy = resource(template, f"{svc.logical}ScalingPolicy")["TargetTrackingScalingPolicyConfiguration"]
    assert policy["PredefinedMetricSpecification"]["PredefinedMetricType"] == "ECSServiceAverageCPUUtilization"
    assert policy["ScaleInCooldown"] > policy["ScaleOutCooldown"]  # out fast, in slowly


def test_every_name_the_dashboard_substitutes_exists_in_the_stack(template: dict[str, Any]) -> None:
    body = resource(template, "Dashboard")["DashboardBody"]["Fn::Sub"]
    names = set(re.findall(r"\$\{([^}]+)\}", body))
    assert names
    for name in names:
        head, _, attribute = name.partition(".")
        assert head.startswith("AWS::") or head in template["Parameters"] or head in template["Resources"], name
        if attribute:
            assert attribute in {"LoadBalancerFullName", "TargetGroupFullName", "Name"}, name


def test_a_template_too_large_to_upload_directly_is_deployed_through_s3_in_the_docs() -> None:
    size = len((ROOT / "ecs" / "ccsm.yaml").read_bytes())
    assert size < 1_000_000  # the S3 limit
    docs = Path(ROOT / "ecs" / "README.md").read_text(encoding="utf-8")
    commands = re.findall(r"aws cloudformation deploy[^\n]*(?:\\\n[^\n]*)*", docs)
    assert commands
    if size > TEMPLATE_BODY_LIMIT:
        assert all("--s3-bucket" in command for command in commands), "deploy through an S3 bucket"
