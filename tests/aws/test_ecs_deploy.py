"""`python -m deploy.ecs` against the emulator: each test gets a fresh stack at v1. The migration task really runs
(`python -m ccsm_core migrate`, on a database of its own, with the task definition's environment and secrets), the
rollout is read back through the ECS API (the task-definition revision and image each service runs, before, after
a deploy and after a rollback), and `/ready` "through the load balancer" is a real api service process on this
machine (the emulator has no load balancer that forwards): a healthy one, or one whose database is unreachable."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from ccsm_core.db import connect_sync
from ccsm_core.settings import Settings
from deploy import ecs
from deploy.topology import deployments
from tests.aws.balancer import Balancer
from tests.aws.conftest import REGISTRY, DeployDatabase, Stack, create_stack
from tests.aws.emulator import Emulator
from tests.harness import ServiceProcess, free_port, running

pytestmark = pytest.mark.slow

FAST = ["--poll", "0.05"]


@pytest.fixture(scope="module")
def ready_api(settings: Settings) -> Iterator[ServiceProcess]:
    with running("ccsm_api", settings) as api:
        yield api


@pytest.fixture(scope="module")
def unready_api(settings: Settings) -> Iterator[ServiceProcess]:
    """An api task whose database is gone: /ready is 503 `db-unreachable`, /health still 200."""
    with running("ccsm_api", settings, {"DB_PORT": str(free_port()), "DB_CONNECT_TIMEOUT_MS": "200"}) as api:
        yield api


@pytest.fixture
def fresh_stack(emulator: Emulator, settings: Settings, deploy_database: DeployDatabase) -> Stack:
    return create_stack(emulator, settings, deploy_database, tag="v1")


def run(stack: Stack, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = ecs.main(["--stack", stack.name, "--endpoint-url", stack.emulator.endpoint_url, *FAST, *argv])
    return code, capsys.readouterr().out


def running_revisions(stack: Stack) -> dict[str, tuple[str, str]]:
    """Service -> (task definition revision, image) as ECS describes what each service runs."""
    out = {}
    ecs_api = stack.client("ecs")
    described = ecs_api.describe_services(cluster=stack.outputs["ClusterName"], services=stack.service_names())
    by_name = {s["serviceName"]: s for s in described["services"]}
    for svc in deployments():
        service = by_name[stack.outputs[f"{svc.logical}ServiceName"]]
        (deployment,) = service["deployments"]
        assert deployment["taskDefinition"] == service["taskDefinition"]
        assert deployment["rolloutState"] == "COMPLETED"
        definition = ecs_api.describe_task_definition(taskDefinition=service["taskDefinition"])["taskDefinition"]
        out[svc.name] = (
            f"{definition['family']}:{definition['revision']}",
            definition["containerDefinitions"][0]["image"],
        )
    return out


def images(tag: str) -> dict[str, str]:
    return {svc.name: f"{REGISTRY}/{svc.image_repository}:{tag}" for svc in deployments()}


def stack_tags(stack: Stack) -> dict[str, str]:
    (described,) = stack.client("cloudformation").describe_stacks(StackName=stack.name)["Stacks"]
    return {t["Key"]: t["Value"] for t in described.get("Tags", [])}


def migration_tasks(stack: Stack) -> list[dict[str, Any]]:
    ecs_api = stack.client("ecs")
    arns = ecs_api.list_tasks(cluster=stack.outputs["ClusterName"], startedBy=ecs.STARTED_BY)["taskArns"]
    return list(ecs_api.describe_tasks(cluster=stack.outputs["ClusterName"], tasks=arns)["tasks"]) if arns else []


def applied_migrations(settings: Settings, database: DeployDatabase) -> list[str]:
    conn = connect_sync(settings, database.name)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT version FROM schema_migrations ORDER BY version")
            return [str(row[0]) for row in cur.fetchall()]
    finally:
        conn.close()


def test_a_deploy_migrates_then_rolls_every_service_to_the_new_tag(
    fresh_stack: Stack,
    ready_api: ServiceProcess,
    settings: Settings,
    deploy_database: DeployDatabase,
    capsys: pytest.CaptureFixture[str],
) -> None:
    before = running_revisions(fresh_stack)
    assert {name: image for name, (_, image) in before.items()} == images("v1")

    code, out = run(fresh_stack, capsys, "deploy", "--tag", "v2", "--base-url", ready_api.base_url)

    assert code == 0, out
    after = running_revisions(fresh_stack)
    assert {name: image for name, (_, image) in after.items()} == images("v2")
    for name, (revision, _) in after.items():
        family, number = revision.split(":")
        assert (family, int(number)) == (before[name][0].split(":")[0], int(before[name][0].split(":")[1]) + 1)
        old = fresh_stack.client("ecs").describe_task_definition(taskDefinition=before[name][0])["taskDefinition"]
        assert old["status"] == "INACTIVE"  # CloudFormation replaced it
    (task,) = migration_tasks(fresh_stack)
    assert task["lastStatus"] == "STOPPED"
    assert task["containers"][0]["exitCode"] == 0
    assert task["containers"][0]["image"].endswith(":v2")
    assert applied_migrations(settings, deploy_database)  # the task really migrated its database
    assert stack_tags(fresh_stack) == {ecs.RELEASE_TAG: "v2", ecs.PREVIOUS_RELEASE_TAG: "v1"}
    assert fresh_stack.refresh().parameters["MigrationImageTag"] == "v2"
    assert out.index("migration: exit code 0") < out.index("services: auth to v2") < out.index("ready:")
    assert "deployed v2" in out


def test_a_deploy_that_never_gets_ready_goes_back_to_the_previous_tags_and_says_why(
    fresh_stack: Stack,
    ready_api: ServiceProcess,
    unready_api: ServiceProcess,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Through the "load balancer", v1's tasks are ready and v2's cannot reach the database.
    balancer = Balancer(fresh_stack, {"v1": ready_api.base_url, "v2": unready_api.base_url})
    try:
        code, out = run(
            fresh_stack, capsys, "deploy", "--tag", "v2", "--base-url", balancer.base_url, "--ready-timeout", "3"
        )
    finally:
        balancer.close()

    assert code == 1, out
    assert "/ready was not ready within 3 s" in out
    assert "db-unreachable" in out  # the last answer, as the load balancer gave it
    assert "rolled back: the services run what they ran before v2" in out
    assert balancer.seen[0] == "v2"
    assert balancer.seen[-3:] == ["v1"] * 3  # the previous version, ready again
    after = running_revisions(fresh_stack)
    assert {name: image for name, (_, image) in after.items()} == images("v1")
    assert all(revision.endswith(":3") for revision, _ in after.values())  # v1 -> v2 -> v1 again
    assert fresh_stack.refresh().parameters["MigrationImageTag"] == "v2"  # the schema stays migrated
    assert stack_tags(fresh_stack) == {ecs.RELEASE_TAG: "v1"}


def test_a_rollback_that_cannot_get_ready_either_says_so_loudly(
    fresh_stack: Stack, unready_api: ServiceProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run(
        fresh_stack, capsys, "deploy", "--tag", "v2", "--base-url", unready_api.base_url, "--ready-timeout", "0.5"
    )
    assert code == 2, out
    assert "ROLLBACK FAILED" in out
    assert {name: image for name, (_, image) in running_revisions(fresh_stack).items()} == images("v1")


def test_a_failing_migration_stops_the_deploy_before_any_service_changes(
    fresh_stack: Stack, ready_api: ServiceProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    # The database password in the secret store is wrong: the migration task cannot log in and exits 1.
    fresh_stack.client("secretsmanager").put_secret_value(
        SecretId=fresh_stack.parameters["DbPasswordSecretArn"], SecretString="not-the-password"
    )
    before = running_revisions(fresh_stack)

    code, out = run(fresh_stack, capsys, "deploy", "--tag", "v2", "--base-url", ready_api.base_url)

    assert code == 1, out
    assert "the migration task exited 1" in out
    assert "--log-stream-name-prefix migrate/migrate/" in out
    assert "\nservices:" not in out  # no service was told to move
    assert "stopped before the services" in out
    assert running_revisions(fresh_stack) == before
    assert fresh_stack.refresh().parameters["MigrationImageTag"] == "v1"
    (task,) = migration_tasks(fresh_stack)
    assert task["containers"][0]["exitCode"] == 1


def test_rollback_returns_every_service_to_the_release_before(
    fresh_stack: Stack, ready_api: ServiceProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(fresh_stack, capsys, "deploy", "--tag", "v2", "--base-url", ready_api.base_url)[0] == 0

    code, out = run(fresh_stack, capsys, "rollback", "--base-url", ready_api.base_url)

    assert code == 0, out
    assert "rolled back to v1" in out
    after = running_revisions(fresh_stack)
    assert {name: image for name, (_, image) in after.items()} == images("v1")
    assert all(revision.endswith(":3") for revision, _ in after.values())
    assert stack_tags(fresh_stack) == {ecs.RELEASE_TAG: "v1", ecs.PREVIOUS_RELEASE_TAG: "v2"}


def test_rollback_without_a_recorded_release_asks_for_a_tag(
    fresh_stack: Stack, ready_api: ServiceProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run(fresh_stack, capsys, "rollback", "--base-url", ready_api.base_url)
    assert code == 1
    assert "pass --tag" in out
    assert {name: image for name, (_, image) in running_revisions(fresh_stack).items()} == images("v1")


def test_status_shows_each_services_revision_image_and_tasks(
    fresh_stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run(fresh_stack, capsys, "status")
    assert code == 0
    assert f"stack {fresh_stack.name}: CREATE_COMPLETE" in out
    for name, (revision, image) in running_revisions(fresh_stack).items():
        assert f"{name}: {revision} {image}; 2/2 running; deployments: primary COMPLETED" in out
