"""The alpha environment on AWS (ECS Fargate behind an ALB) as one CloudFormation template, rendered from the
URL table (listener rules and priorities, target groups, ports) and from the timing chain in `topology`.

`python -m deploy.render` writes ecs/ccsm.yaml; tests/deploy re-renders it and fails on any drift. The template
is plain YAML with long-form intrinsics (`Ref`, `Fn::Sub`, ...), so any YAML reader can load it.
"""

from __future__ import annotations

import json
from typing import Any

from ccsm_core import metrics as m
from deploy.topology import (
    ALB_IDLE_TIMEOUT_S,
    ALB_SITE_CIDRS_MAX,
    DEFAULT_SERVICE,
    DEREGISTRATION_DELAY_S,
    SHUTDOWN_FORCE_MS,
    SHUTDOWN_GRACE_MS,
    STOP_TIMEOUT_S,
    AlbRule,
    ServiceDeploy,
    alb_rules,
    deployments,
    service_deploy,
)

Json = dict[str, Any]

# The auth service's audit event for a failed code login (ccsm_auth/login.py), which the code-login-failures metric
# filter counts (issue 12: detection of code guessing). The event carries no code.
CODE_LOGIN_FAILED = {"event": "auth.login.failed", "endpoint": "authcode"}
CODE_LOGIN_FAILURES = "CodeLoginFailures"
CODE_LOGIN_ALARM_COUNT = 20  # more than this many failed code logins in CODE_LOGIN_ALARM_PERIOD_S
CODE_LOGIN_ALARM_PERIOD_S = 300
FORBIDDEN_BODY = '{"error":"Forbidden"}'  # the error table's 403, as the ALB answers it for a restricted path
HEALTH_PATH = "/health"  # runbook §7: the target-group health check
HEALTHCHECK_CMD = ["CMD", "python", "/app/healthcheck.py"]  # the Dockerfile's HEALTHCHECK, same script
NO_VALUE = {"Ref": "AWS::NoValue"}
# Who may assume the task execution role and the task role: ECS tasks, nothing else.
ECS_TASKS_TRUST = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "ecs-tasks.amazonaws.com"}, "Action": "sts:AssumeRole"}],
}


def ref(name: str) -> Json:
    return {"Ref": name}


def sub(text: str) -> Json:
    return {"Fn::Sub": text}


def get_att(resource: str, attribute: str) -> Json:
    return {"Fn::GetAtt": [resource, attribute]}


def if_(condition: str, then: Any, otherwise: Any = NO_VALUE) -> Json:
    return {"Fn::If": [condition, then, otherwise]}


def skip(check: str, reason: str) -> Json:
    """A checkov skip, documented in place next to the resource it concerns."""
    return {"id": check, "comment": reason}


def _parameters() -> Json:
    def string(description: str, **extra: Any) -> Json:
        return {"Type": "String", "Description": description, **extra}

    params: Json = {
        "EnvironmentName": string(
            "Deployment environment; names every resource", Default="alpha", AllowedPattern="^[a-z][a-z0-9-]{1,15}$"
        ),
        "VpcId": {"Type": "AWS::EC2::VPC::Id", "Description": "The VPC of the load balancer and the tasks"},
        "PublicSubnetIds": {
            "Type": "List<AWS::EC2::Subnet::Id>",
            "Description": "At least two public subnets in different AZs, for the internet-facing ALB",
        },
        "AlbSubnetCidrs": {
            "Type": "CommaDelimitedList",
            "Description": "The CIDRs of PublicSubnetIds: the ALB's addresses lie in them, so the services believe "
            "X-Forwarded-For (TRUSTED_PROXIES) from these only, not from the rest of the VPC",
        },
        "DesktopSiteCidrs": {
            "Type": "CommaDelimitedList",
            "Default": "0.0.0.0/0",
            "Description": f"Up to {ALB_SITE_CIDRS_MAX} CIDRs of the sites where the desktops run: only they reach "
            "POST /api/desktop/login-authcode, everyone else gets 403. The default, 0.0.0.0/0, leaves it open",
        },
        "PrivateSubnetIds": {
            "Type": "List<AWS::EC2::Subnet::Id>",
            "Description": "Private subnets for the tasks (a NAT gateway or VPC endpoints reach ECR, logs, secrets)",
        },
        "CertificateArn": string("ACM certificate for the HTTPS listener", AllowedPattern="^arn:aws[a-z-]*:acm:.+"),
        "ImageRegistry": string(
            "Registry holding the ccsm-auth, ccsm-api and ccsm-ws-gateway repositories "
            "(<account>.dkr.ecr.<region>.amazonaws.com)"
        ),
    }
    for svc in deployments():
        params[f"{svc.logical}ImageTag"] = string(f"Image tag of {svc.image_repository} (a commit SHA, never latest)")
    params["MigrationImageTag"] = string(
        "Image tag of ccsm-api whose migrations the migration task applies; set it to the new tag and run the "
        "task before moving the service tags"
    )
    params.update(
        {
            "DbHost": string("MySQL host name"),
            "DbPort": {"Type": "Number", "Default": 3306, "Description": "MySQL port"},
            "DbName": string("MySQL database", Default="ccsm"),
            "DbUser": string("MySQL user"),
            "DatabaseSecurityGroupId": {
                "Type": "AWS::EC2::SecurityGroup::Id",
                "Description": "Security group of the MySQL instance; the tasks get ingress on DbPort",
            },
            "RedisUrl": string("redis:// or rediss:// URL of Redis 7 (no credentials in it)"),
            "RedisPort": {"Type": "Number", "Default": 6379, "Description": "Redis port"},
            "RedisSecurityGroupId": {
                "Type": "AWS::EC2::SecurityGroup::Id",
                "Description": "Security group of Redis; the tasks get ingress on RedisPort",
            },
            "DbPasswordSecretArn": string(
                "Secrets Manager secret or SSM SecureString parameter ARN holding DB_PASSWORD",
                AllowedPattern="^arn:aws[a-z-]*:(secretsmanager|ssm):.+",
            ),
            "JwtSecretArn": string(
                "Secret/parameter ARN holding JWT_SECRET (at least 32 bytes)",
                AllowedPattern="^arn:aws[a-z-]*:(secretsmanager|ssm):.+",
            ),
            "JwtSecretPreviousArn": string(
                "Secret/parameter ARN holding JWT_SECRET_PREVIOUS during a rotation; empty otherwise", Default=""
            ),
            "JiraBaseUrl": string("JIRA_BASE_URL; empty disables the Jira sync", Default=""),
            "JiraEmail": string("JIRA_EMAIL", Default=""),
            "JiraApiTokenSecretArn": string(
                "Secret/parameter ARN holding JIRA_API_TOKEN; empty without Jira", Default=""
            ),
            "CorsOrigins": string("CORS_ORIGINS: comma-separated exact origins of the web portal"),
            "MinTasks": {"Type": "Number", "Default": 2, "MinValue": 1, "Description": "Tasks per service, at least"},
            "MaxTasks": {"Type": "Number", "Default": 6, "MinValue": 1, "Description": "Tasks per service, at most"},
            "LogRetentionDays": {
                "Type": "Number",
                "Default": 30,
                "AllowedValues": [7, 14, 30, 60, 90, 180, 365],
                "Description": "CloudWatch Logs retention",
            },
            "AlarmTopicArn": string("SNS topic notified by the alarms; empty for none", Default=""),
        }
    )
    return params


