"""The runbook's deploy (§8) and rollback (§11) on the ECS stack, as commands (ecs/README.md):

    python -m deploy.ecs status
    python -m deploy.ecs deploy --tag TAG --base-url https://api.example.com
    python -m deploy.ecs rollback [--tag TAG] --base-url https://api.example.com

`deploy`: 1. the migration task definition moves to TAG (a stack update), the migration task runs and its exit
code must be 0, else nothing else changes; 2. the services' tags move to TAG (a stack update: CloudFormation
registers the task definitions and ECS rolls the services, new tasks healthy before old ones stop); 3. every
service is stable and runs TAG's image; 4. `/ready` answers 200 through the load balancer several times in a row.
When 2-4 fail, the services go back to the tags they ran before (a stack update again) and the command says why
and exits 1. Migrations are forward-only and additive, so the previous version runs on the migrated schema.

`rollback`: the services go back to the release before the current one (the stack's `ccsm:previous-release`
tag, which `deploy` keeps) or to `--tag`, then the same waits.

Every change goes through CloudFormation (`UpdateStack` with the stack's own template and only the tag parameters
changed), so the stack stays the source of truth; the ECS and ELB APIs are only read. A template change is its own
step (`aws cloudformation deploy`, ecs/README.md). AWS credentials and region come from the usual places (the
environment, a profile, an instance role); `--endpoint-url` (or AWS_ENDPOINT_URL) points at another endpoint,
such as an emulator.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import boto3
import httpx
from botocore.exceptions import ClientError

from deploy.topology import ServiceDeploy, deployments

MIGRATION_TAG = "MigrationImageTag"
RELEASE_TAG = "ccsm:release"  # stack tags: the release the services run, and the one before it
PREVIOUS_RELEASE_TAG = "ccsm:previous-release"
READY_IN_A_ROW = 3  # /ready through the ALB reaches one task per request: several answers, several tasks
STARTED_BY = "ccsm-deploy"
IN_PROGRESS = "_IN_PROGRESS"


class DeployError(Exception):
    """A step failed; the message says which and why."""


def say(text: str) -> None:
    print(text, flush=True)


def tag_parameter(svc: ServiceDeploy) -> str:
    return f"{svc.logical}ImageTag"


def image_tag(image: str) -> str:
    return image.rsplit(":", 1)[-1] if ":" in image.rsplit("/", 1)[-1] else ""


@dataclass
class Timing:
    poll_s: float = 5.0
    stack_timeout_s: float = 1800.0  # a rolling deployment of three services, each draining its old tasks
    migration_timeout_s: float = 900.0
    stable_timeout_s: float = 900.0
    ready_timeout_s: float = 300.0


class Deployment:
    def __init__(self, stack: str, session: Any, endpoint_url: str | None, timing: Timing) -> None:
        self.stack = stack
        self.timing = timing

        def client(service: str) -> Any:
            return session.client(service, endpoint_url=endpoint_url)

        self.cfn = client("cloudformation")
        self.ecs = client("ecs")
        self.elb = client("elbv2")

    # --- reading -------------------------------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        (stack,) = self.cfn.describe_stacks(StackName=self.stack)["Stacks"]
        return dict(stack)

    def parameters(self) -> dict[str, str]:
        return {p["ParameterKey"]: p["ParameterValue"] for p in self.describe()["Parameters"]}

    def outputs(self) -> dict[str, str]:
        return {o["OutputKey"]: o["OutputValue"] for o in self.describe().get("Outputs", [])}

    def stack_tags(self) -> dict[str, str]:
        return {t["Key"]: t["Value"] for t in self.describe().get("Tags", [])}

    def running(self) -> dict[str, dict[str, Any]]:
        """Each service as ECS describes it, with the image of the task definition it runs."""
        outputs = self.outputs()
        names = {svc.name: outputs[f"{svc.logical}ServiceName"] for svc in deployments()}
        described = self.ecs.describe_services(cluster=outputs["ClusterName"], services=list(names.values()))
        by_name = {s["serviceName"]: s for s in described["services"]}
        out = {}
        for name, ecs_name in names.items():
            service = dict(by_name[ecs_name])
            definition = self.ecs.describe_task_definition(taskDefinition=service["taskDefinition"])["taskDefinition"]
            service["image"] = definition["containerDefinitions"][0]["image"]
            service["revision"] = f"{definition['family']}:{definition['revision']}"
            out[name] = service
        return out

    # --- changing: through the stack only -----------------------------------------------------------------------

    def update(self, changes: dict[str, str], tags: dict[str, str] | None = None) -> None:
        """An UpdateStack with the stack's own template: `changes` to parameters, every other one kept."""
        current = self.parameters()
        parameters = [
            {"ParameterKey": key, "ParameterValue": changes[key]}
            if key in changes
            else {"ParameterKey": key, "UsePreviousValue": True}
            for key in current
        ]
        request: dict[str, Any] = {
            "StackName": self.stack,
            "UsePreviousTemplate": True,
            "Parameters": parameters,
            "Capabilities": ["CAPABILITY_IAM"],
        }
        if tags is not None:  # UpdateStack replaces the stack's tags: keep the others, replace the release's
            kept = {k: v for k, v in self.stack_tags().items() if k not in (RELEASE_TAG, PREVIOUS_RELEASE_TAG)}
            request["Tags"] = [{"Key": k, "Value": v} for k, v in {**kept, **tags}.items()]
        started = time.time()
        try:
            self.cfn.update_stack(**request)
        except ClientError as exc:
            if "No updates are to be performed" in str(exc):
                return
            raise DeployError(f"the stack update was refused: {exc}") from None
        status = self._wait(
            lambda: self.describe()["StackStatus"],
            lambda s: not s.endswith(IN_PROGRESS),
            self.timing.stack_timeout_s,
            "the stack update",
        )
        if status != "UPDATE_COMPLETE":
            raise DeployError(f"the stack update ended {status}: {'; '.join(self.failure_reasons(started))}")

    def failure_reasons(self, since: float) -> list[str]:
        events = self.cfn.describe_stack_events(StackName=self.stack)["StackEvents"]
        return [
            f"{e['LogicalResourceId']}: {e.get('ResourceStatusReason', e['ResourceStatus'])}"
            for e in events
            if e["ResourceStatus"].endswith("FAILED") and e["Timestamp"].timestamp() >= since - 1
        ] or ["see the stack's events"]

    # --- the steps -----------------------------------------------------------------------------------------------

    def migrate(self, tag: str) -> None:
        """Move the migration task definition to `tag`, run it, require exit code 0."""
        previous = self.parameters()[MIGRATION_TAG]
        say(f"migration: task definition to {tag} (was {previous})")
        self.update({MIGRATION_TAG: tag})
        outputs = self.outputs()
        definition = self.ecs.describe_task_definition(taskDefinition=outputs["MigrationTaskDefinition"])
        image = definition["taskDefinition"]["containerDefinitions"][0]["image"]
        if image_tag(image) != tag:
            raise DeployError(f"the migration task definition runs {image} after the stack update, not {tag}")
        started = self.ecs.run_task(
            cluster=outputs["ClusterName"],
            taskDefinition=outputs["MigrationTaskDefinition"],
            launchType="FARGATE",
            startedBy=STARTED_BY,
            networkConfiguration={
                "awsvpcConfiguration": {
                    "subnets": outputs["TaskSubnets"].split(","),
                    "securityGroups": [outputs["MigrationSecurityGroup"]],
                    "assignPublicIp": "DISABLED",
                }
            },
        )
        if started.get("failures") or not started.get("tasks"):
            raise DeployError(f"the migration task did not start: {started.get('failures')}")
        task_arn = started["tasks"][0]["taskArn"]
        say(f"migration: task {task_arn} running {image}")

        def describe_task() -> dict[str, Any]:
            (task,) = self.ecs.describe_tasks(cluster=outputs["ClusterName"], tasks=[task_arn])["tasks"]
            return dict(task)

        task = self._wait(
            describe_task, lambda t: t["lastStatus"] == "STOPPED", self.timing.migration_timeout_s, "the migration task"
        )
        (container,) = task["containers"]
        code = container.get("exitCode")
        if code != 0:
            task_id = task_arn.rsplit("/", 1)[-1]
            raise DeployError(
                f"the migration task exited {code} ({task.get('stoppedReason', 'no reason given')}); "
                f"its log: aws logs tail {outputs['LogGroupName']} --log-stream-name-prefix migrate/migrate/{task_id}"
            )
        say("migration: exit code 0")

    def roll(self, tags: dict[str, str], release: dict[str, str] | None = None) -> None:
        """Move the services to `tags` (service name -> tag) through the stack."""
        changes = {tag_parameter(svc): tags[svc.name] for svc in deployments()}
        say("services: " + ", ".join(f"{name} to {tag}" for name, tag in tags.items()))
        self.update(changes, release)

    def go_to(self, tags: dict[str, str], release: dict[str, str], base_url: str) -> None:
        """Roll the services to `tags`, wait until they are stable on them and ready through the load balancer."""
        self.roll(tags, release)
        self.wait_stable(tags)
        self.wait_ready(base_url)

    def wait_stable(self, tags: dict[str, str]) -> dict[str, dict[str, Any]]:
        """Until each service has one deployment, completed, of a task definition running its tag, with every
        desired task running (what `aws ecs wait services-stable` checks, plus the image)."""

        def check() -> tuple[bool, dict[str, dict[str, Any]]]:
            services = self.running()
            for name, service in services.items():
                for deployment in service["deployments"]:
                    if deployment.get("rolloutState") == "FAILED":
                        raise DeployError(f"{name}'s deployment failed: {deployment.get('rolloutStateReason')}")
            done = all(
                len(s["deployments"]) == 1
                and s["deployments"][0].get("rolloutState", "COMPLETED") == "COMPLETED"
                and s["runningCount"] == s["desiredCount"]
                and image_tag(s["image"]) == tags[name]
                for name, s in services.items()
            )
            return done, services

        done: tuple[bool, dict[str, dict[str, Any]]] = self._wait(
            check,
            lambda result: result[0],
            self.timing.stable_timeout_s,
            "the services to be stable on " + ", ".join(sorted(set(tags.values()))),
        )
        services = done[1]
        for name, service in services.items():
            say(f"{name}: {service['revision']} {service['image']}, {service['runningCount']} running")
        return services

    def wait_ready(self, base_url: str) -> None:
        url = base_url.rstrip("/") + "/ready"
        last = "no answer"
        in_a_row = 0
        deadline = time.monotonic() + self.timing.ready_timeout_s
        with httpx.Client(timeout=10.0) as client:
            while True:
                try:
                    response = client.get(url)
                    ready = response.status_code == 200 and response.json().get("status") == "ready"
                    last = f"{response.status_code} {response.text[:200]}"
                except (httpx.HTTPError, ValueError) as exc:
                    ready, last = False, type(exc).__name__
                in_a_row = in_a_row + 1 if ready else 0
                if in_a_row >= READY_IN_A_ROW:
                    say(f"ready: {url} answered 200 {READY_IN_A_ROW} times in a row")
                    return
                # A run of ready answers that began before the deadline may finish after it.
                if time.monotonic() >= deadline and not in_a_row:
                    raise DeployError(f"{url} was not ready within {self.timing.ready_timeout_s:g} s (last: {last})")
                time.sleep(self.timing.poll_s)

    def _wait(self, read: Callable[[], Any], done: Callable[[Any], bool], timeout_s: float, what: str) -> Any:
        deadline = time.monotonic() + timeout_s
        while True:
            value = read()
            if done(value):
                return value
            if time.monotonic() >= deadline:
                raise DeployError(f"timed out after {timeout_s:g} s waiting for {what}")
            time.sleep(self.timing.poll_s)

    # --- the commands --------------------------------------------------------------------------------------------

    def current_tags(self) -> dict[str, str]:
        parameters = self.parameters()
        return {svc.name: parameters[tag_parameter(svc)] for svc in deployments()}

    def deploy(self, tag: str, base_url: str) -> int:
        before = self.current_tags()
        migration_before = self.parameters()[MIGRATION_TAG]
        history = self.stack_tags()
        release = history.get(RELEASE_TAG) or _single(before)
        try:
            self.migrate(tag)
        except DeployError as exc:
            say(f"deploy of {tag} stopped before the services: {exc}")
            try:
                self.update({MIGRATION_TAG: migration_before})
                say(f"the migration task definition is back at {migration_before}")
            except DeployError as again:
                say(f"the migration task definition could not be put back at {migration_before}: {again}")
            return 1
        target = dict.fromkeys(before, tag)
        try:
            self.go_to(target, _release(tag, release), base_url)
        except DeployError as exc:
            say(f"deploy of {tag} failed: {exc}")
            say("rolling back to " + ", ".join(f"{name} {t}" for name, t in before.items()))
            try:
                self.go_to(before, _release(release, history.get(PREVIOUS_RELEASE_TAG, "")), base_url)
            except DeployError as again:
                say(f"ROLLBACK FAILED: {again}")
                return 2
            say(f"rolled back: the services run what they ran before {tag}, because {exc}")
            return 1
        say(f"deployed {tag}")
        return 0

    def rollback(self, tag: str | None, base_url: str) -> int:
        history = self.stack_tags()
        target_tag = tag or history.get(PREVIOUS_RELEASE_TAG)
        if not target_tag:
            say("no previous release is recorded on the stack: pass --tag")
            return 1
        current = history.get(RELEASE_TAG) or _single(self.current_tags())
        target = dict.fromkeys(self.current_tags(), target_tag)
        say(f"rolling back to {target_tag} (from {current or 'mixed tags'})")
        try:
            self.go_to(target, _release(target_tag, current), base_url)
        except DeployError as exc:
            say(f"ROLLBACK FAILED: {exc}")
            return 2
        say(f"rolled back to {target_tag}")
        return 0

    def status(self) -> int:
        stack = self.describe()
        history = self.stack_tags()
        say(f"stack {self.stack}: {stack['StackStatus']}")
        say(f"release {history.get(RELEASE_TAG, '?')} (previous: {history.get(PREVIOUS_RELEASE_TAG) or 'none'})")
        say(f"migration image tag {self.parameters()[MIGRATION_TAG]}")
        outputs = self.outputs()
        for svc, (name, service) in zip(deployments(), self.running().items(), strict=True):
            rollout = ", ".join(f"{d['status'].lower()} {d.get('rolloutState', '?')}" for d in service["deployments"])
            health = self.elb.describe_target_health(TargetGroupArn=outputs[f"{svc.logical}TargetGroupArn"])
            states = [t["TargetHealth"]["State"] for t in health["TargetHealthDescriptions"]]
            counts = ", ".join(f"{states.count(s)} {s}" for s in sorted(set(states))) or "no targets"
            say(
                f"{name}: {service['revision']} {service['image']}; {service['runningCount']}/"
                f"{service['desiredCount']} running; deployments: {rollout}; targets: {counts}"
            )
        return 0


