"""moto's server (`python -m tests.aws.moto_server -H 127.0.0.1 -p PORT`), with three gaps in its ECS and
CloudFormation models closed so a stack update and a one-shot task behave as on AWS. Each patch is small and
pinned to the moto version in the lock (a different version stops here, so a changed internal cannot go unseen).

1. A stack update re-evaluates the resources that use a changed parameter through `Fn::Sub` (`${AuthImageTag}`)
   as well as `Ref`, and then the resources that use a re-evaluated one (a service whose task definition was
   replaced), as CloudFormation does (moto: only `Ref`s to changed parameters, nothing downstream).
2. An `AWS::ECS::TaskDefinition` is registered with all of its properties (CPU, memory, network mode, launch
   types, roles, platform; moto keeps the family, the containers and the memory), without the list elements that
   `AWS::NoValue` removed (moto leaves nulls in their place); a changed one is replaced by a new revision and the
   old revision is deregistered, as CloudFormation does (moto re-registers the raw PascalCase properties, which
   the ECS API cannot read back). A Fargate task's resources are the task's CPU and memory (moto adds up the
   containers' and fails when they have none, as Fargate containers may).
3. An `AWS::ECS::Service` is created with all of its properties (launch type, network configuration, load
   balancers, deployment controller; moto keeps only the name, the count and the task definition), and a created
   or updated service runs its task definition: `taskDefinition` is the revision's ARN and it has one PRIMARY,
   COMPLETED deployment of it with every desired task running. That is the end state of a rolling deployment
   whose tasks got healthy (moto keeps the family name and the old deployment).
4. A load balancer's and a target group's attribute lists (`LoadBalancerAttributes`, `TargetGroupAttributes`)
   are applied (moto ignores them and reports its defaults), and their `LoadBalancerFullName` and
   `TargetGroupFullName` (the CloudWatch dimension values: the ARN after `loadbalancer/`, and from `targetgroup/`)
   can be read with `Fn::GetAtt` and `Fn::Sub` (moto has neither).
5. A task whose container has a `command` (the migration task) runs that command on this machine, with the task
   definition's environment and its secrets read from the emulator's Secrets Manager, and stops with the
   command's exit code (`containers[0].exitCode`, `stopCode` EssentialContainerExited). moto has no tasks that
   run: its tasks stay RUNNING until stopped, or advance to STOPPED with exit code 0 whatever happened.
6. `UsePreviousValue` keeps a parameter that took its default at creation (moto fails: it remembers only the
   values it was given).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import threading
from typing import Any

import moto
from moto.cloudformation import models as cloudformation
from moto.cloudformation import parsing
from moto.core.utils import utcnow
from moto.ecs import models as ecs
from moto.elbv2 import models as elbv2
from moto.moto_api import state_manager
from moto.secretsmanager.models import secretsmanager_backends
from moto.server import main

PINNED_MOTO = "5.2.5"
COMMAND_TIMEOUT_S = 120


# --- 1. what a stack update re-evaluates -----------------------------------------------------------------------


def references(template: Any) -> list[str]:
    """The parameters and resources a template fragment uses: `Ref`, `Fn::GetAtt` and `${...}` in `Fn::Sub`."""
    found: list[str] = []
    if isinstance(template, dict):
        for key, value in template.items():
            if key == "Ref":
                found.append(value)
            elif key == "Fn::GetAtt":
                found.append(value[0] if isinstance(value, list) else str(value).split(".")[0])
            elif key == "Fn::Sub":
                text, rest = (value[0], value[1:]) if isinstance(value, list) else (value, [])
                found += [name.split(".")[0] for name in re.findall(r"\$\{([^!}][^}]*)\}", text)]
                found += references(rest)
            else:
                found += references(value)
    elif isinstance(template, list):
        for item in template:
            found += references(item)
    return found


_build_resource_diff = parsing.ResourceMap.build_resource_diff


def build_resource_diff(self: parsing.ResourceMap, other_template: Any, parameters: Any = None) -> Any:
    diff = _build_resource_diff(self, other_template, parameters)
    new = other_template["Resources"]
    modified = diff["Modify"]
    grew = True
    while grew:  # everything downstream of a modified resource, in template order
        grew = False
        for name in new:
            if name not in modified and name in self._resource_json_map and set(references(new[name])) & set(modified):
                modified.append(name)
                grew = True
    return diff


# --- 2. task definitions ---------------------------------------------------------------------------------------


def _camel(value: Any) -> Any:
    """CloudFormation's PascalCase properties as the ECS API's camelCase, without `AWS::NoValue`'s nulls."""
    if isinstance(value, list):
        return [_camel(item) for item in value if item is not None]
    if isinstance(value, dict):
        return {ecs.pascal_to_camelcase(k): _camel(v) for k, v in value.items()}
    return value