def _conditions() -> Json:
    def not_empty(name: str) -> Json:
        return {"Fn::Not": [{"Fn::Equals": [ref(name), ""]}]}

    return {
        "HasJwtSecretPrevious": not_empty("JwtSecretPreviousArn"),
        "HasJira": not_empty("JiraBaseUrl"),
        "HasJiraToken": not_empty("JiraApiTokenSecretArn"),
        "HasAlarmTopic": not_empty("AlarmTopicArn"),
    }


def _environment(port: int) -> list[Any]:
    def env(name: str, value: Any) -> Json:
        return {"Name": name, "Value": value}

    return [
        env("NODE_ENV", "remote"),
        env("PORT", str(port)),
        env("HOST", "0.0.0.0"),  # noqa: S104 - the task's own interface; the security group is the boundary
        env("DB_HOST", ref("DbHost")),
        env("DB_PORT", ref("DbPort")),
        env("DB_USER", ref("DbUser")),
        env("DB_NAME", ref("DbName")),
        env("REDIS_URL", ref("RedisUrl")),
        env("REDIS_PREFIX", sub("ccsm:${EnvironmentName}:")),
        env("AUTH_REQUIRED", "true"),
        env("JWT_EXPIRES_IN", "8h"),
        env("BCRYPT_ROUNDS", "12"),
        env("USE_HELMET", "true"),
        env("CORS_ORIGINS", ref("CorsOrigins")),
        env("TRUSTED_PROXIES", {"Fn::Join": [",", ref("AlbSubnetCidrs")]}),
        env("SHUTDOWN_GRACE_MS", str(SHUTDOWN_GRACE_MS)),
        env("SHUTDOWN_FORCE_MS", str(SHUTDOWN_FORCE_MS)),
        env("LOG_LEVEL", "info"),
        env("METRICS_NAMESPACE", sub("CCSM/${EnvironmentName}")),
        if_("HasJira", env("JIRA_BASE_URL", ref("JiraBaseUrl"))),
        if_("HasJira", env("JIRA_EMAIL", ref("JiraEmail"))),
    ]


def _secrets() -> list[Any]:
    """Every secret by reference (valueFrom): ECS reads them at start; none is in `environment`."""
    return [
        {"Name": "DB_PASSWORD", "ValueFrom": ref("DbPasswordSecretArn")},
        {"Name": "JWT_SECRET", "ValueFrom": ref("JwtSecretArn")},
        if_("HasJwtSecretPrevious", {"Name": "JWT_SECRET_PREVIOUS", "ValueFrom": ref("JwtSecretPreviousArn")}),
        if_("HasJiraToken", {"Name": "JIRA_API_TOKEN", "ValueFrom": ref("JiraApiTokenSecretArn")}),
    ]


def _log_configuration(prefix: str) -> Json:
    return {
        "LogDriver": "awslogs",
        "Options": {
            "awslogs-group": ref("LogGroup"),
            "awslogs-region": ref("AWS::Region"),
            "awslogs-stream-prefix": prefix,
            # A slow log pipe must never block a request (the buffer drops lines instead, and says so).
            "mode": "non-blocking",
            "max-buffer-size": "4m",
        },
    }