def _release(current: str, previous: str) -> dict[str, str]:
    """The stack tags that record a release (a tag's value may not be empty: an unknown one is left out)."""
    return {key: value for key, value in ((RELEASE_TAG, current), (PREVIOUS_RELEASE_TAG, previous)) if value}


def _single(tags: dict[str, str]) -> str:
    values = set(tags.values())
    return values.pop() if len(values) == 1 else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deploy.ecs", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--stack", default=os.environ.get("STACK", "ccsm-alpha"), help="stack name ($STACK)")
    parser.add_argument("--region", default=os.environ.get("AWS_REGION"), help="AWS region ($AWS_REGION)")
    parser.add_argument("--endpoint-url", default=os.environ.get("AWS_ENDPOINT_URL"), help="another AWS endpoint")
    parser.add_argument("--poll", type=float, default=Timing.poll_s, help="seconds between checks")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("status", help="the stack, each service's task definition, image, tasks and targets")
    base_url = os.environ.get("BASE_URL") or (f"https://{os.environ['DOMAIN']}" if os.environ.get("DOMAIN") else None)
    for name, help_text in (("deploy", "migrate, then roll the services to --tag"), ("rollback", "go back")):
        command = sub.add_parser(name, help=help_text)
        command.add_argument("--tag", required=name == "deploy", help="image tag (the commit, never latest)")
        command.add_argument(
            "--base-url",
            default=base_url,
            required=base_url is None,
            help="where /ready is asked, through the load balancer ($BASE_URL, https://$DOMAIN)",
        )
        command.add_argument("--ready-timeout", type=float, default=Timing.ready_timeout_s)
        command.add_argument("--stable-timeout", type=float, default=Timing.stable_timeout_s)
        command.add_argument("--migration-timeout", type=float, default=Timing.migration_timeout_s)
    args = parser.parse_args(argv)
    timing = Timing(poll_s=args.poll)
    for option in ("ready_timeout", "stable_timeout", "migration_timeout"):
        if hasattr(args, option):
            setattr(timing, f"{option}_s", getattr(args, option))
    deployment = Deployment(args.stack, boto3.session.Session(region_name=args.region), args.endpoint_url, timing)
    try:
        if args.command == "status":
            return deployment.status()
        if args.command == "deploy":
            return deployment.deploy(args.tag, args.base_url)
        return deployment.rollback(args.tag, args.base_url)
    except ClientError as exc:
        say(f"AWS refused a call: {exc}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