def create_task_definition(
    cls: type[ecs.TaskDefinition], resource_name: str, cfn: Any, account_id: str, region_name: str, **_: Any
) -> ecs.TaskDefinition:
    props = cfn["Properties"]
    return ecs.ecs_backends[account_id][region_name].register_task_definition(
        family=props.get("Family") or resource_name,
        container_definitions=_camel(props.get("ContainerDefinitions") or []),
        volumes=_camel(props.get("Volumes") or []),
        network_mode=props.get("NetworkMode"),
        requires_compatibilities=props.get("RequiresCompatibilities"),
        cpu=props.get("Cpu"),
        memory=props.get("Memory"),
        task_role_arn=props.get("TaskRoleArn"),
        execution_role_arn=props.get("ExecutionRoleArn"),
        runtime_platform=_camel(props.get("RuntimePlatform")),
    )


def update_task_definition(
    cls: type[ecs.TaskDefinition],
    original_resource: ecs.TaskDefinition,
    new_resource_name: str,
    cloudformation_json: Any,
    account_id: str,
    region_name: str,
) -> ecs.TaskDefinition:
    new = create_task_definition(cls, new_resource_name, cloudformation_json, account_id, region_name)
    ecs.ecs_backends[account_id][region_name].deregister_task_definition(original_resource.arn)
    return new


_requirements = ecs.EC2ContainerServiceBackend._calculate_task_resource_requirements


def task_resource_requirements(task_definition: ecs.TaskDefinition) -> dict[str, Any]:
    if task_definition.memory is not None and "FARGATE" in (task_definition.requires_compatibilities or []):
        return {
            "CPU": int(task_definition.cpu or 0),
            "MEMORY": int(task_definition.memory),
            "PORTS": [],
            "PORTS_UDP": [],
        }
    result: dict[str, Any] = _requirements(task_definition)
    return result


# --- 3. services -----------------------------------------------------------------------------------------------


def _task_definition_name(value: Any) -> str:
    return value.arn if isinstance(value, ecs.TaskDefinition) else str(value)


def create_service(
    cls: type[ecs.Service], resource_name: str, cloudformation_json: Any, account_id: str, region_name: str, **_: Any
) -> ecs.Service:
    props = cloudformation_json["Properties"]
    cluster = props["Cluster"]
    backend = ecs.ecs_backends[account_id][region_name]
    service = backend.create_service(
        cluster.name if isinstance(cluster, ecs.Cluster) else cluster,
        props.get("ServiceName") or resource_name,
        int(props.get("DesiredCount") or 0),
        task_definition_str=_task_definition_name(props["TaskDefinition"]),
        load_balancers=_camel(props.get("LoadBalancers")),
        deployment_controller=_camel(props.get("DeploymentController")),
        launch_type=props.get("LaunchType"),
        platform_version=props.get("PlatformVersion"),
        propagate_tags=props.get("PropagateTags") or "NONE",
        network_configuration=_camel(props.get("NetworkConfiguration")),
    )
    return run_desired_tasks(service)


def update_service(
    cls: type[ecs.Service],
    original_resource: ecs.Service,
    new_resource_name: str,
    cloudformation_json: Any,
    account_id: str,
    region_name: str,
) -> ecs.Service:
    props = cloudformation_json["Properties"]
    backend = ecs.ecs_backends[account_id][region_name]
    service = backend.update_service(
        {
            "cluster": original_resource.cluster_name,
            "service": original_resource.name,
            "task_definition": _task_definition_name(props["TaskDefinition"]),
            "desired_count": int(props.get("DesiredCount") or 0),
        }
    )
    return run_desired_tasks(service)