def _alarm(
    name: Json,
    description: str,
    namespace: Json | str,
    metric: str,
    statistic: str,
    *,
    period: int,
    evaluation_periods: int,
    threshold: float,
    actions: Json,
    datapoints: int | None = None,
    dimensions: list[Json] | None = None,
    comparison: str = "GreaterThanOrEqualToThreshold",
    missing: str = "notBreaching",
) -> Json:
    """A CloudWatch alarm; by default it fires at `threshold` or more and missing data (no traffic) is no breach.
    A statistic such as `p99` is an extended statistic."""
    props: Json = {"AlarmName": name, "AlarmDescription": description, "Namespace": namespace, "MetricName": metric}
    if dimensions is not None:
        props["Dimensions"] = dimensions
    props["ExtendedStatistic" if statistic.startswith("p") else "Statistic"] = statistic
    props |= {"Period": period, "EvaluationPeriods": evaluation_periods}
    if datapoints is not None:
        props["DatapointsToAlarm"] = datapoints
    props |= {
        "Threshold": threshold,
        "ComparisonOperator": comparison,
        "TreatMissingData": missing,
        "AlarmActions": actions,
    }
    return {"Type": "AWS::CloudWatch::Alarm", "Properties": props}


def _service_namespace() -> Json:
    return sub("CCSM/${EnvironmentName}")


def _task_definition(family: str, container: Json, cpu: int, memory: int) -> Json:
    return {
        "Type": "AWS::ECS::TaskDefinition",
        "Properties": {
            "Family": sub(f"ccsm-${{EnvironmentName}}-{family}"),
            "Cpu": str(cpu),
            "Memory": str(memory),
            "NetworkMode": "awsvpc",
            "RequiresCompatibilities": ["FARGATE"],
            "RuntimePlatform": {"CpuArchitecture": "X86_64", "OperatingSystemFamily": "LINUX"},
            "ExecutionRoleArn": get_att("ExecutionRole", "Arn"),
            "TaskRoleArn": get_att("TaskRole", "Arn"),
            "ContainerDefinitions": [container],
        },
    }