def run_desired_tasks(service: ecs.Service) -> ecs.Service:
    """The service runs its task definition with every desired task: a completed deployment."""
    backend = ecs.ecs_backends[service._account_id][service.region_name]
    if service.task_definition:
        service.task_definition = backend.describe_task_definition(service.task_definition).arn
    desired = int(service.desired_count or 0)
    service.desired_count = service.running_count = desired
    service.pending_count = 0
    deployment_id = f"ecs-svc/{abs(hash((service.name, service.task_definition))) % 10**12}"
    now = utcnow()
    service.deployments = [
        {
            "createdAt": now,
            "desiredCount": desired,
            "failedTasks": 0,
            "id": deployment_id,
            "launchType": service.launch_type,
            "pendingCount": 0,
            "rolloutState": "COMPLETED",
            "rolloutStateReason": f"ECS deployment {deployment_id} completed.",
            "runningCount": desired,
            "status": "PRIMARY",
            "taskDefinition": service.task_definition,
            "updatedAt": now,
        }
    ]
    return service


# --- 4. load balancer and target group attributes --------------------------------------------------------------

_create_target_group = elbv2.FakeTargetGroup.create_from_cloudformation_json.__func__  # type: ignore[attr-defined]
_create_load_balancer = elbv2.FakeLoadBalancer.create_from_cloudformation_json.__func__  # type: ignore[attr-defined]


def _attributes(props: dict[str, Any], key: str) -> dict[str, Any]:
    return {a["Key"]: a["Value"] for a in props.get(key) or []}


def _applying(create: Any, key: str, modify: str) -> Any:
    """`create` (a resource's CloudFormation constructor), then the resource's `key` attribute list applied."""

    def create_with_attributes(cls: Any, name: str, cfn: Any, account_id: str, region_name: str, **kw: Any) -> Any:
        created = create(cls, name, cfn, account_id, region_name, **kw)
        attributes = _attributes(cfn["Properties"], key)
        if attributes:
            getattr(elbv2.elbv2_backends[account_id][region_name], modify)(created.arn, attributes)
        return created

    return classmethod(create_with_attributes)


create_target_group = _applying(_create_target_group, "TargetGroupAttributes", "modify_target_group_attributes")
create_load_balancer = _applying(_create_load_balancer, "LoadBalancerAttributes", "modify_load_balancer_attributes")


_balancer_attribute = elbv2.FakeLoadBalancer.get_cfn_attribute


def load_balancer_attribute(self: elbv2.FakeLoadBalancer, attribute_name: str) -> Any:
    if attribute_name == "LoadBalancerFullName":
        return self.arn.split(":loadbalancer/", 1)[1]
    return _balancer_attribute(self, attribute_name)


def target_group_has_attribute(cls: Any, attribute_name: str) -> bool:
    return attribute_name in ("TargetGroupFullName", "TargetGroupName")


def target_group_attribute(self: elbv2.FakeTargetGroup, attribute_name: str) -> Any:
    if attribute_name == "TargetGroupFullName":
        return "targetgroup/" + self.arn.split(":targetgroup/", 1)[1]
    if attribute_name == "TargetGroupName":
        return self.name
    from moto.cloudformation.exceptions import UnformattedGetAttTemplateException

    raise UnformattedGetAttTemplateException()


# --- 5. one-shot tasks run their command -----------------------------------------------------------------------

_run_task = ecs.EC2ContainerServiceBackend.run_task


def run_task(self: ecs.EC2ContainerServiceBackend, *args: Any, **kwargs: Any) -> list[ecs.Task]:
    tasks: list[ecs.Task] = _run_task(self, *args, **kwargs)
    for task in tasks:
        container = self.describe_task_definition(task.task_definition_arn).container_definitions[0]
        if container.get("command"):
            threading.Thread(target=_run_container, args=(self, task, container), daemon=True).start()
    return tasks