def _service_resources(svc: ServiceDeploy) -> Json:
    L = svc.logical  # noqa: N806 - the logical-id stem, short because it is in every name below
    container: Json = {
        "Name": svc.name,
        "Image": sub(f"${{ImageRegistry}}/{svc.image_repository}:${{{L}ImageTag}}"),
        "Essential": True,
        "PortMappings": [{"ContainerPort": svc.port, "Protocol": "tcp"}],
        "Environment": _environment(svc.port),
        "Secrets": _secrets(),
        # SIGTERM, then SIGKILL after this: beyond SHUTDOWN_FORCE_MS and the process's own watchdog.
        "StopTimeout": STOP_TIMEOUT_S,
        "ReadonlyRootFilesystem": True,
        "HealthCheck": {"Command": HEALTHCHECK_CMD, "Interval": 15, "Timeout": 5, "Retries": 3, "StartPeriod": 20},
        "LogConfiguration": _log_configuration(svc.name),
    }
    if svc.nofile:
        container["Ulimits"] = [{"Name": "nofile", "SoftLimit": svc.nofile, "HardLimit": svc.nofile}]
    alarm_actions = if_("HasAlarmTopic", [ref("AlarmTopicArn")])
    target_group_dimensions = [
        {"Name": "LoadBalancer", "Value": get_att("LoadBalancer", "LoadBalancerFullName")},
        {"Name": "TargetGroup", "Value": get_att(f"{L}TargetGroup", "TargetGroupFullName")},
    ]
    listener_rules = [r.logical for r in alb_rules()]
    return {
        f"{L}SecurityGroup": {
            "Type": "AWS::EC2::SecurityGroup",
            "Properties": {
                "GroupDescription": sub(f"ccsm-${{EnvironmentName}} {svc.name} tasks"),
                "VpcId": ref("VpcId"),
                "SecurityGroupEgress": [
                    {
                        "Description": "MySQL",
                        "IpProtocol": "tcp",
                        "FromPort": ref("DbPort"),
                        "ToPort": ref("DbPort"),
                        "DestinationSecurityGroupId": ref("DatabaseSecurityGroupId"),
                    },
                    {
                        "Description": "Redis",
                        "IpProtocol": "tcp",
                        "FromPort": ref("RedisPort"),
                        "ToPort": ref("RedisPort"),
                        "DestinationSecurityGroupId": ref("RedisSecurityGroupId"),
                    },
                    {
                        "Description": "HTTPS: ECR, CloudWatch Logs, Secrets Manager/SSM, Jira",
                        "IpProtocol": "tcp",
                        "FromPort": 443,
                        "ToPort": 443,
                        "CidrIp": "0.0.0.0/0",
                    },
                ],
            },
        },
        f"{L}IngressFromAlb": {
            "Type": "AWS::EC2::SecurityGroupIngress",
            "Properties": {
                "Description": "From the load balancer, on the app port only",
                "GroupId": ref(f"{L}SecurityGroup"),
                "IpProtocol": "tcp",
                "FromPort": svc.port,
                "ToPort": svc.port,
                "SourceSecurityGroupId": ref("AlbSecurityGroup"),
            },
        },
        f"{L}ToDatabase": {
            "Type": "AWS::EC2::SecurityGroupIngress",
            "Properties": {
                "Description": sub(f"ccsm-${{EnvironmentName}} {svc.name} tasks"),
                "GroupId": ref("DatabaseSecurityGroupId"),
                "IpProtocol": "tcp",
                "FromPort": ref("DbPort"),
                "ToPort": ref("DbPort"),
                "SourceSecurityGroupId": ref(f"{L}SecurityGroup"),
            },
        },
        f"{L}ToRedis": {
            "Type": "AWS::EC2::SecurityGroupIngress",
            "Properties": {
                "Description": sub(f"ccsm-${{EnvironmentName}} {svc.name} tasks"),
                "GroupId": ref("RedisSecurityGroupId"),
                "IpProtocol": "tcp",
                "FromPort": ref("RedisPort"),
                "ToPort": ref("RedisPort"),
                "SourceSecurityGroupId": ref(f"{L}SecurityGroup"),
            },
        },
        f"{L}TargetGroup": {
            "Type": "AWS::ElasticLoadBalancingV2::TargetGroup",
            "Properties": {
                "VpcId": ref("VpcId"),
                "TargetType": "ip",
                "Protocol": "HTTP",
                "ProtocolVersion": "HTTP1",
                "Port": svc.port,
                "HealthCheckProtocol": "HTTP",
                "HealthCheckPath": HEALTH_PATH,
                "HealthCheckIntervalSeconds": 10,
                "HealthCheckTimeoutSeconds": 5,
                "HealthyThresholdCount": 2,
                "UnhealthyThresholdCount": 3,
                "Matcher": {"HttpCode": "200"},
                "TargetGroupAttributes": [
                    {"Key": "deregistration_delay.timeout_seconds", "Value": str(DEREGISTRATION_DELAY_S)},
                ],
                "Tags": [{"Key": "Name", "Value": sub(f"ccsm-${{EnvironmentName}}-{svc.name}")}],
            },
        },
        f"{L}TaskDefinition": _task_definition(svc.name, container, svc.cpu, svc.memory),
        f"{L}Service": {
            "Type": "AWS::ECS::Service",
            # A target group must be attached to the load balancer (through a listener or rule) first.
            "DependsOn": ["HttpsListener", *listener_rules],
            "Properties": {
                "ServiceName": sub(f"ccsm-${{EnvironmentName}}-{svc.name}"),
                "Cluster": ref("Cluster"),
                "TaskDefinition": ref(f"{L}TaskDefinition"),
                "LaunchType": "FARGATE",
                "PlatformVersion": "LATEST",
                "DesiredCount": ref("MinTasks"),
                "DeploymentController": {"Type": "ECS"},
                # Rolling: new tasks start and pass health checks before old ones stop; a deployment that
                # cannot get healthy rolls back by itself.
                "DeploymentConfiguration": {
                    "MinimumHealthyPercent": 100,
                    "MaximumPercent": 200,
                    "DeploymentCircuitBreaker": {"Enable": True, "Rollback": True},
                },
                "HealthCheckGracePeriodSeconds": 30,
                "NetworkConfiguration": {
                    "AwsvpcConfiguration": {
                        "AssignPublicIp": "DISABLED",
                        "Subnets": ref("PrivateSubnetIds"),
                        "SecurityGroups": [ref(f"{L}SecurityGroup")],
                    }
                },
                "LoadBalancers": [
                    {"ContainerName": svc.name, "ContainerPort": svc.port, "TargetGroupArn": ref(f"{L}TargetGroup")}
                ],
                "EnableECSManagedTags": True,
                "PropagateTags": "SERVICE",
            },
        },
        f"{L}ScalableTarget": {
            "Type": "AWS::ApplicationAutoScaling::ScalableTarget",
            "Properties": {
                "ServiceNamespace": "ecs",
                "ScalableDimension": "ecs:service:DesiredCount",
                "ResourceId": sub(f"service/${{Cluster}}/${{{L}Service.Name}}"),
                "MinCapacity": ref("MinTasks"),
                "MaxCapacity": ref("MaxTasks"),
            },
        },
        f"{L}ScalingPolicy": {
            "Type": "AWS::ApplicationAutoScaling::ScalingPolicy",
            "Properties": {
                "PolicyName": sub(f"ccsm-${{EnvironmentName}}-{svc.name}-cpu"),
                "PolicyType": "TargetTrackingScaling",
                "ScalingTargetId": ref(f"{L}ScalableTarget"),
                "TargetTrackingScalingPolicyConfiguration": {
                    "PredefinedMetricSpecification": {"PredefinedMetricType": "ECSServiceAverageCPUUtilization"},
                    "TargetValue": 60,
                    "ScaleOutCooldown": 60,
                    "ScaleInCooldown": 300,
                },
            },
        },
        f"{L}Target5xxAlarm": _alarm(
            sub(f"ccsm-${{EnvironmentName}}-{svc.name}-target-5xx"),
            f"{svc.name} answers 5xx",
            "AWS/ApplicationELB",
            "HTTPCode_Target_5XX_Count",
            "Sum",
            period=60,
            evaluation_periods=5,
            datapoints=3,
            threshold=5,
            actions=alarm_actions,
            dimensions=target_group_dimensions,
        ),
        f"{L}UnhealthyHostsAlarm": _alarm(
            sub(f"ccsm-${{EnvironmentName}}-{svc.name}-unhealthy-hosts"),
            f"a {svc.name} task fails the {HEALTH_PATH} check",
            "AWS/ApplicationELB",
            "UnHealthyHostCount",
            "Maximum",
            period=60,
            evaluation_periods=3,
            threshold=1,
            actions=alarm_actions,
            dimensions=target_group_dimensions,
        ),
        f"{L}ResponseTimeAlarm": _alarm(
            sub(f"ccsm-${{EnvironmentName}}-{svc.name}-p99"),
            f"{svc.name}'s target response time p99 stays above {svc.p99_alarm_s} s",
            "AWS/ApplicationELB",
            "TargetResponseTime",
            "p99",
            period=300,
            evaluation_periods=2,
            datapoints=2,
            threshold=svc.p99_alarm_s,
            comparison="GreaterThanThreshold",
            actions=alarm_actions,
            dimensions=target_group_dimensions,
        ),
        # From the services' own metric (ccsm_core.metrics): every task reports Ready each interval, so a
        # minute without it means no task is alive to say so, which counts as failing.
        f"{L}ReadyAlarm": _alarm(
            sub(f"ccsm-${{EnvironmentName}}-{svc.name}-not-ready"),
            f"a {svc.name} task's /ready checks fail (or no task reports)",
            _service_namespace(),
            m.READY,
            "Minimum",
            period=60,
            evaluation_periods=3,
            datapoints=2,
            threshold=1,
            comparison="LessThanThreshold",
            missing="breaching",
            actions=alarm_actions,
            dimensions=[{"Name": m.SERVICE, "Value": svc.name}],
        ),
    }


def _listener_rule(rule: AlbRule) -> Json:
    conditions: list[Json] = [{"Field": "path-pattern", "PathPatternConfig": {"Values": list(rule.patterns)}}]
    if rule.from_sites:
        conditions.append({"Field": "source-ip", "SourceIpConfig": {"Values": ref("DesktopSiteCidrs")}})
    action: Json = {"Type": "forward", "TargetGroupArn": ref(f"{service_deploy(rule.service).logical}TargetGroup")}
    if rule.deny:
        action = {
            "Type": "fixed-response",
            "FixedResponseConfig": {
                "StatusCode": "403",
                "ContentType": "application/json",
                "MessageBody": FORBIDDEN_BODY,
            },
        }
    return {
        "Type": "AWS::ElasticLoadBalancingV2::ListenerRule",
        "Properties": {
            "ListenerArn": ref("HttpsListener"),
            "Priority": rule.priority,
            "Conditions": conditions,
            "Actions": [action],
        },
    }


def _listener_rules() -> Json:
    """The URL table's rules (deploy.topology.alb_rules), the site-restricted paths with their 403 included."""
    return {rule.logical: _listener_rule(rule) for rule in alb_rules()}


def _shared_resources() -> Json:
    services = deployments()
    return {
        "LogGroup": {
            "Type": "AWS::Logs::LogGroup",
            "Metadata": {
                "checkov": {
                    "skip": [
                        skip(
                            "CKV_AWS_158",
                            "CloudWatch Logs encrypts at rest by default; the services log no secrets "
                            "(settings redact them), so a customer-managed KMS key adds nothing for alpha",
                        )
                    ]
                }
            },
            "Properties": {
                "LogGroupName": sub("/ccsm/${EnvironmentName}"),
                "RetentionInDays": ref("LogRetentionDays"),
            },
        },
        "Cluster": {
            "Type": "AWS::ECS::Cluster",
            "Properties": {
                "ClusterName": sub("ccsm-${EnvironmentName}"),
                "ClusterSettings": [{"Name": "containerInsights", "Value": "enabled"}],
            },
        },
        "ExecutionRole": {
            "Type": "AWS::IAM::Role",
            "Properties": {
                "Description": "ECS agent: pulls images, writes logs, reads the task secrets",
                "AssumeRolePolicyDocument": ECS_TASKS_TRUST,
                "ManagedPolicyArns": [
                    {"Fn::Sub": "arn:${AWS::Partition}:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"}
                ],
                "Policies": [
                    {
                        "PolicyName": "read-task-secrets",
                        "PolicyDocument": {
                            "Version": "2012-10-17",
                            "Statement": [
                                {
                                    "Effect": "Allow",
                                    "Action": ["secretsmanager:GetSecretValue", "ssm:GetParameters"],
                                    "Resource": [
                                        ref("DbPasswordSecretArn"),
                                        ref("JwtSecretArn"),
                                        if_("HasJwtSecretPrevious", ref("JwtSecretPreviousArn")),
                                        if_("HasJiraToken", ref("JiraApiTokenSecretArn")),
                                    ],
                                }
                            ],
                        },
                    }
                ],
            },
        },
        "TaskRole": {
            "Type": "AWS::IAM::Role",
            "Properties": {
                "Description": "The services themselves: they call no AWS API, so this role has no permissions",
                "AssumeRolePolicyDocument": ECS_TASKS_TRUST,
            },
        },
        "AlbSecurityGroup": {
            "Type": "AWS::EC2::SecurityGroup",
            "Metadata": {
                "checkov": {
                    "skip": [
                        skip(
                            "CKV_AWS_260",
                            "port 80 is open to the internet only to answer a 301 to HTTPS (the listener "
                            "forwards nothing); runbook §12: TLS enforced at the edge",
                        )
                    ]
                }
            },
            "Properties": {
                "GroupDescription": sub("ccsm-${EnvironmentName} load balancer"),
                "VpcId": ref("VpcId"),
                "SecurityGroupIngress": [
                    {
                        "Description": "HTTPS from the internet",
                        "IpProtocol": "tcp",
                        "FromPort": 443,
                        "ToPort": 443,
                        "CidrIp": "0.0.0.0/0",
                    },
                    {
                        "Description": "HTTP from the internet, redirected to HTTPS",
                        "IpProtocol": "tcp",
                        "FromPort": 80,
                        "ToPort": 80,
                        "CidrIp": "0.0.0.0/0",
                    },
                ],
                "SecurityGroupEgress": [
                    {
                        "Description": f"To the {svc.name} tasks",
                        "IpProtocol": "tcp",
                        "FromPort": svc.port,
                        "ToPort": svc.port,
                        "DestinationSecurityGroupId": ref(f"{svc.logical}SecurityGroup"),
                    }
                    for svc in services
                ],
            },
        },
        "LoadBalancer": {
            "Type": "AWS::ElasticLoadBalancingV2::LoadBalancer",
            "Metadata": {
                "checkov": {
                    "skip": [
                        skip(
                            "CKV_AWS_91",
                            "alpha: no access-log bucket yet; every request is logged by the services "
                            "(JSON access lines with request ids in CloudWatch Logs)",
                        ),
                    ]
                }
            },
            "Properties": {
                "Type": "application",
                "Scheme": "internet-facing",
                "IpAddressType": "ipv4",
                "Subnets": ref("PublicSubnetIds"),
                "SecurityGroups": [ref("AlbSecurityGroup")],
                "LoadBalancerAttributes": [
                    {"Key": "idle_timeout.timeout_seconds", "Value": str(ALB_IDLE_TIMEOUT_S)},
                    {"Key": "routing.http.drop_invalid_header_fields.enabled", "Value": "true"},
                    {"Key": "routing.http.desync_mitigation_mode", "Value": "defensive"},
                    {"Key": "deletion_protection.enabled", "Value": "true"},
                ],
            },
        },
        "HttpListener": {
            "Type": "AWS::ElasticLoadBalancingV2::Listener",
            "Properties": {
                "LoadBalancerArn": ref("LoadBalancer"),
                "Port": 80,
                "Protocol": "HTTP",
                "DefaultActions": [
                    {
                        "Type": "redirect",
                        "RedirectConfig": {"Protocol": "HTTPS", "Port": "443", "StatusCode": "HTTP_301"},
                    }
                ],
            },
        },
        "HttpsListener": {
            "Type": "AWS::ElasticLoadBalancingV2::Listener",
            "Properties": {
                "LoadBalancerArn": ref("LoadBalancer"),
                "Port": 443,
                "Protocol": "HTTPS",
                "SslPolicy": "ELBSecurityPolicy-TLS13-1-2-2021-06",
                "Certificates": [{"CertificateArn": ref("CertificateArn")}],
                # The URL table's default service answers everything no rule matches (incl. /health, /ready).
                "DefaultActions": [
                    {"Type": "forward", "TargetGroupArn": ref(f"{service_deploy(DEFAULT_SERVICE).logical}TargetGroup")}
                ],
            },
        },
    }