def _run_container(backend: ecs.EC2ContainerServiceBackend, task: ecs.Task, container: dict[str, Any]) -> None:
    secrets = secretsmanager_backends[backend.account_id][backend.region_name]
    env = {"PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}
    env.update({e["name"]: str(e["value"]) for e in container.get("environment") or [] if e})  # Number params
    for secret in container.get("secrets") or []:
        if secret:
            value = secrets.get_secret_value(secret["valueFrom"], version_id=None, version_stage=None)
            env[secret["name"]] = value["SecretString"]
    with tempfile.TemporaryDirectory() as cwd:  # no stray .env file is read
        try:
            done = subprocess.run(
                container["command"], cwd=cwd, env=env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S
            )
            code, reason = done.returncode, f"Essential container in task exited ({done.returncode})"
            sys.stderr.write(done.stdout + done.stderr)
        except Exception as exc:  # the task stops whatever happened
            code, reason = 137, f"Task failed: {type(exc).__name__}"
    (box,) = task.containers
    box.exitCode = code
    box.last_status = "STOPPED"
    task.stopped_reason = reason
    task.stop_code = "EssentialContainerExited"
    task.desired_status = "STOPPED"
    task.last_status = "STOPPED"


# --- 6. UsePreviousValue of a defaulted parameter ---------------------------------------------------------------


def resolve_update_parameters(self: Any, instance: Any, incoming_params: list[dict[str, Any]]) -> dict[str, str]:
    previous = {}
    if hasattr(instance, "resource_map"):  # a stack (not a stack set): its values, defaults included
        for key, value in instance.stack_parameters.items():
            previous[key] = ",".join(value) if isinstance(value, list) else str(value)
        previous.update(instance.parameters)
        # what the stack was created with, defaults included: a kept default is no change
        inputs = instance.resource_map.input_parameters
        inputs.update({k: v for k, v in previous.items() if k not in inputs})
    else:
        previous.update(instance.parameters)
    resolved = {p["ParameterKey"]: p["ParameterValue"] for p in incoming_params if "ParameterValue" in p}
    for p in incoming_params:
        if p.get("UsePreviousValue", False):
            resolved[p["ParameterKey"]] = previous[p["ParameterKey"]]
    return resolved


def install() -> None:
    if moto.__version__ != PINNED_MOTO:
        raise SystemExit(f"tests/aws/moto_server.py patches moto {PINNED_MOTO}; this is {moto.__version__}")
    parsing.get_references_from_template = references
    parsing.ResourceMap.build_resource_diff = build_resource_diff  # type: ignore[method-assign]
    ecs.TaskDefinition.create_from_cloudformation_json = classmethod(create_task_definition)  # type: ignore[assignment]
    ecs.EC2ContainerServiceBackend._calculate_task_resource_requirements = staticmethod(task_resource_requirements)  # type: ignore[assignment]
    ecs.TaskDefinition.update_from_cloudformation_json = classmethod(update_task_definition)  # type: ignore[assignment]
    ecs.Service.create_from_cloudformation_json = classmethod(create_service)  # type: ignore[assignment]
    ecs.Service.update_from_cloudformation_json = classmethod(update_service)  # type: ignore[assignment]
    elbv2.FakeTargetGroup.create_from_cloudformation_json = create_target_group  # type: ignore[assignment]
    elbv2.FakeLoadBalancer.create_from_cloudformation_json = create_load_balancer  # type: ignore[assignment]
    elbv2.FakeLoadBalancer.get_cfn_attribute = load_balancer_attribute  # type: ignore[method-assign]
    elbv2.FakeTargetGroup.get_cfn_attribute = target_group_attribute  # type: ignore[attr-defined]
    elbv2.FakeTargetGroup.has_cfn_attr = classmethod(
        lambda cls, attr: attr in ("TargetGroupFullName", "TargetGroupName")
    )  # type: ignore[attr-defined]
    ecs.EC2ContainerServiceBackend.run_task = run_task  # type: ignore[method-assign]
    cloudformation.CloudFormationBackend._resolve_update_parameters = resolve_update_parameters  # type: ignore[method-assign]
    # Tasks change state only when something happens to them (patch 5, or StopTask), never by being described.
    state_manager.set_transition("ecs::task", {"progression": "manual", "times": 10**9})


if __name__ == "__main__":
    install()
    main(sys.argv[1:])