def _migration_and_monitoring() -> Json:
    api = service_deploy("api")
    container = {
        "Name": "migrate",
        "Image": sub(f"${{ImageRegistry}}/{api.image_repository}:${{MigrationImageTag}}"),
        "Essential": True,
        "Command": ["python", "-m", "ccsm_core", "migrate"],
        "Environment": _environment(api.port),
        "Secrets": _secrets(),
        "ReadonlyRootFilesystem": True,
        "LogConfiguration": _log_configuration("migrate"),
    }
    return {
        "MigrationTaskDefinition": _task_definition("migrate", container, 256, 512),
        "LoadBalancer5xxAlarm": _alarm(
            sub("ccsm-${EnvironmentName}-alb-5xx"),
            "the load balancer itself answers 5xx (no healthy target, target reset, timeout)",
            "AWS/ApplicationELB",
            "HTTPCode_ELB_5XX_Count",
            "Sum",
            period=60,
            evaluation_periods=5,
            datapoints=3,
            threshold=5,
            actions=if_("HasAlarmTopic", [ref("AlarmTopicArn")]),
            dimensions=[{"Name": "LoadBalancer", "Value": get_att("LoadBalancer", "LoadBalancerFullName")}],
        ),
        # Task restarts: ECS publishes a state-change event when a task stops; the ones that stopped because a
        # container exited or never started are written to a log group, counted by a metric filter, alarmed on.
        "TaskEventsLogGroup": {
            "Type": "AWS::Logs::LogGroup",
            "Metadata": {
                "checkov": {
                    "skip": [skip("CKV_AWS_158", "ECS task state-change events only; no secrets (see LogGroup)")]
                }
            },
            "Properties": {
                "LogGroupName": sub("/aws/events/ccsm-${EnvironmentName}-task-stops"),
                "RetentionInDays": ref("LogRetentionDays"),
            },
        },
        "TaskEventsLogPolicy": {
            "Type": "AWS::Logs::ResourcePolicy",
            "Properties": {
                "PolicyName": sub("ccsm-${EnvironmentName}-task-stops"),
                "PolicyDocument": sub(
                    '{"Version":"2012-10-17","Statement":[{"Effect":"Allow",'
                    '"Principal":{"Service":["events.amazonaws.com","delivery.logs.amazonaws.com"]},'
                    '"Action":["logs:CreateLogStream","logs:PutLogEvents"],'
                    '"Resource":"${TaskEventsLogGroup.Arn}"}]}'
                ),
            },
        },
        "TaskStoppedRule": {
            "Type": "AWS::Events::Rule",
            "Properties": {
                "Description": "ccsm tasks that stopped because a container exited or failed to start",
                "State": "ENABLED",
                "EventPattern": {
                    "source": ["aws.ecs"],
                    "detail-type": ["ECS Task State Change"],
                    "detail": {
                        "clusterArn": [get_att("Cluster", "Arn")],
                        "lastStatus": ["STOPPED"],
                        "stopCode": ["EssentialContainerExited", "TaskFailedToStart"],
                    },
                },
                "Targets": [{"Id": "task-stops-log", "Arn": get_att("TaskEventsLogGroup", "Arn")}],
            },
        },
        "TaskStopsMetricFilter": {
            "Type": "AWS::Logs::MetricFilter",
            "Properties": {
                "LogGroupName": ref("TaskEventsLogGroup"),
                "FilterPattern": '{ $.detail.lastStatus = "STOPPED" }',
                "MetricTransformations": [
                    {
                        "MetricNamespace": sub("CCSM/${EnvironmentName}"),
                        "MetricName": "TaskUnexpectedStops",
                        "MetricValue": "1",
                        "Unit": "Count",
                    }
                ],
            },
        },
        "TaskRestartsAlarm": _alarm(
            sub("ccsm-${EnvironmentName}-task-restarts"),
            "tasks keep stopping (a container exited or failed to start): a restart loop",
            sub("CCSM/${EnvironmentName}"),
            "TaskUnexpectedStops",
            "Sum",
            period=300,
            evaluation_periods=2,
            threshold=2,
            actions=if_("HasAlarmTopic", [ref("AlarmTopicArn")]),
        ),
    }


def json_filter(fields: dict[str, str]) -> str:
    """A CloudWatch Logs JSON filter pattern matching log lines whose fields have these exact values."""
    return "{ " + " && ".join(f'($.{k} = "{v}")' for k, v in fields.items()) + " }"


def _code_login_detection() -> Json:
    """Issue 12 item 1, detection: every failed code login is counted from the auth service's audit line and more
    than CODE_LOGIN_ALARM_COUNT of them in 5 minutes raise an alarm (a sweep of the code space, however slow)."""
    return {
        "CodeLoginFailuresMetricFilter": {
            "Type": "AWS::Logs::MetricFilter",
            "Properties": {
                "LogGroupName": ref("LogGroup"),
                "FilterPattern": json_filter(CODE_LOGIN_FAILED),
                "MetricTransformations": [
                    {
                        "MetricNamespace": _service_namespace(),
                        "MetricName": CODE_LOGIN_FAILURES,
                        "MetricValue": "1",
                        "DefaultValue": 0,
                        "Unit": "Count",
                    }
                ],
            },
        },
        "CodeLoginFailuresAlarm": _alarm(
            sub("ccsm-${EnvironmentName}-code-login-failures"),
            f"more than {CODE_LOGIN_ALARM_COUNT} failed desktop code logins in "
            f"{CODE_LOGIN_ALARM_PERIOD_S // 60} minutes: someone may be guessing codes",
            _service_namespace(),
            CODE_LOGIN_FAILURES,
            "Sum",
            period=CODE_LOGIN_ALARM_PERIOD_S,
            evaluation_periods=1,
            threshold=CODE_LOGIN_ALARM_COUNT,
            comparison="GreaterThanThreshold",
            actions=if_("HasAlarmTopic", [ref("AlarmTopicArn")]),
        ),
    }


# --- the dashboard --------------------------------------------------------------------------------------------

LB = "${LoadBalancer.LoadBalancerFullName}"
WIDGET_WIDTH, WIDGET_HEIGHT = 8, 6


def _target_group(svc: ServiceDeploy) -> str:
    return f"${{{svc.logical}TargetGroup.TargetGroupFullName}}"


def _search(metric: str, dimensions: tuple[str, ...], stat: str) -> str:
    keys = ",".join((m.SERVICE, *dimensions))
    return f"SEARCH('{{CCSM/${{EnvironmentName}},{keys}}} MetricName=\"{metric}\"', '{stat}', 60)"


def _widget(title: str, metrics: list[Any], stat: str = "Sum", **extra: Any) -> Json:
    return {
        "type": "metric",
        "width": WIDGET_WIDTH,
        "height": WIDGET_HEIGHT,
        "properties": {
            "title": title,
            "view": "timeSeries",
            "region": "${AWS::Region}",
            "stat": stat,
            "period": 60,
            "metrics": metrics,
            **extra,
        },
    }


def _searches(*searches: tuple[str, tuple[str, ...], str]) -> list[Any]:
    return [[{"expression": _search(*args), "id": f"e{i}"}] for i, args in enumerate(searches, 1)]


def dashboard_body() -> Json:
    """The dashboard (runbook §10, recommended): the ALB's and ECS's view of each service, then the services' own
    metrics. A JSON document with `${...}` for Fn::Sub to fill in (target group and load balancer names)."""
    services = deployments()

    def per_target_group(metric: str, **options: Any) -> list[Any]:
        rows: list[Any] = []
        for svc in services:
            row: list[Any] = ["AWS/ApplicationELB", metric, "TargetGroup", _target_group(svc), "LoadBalancer", LB]
            rows.append([*row, {"label": f"{svc.name} {options.get('stat', '')}".strip(), **options}])
        return rows

    def per_service(namespace: str, metric: str) -> list[Any]:
        return [
            [namespace, metric, "ClusterName", "${Cluster}", "ServiceName", f"${{{svc.logical}Service.Name}}"]
            for svc in services
        ]

    widgets = [
        _widget("ALB: requests per service", per_target_group("RequestCount")),
        _widget(
            "ALB: 4xx / 5xx per service",
            per_target_group("HTTPCode_Target_4XX_Count")
            + per_target_group("HTTPCode_Target_5XX_Count")
            + [["AWS/ApplicationELB", "HTTPCode_ELB_5XX_Count", "LoadBalancer", LB, {"label": "ALB 5xx"}]],
        ),
        _widget(
            "ALB: target response time p50 / p99 (s)",
            per_target_group("TargetResponseTime", stat="p50") + per_target_group("TargetResponseTime", stat="p99"),
        ),
        _widget("ECS: CPU % per service", per_service("AWS/ECS", "CPUUtilization"), stat="Average"),
        _widget("ECS: memory % per service", per_service("AWS/ECS", "MemoryUtilization"), stat="Average"),
        _widget("ECS: running tasks", per_service("ECS/ContainerInsights", "RunningTaskCount"), stat="Average"),
        _widget(
            "Requests by route family and status class",
            _searches((m.REQUESTS, (m.ROUTE_FAMILY, m.STATUS_CLASS), "Sum")),
        ),
        _widget(
            "Latency p99 by route family, worst task (ms)",
            _searches((m.LATENCY_P99, (m.ROUTE_FAMILY, m.STATUS_CLASS), "Maximum")),
        ),
        _widget(
            "Readiness (1 = every task ready)",
            [[_service_metric(m.READY, svc.name)] for svc in services],
            stat="Minimum",
        ),
        _widget(
            "Login failures",
            [
                *_searches((m.LOGIN_FAILURES, (m.ENDPOINT,), "Sum")),
                ["CCSM/${EnvironmentName}", CODE_LOGIN_FAILURES, {"label": "code logins (alarm)"}],
            ],
        ),
        _widget(
            "Gateway: open sockets, broadcasts, 1013 closes",
            [
                ["CCSM/${EnvironmentName}", name, m.SERVICE, service_deploy("ws-gateway").name]
                for name in (m.OPEN_SOCKETS, m.BROADCASTS, m.SLOW_CONSUMER_CLOSES)
            ],
        ),
        _widget(
            "Gateway: fan-out duration p99, worst task (ms)",
            [["CCSM/${EnvironmentName}", m.FANOUT_P99, m.SERVICE, service_deploy("ws-gateway").name]],
            stat="Maximum",
        ),
    ]
    return {"widgets": widgets}


def _service_metric(metric: str, service: str) -> Any:
    return ["CCSM/${EnvironmentName}", metric, m.SERVICE, service]


def _dashboard() -> Json:
    return {
        "Dashboard": {
            "Type": "AWS::CloudWatch::Dashboard",
            "Properties": {
                "DashboardName": sub("ccsm-${EnvironmentName}"),
                "DashboardBody": sub(json.dumps(dashboard_body(), separators=(",", ":"))),
            },
        }
    }


def _outputs() -> Json:
    api = service_deploy("api")
    outputs: Json = {
        "LoadBalancerDnsName": {
            "Description": "Point the backend's DNS name (CNAME/alias) here",
            "Value": get_att("LoadBalancer", "DNSName"),
        },
        "ClusterName": {"Value": ref("Cluster")},
        "MigrationTaskDefinition": {"Value": ref("MigrationTaskDefinition")},
        "TaskSubnets": {"Value": {"Fn::Join": [",", ref("PrivateSubnetIds")]}},
        "MigrationSecurityGroup": {"Value": ref(f"{api.logical}SecurityGroup")},
        "LogGroupName": {"Value": ref("LogGroup")},
        "DashboardName": {"Value": ref("Dashboard")},
        "HttpsListenerArn": {"Value": ref("HttpsListener")},
    }
    for svc in deployments():
        outputs[f"{svc.logical}ServiceName"] = {"Value": get_att(f"{svc.logical}Service", "Name")}
        outputs[f"{svc.logical}TargetGroupArn"] = {"Value": ref(f"{svc.logical}TargetGroup")}
    return outputs


def template() -> Json:
    resources: Json = {}
    resources.update(_shared_resources())
    resources.update(_listener_rules())
    for svc in deployments():
        resources.update(_service_resources(svc))
    resources.update(_migration_and_monitoring())
    resources.update(_code_login_detection())
    resources.update(_dashboard())
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": "CCSM backend (auth, api, ws-gateway) on ECS Fargate behind an internet-facing ALB. "
        "Generated by `python -m deploy.render` from core/ccsm_core/routing.py; do not edit by hand.",
        "Parameters": _parameters(),
        "Conditions": _conditions(),
        "Resources": resources,
        "Outputs": _outputs(),
    }
