"""The emulator (one moto server for the session, fake credentials for this process only) and the stacks the
tests create in it: one read-only stack for the checks through the AWS APIs, and one fresh stack per deploy test."""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from ccsm_core.db import connect_sync
from ccsm_core.settings import Settings
from deploy.render import ROOT
from tests.aws.emulator import PUBLIC_CIDRS, Emulator, Network, create_network
from tests.harness import JWT_SECRET, RUN_ID

TEMPLATE = (ROOT / "ecs" / "ccsm.yaml").read_text(encoding="utf-8")
REGISTRY = "123456789012.dkr.ecr.eu-west-1.amazonaws.com"
SITES = "198.51.100.0/24,203.0.113.7/32"  # documentation ranges (RFC 5737): the desktops' sites
AWS_ENV = {
    # Fake credentials and no profile, config file or instance metadata: nothing real is ever found or used.
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "eu-west-1",
    "AWS_CONFIG_FILE": "/dev/null",
    "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    "AWS_EC2_METADATA_DISABLED": "true",
}
AWS_UNSET = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL", "AWS_ROLE_ARN")
_names = itertools.count(1)


@dataclass
class DeployDatabase:
    """A database of its own for the stacks' migration task, reached as a user with a password (a secret in the
    emulator's Secrets Manager, as on AWS), created for the session and dropped after it."""

    host: str
    port: int
    user: str
    password: str
    name: str


@dataclass
class Stack:
    name: str
    emulator: Emulator
    network: Network
    parameters: dict[str, str]
    outputs: dict[str, str] = field(default_factory=dict)

    def client(self, service: str) -> Any:
        return self.emulator.client(service)

    def refresh(self) -> Stack:
        (described,) = self.client("cloudformation").describe_stacks(StackName=self.name)["Stacks"]
        self.outputs = {o["OutputKey"]: o["OutputValue"] for o in described.get("Outputs", [])}
        self.parameters = {p["ParameterKey"]: p["ParameterValue"] for p in described["Parameters"]}
        return self

    def service_names(self) -> list[str]:
        return [self.outputs[f"{logical}ServiceName"] for logical in ("Auth", "Gateway", "Api")]


@pytest.fixture(scope="session")
def emulator() -> Iterator[Emulator]:
    with pytest.MonkeyPatch.context() as mp:
        for name in AWS_UNSET:
            mp.delenv(name, raising=False)
        for name, value in AWS_ENV.items():
            mp.setenv(name, value)
        server = Emulator()
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture(scope="session")
def deploy_database(settings: Settings) -> Iterator[DeployDatabase]:
    db = DeployDatabase(
        host=settings.db_host,
        port=settings.db_port,
        user=f"ccsm_deploy_{RUN_ID}",
        password=secrets.token_urlsafe(24),
        name=f"{settings.db_name}_deploy",
    )
    admin = connect_sync(settings, None)
    try:
        with admin.cursor() as cur:
            cur.execute("CREATE USER %s@'127.0.0.1' IDENTIFIED BY %s", (db.user, db.password))
            cur.execute("CREATE USER %s@'localhost' IDENTIFIED BY %s", (db.user, db.password))
            for host in ("127.0.0.1", "localhost"):
                # the runbook's DB user: DDL rights on its own database only (ecs/README.md)
                cur.execute(f"GRANT ALL PRIVILEGES ON `{db.name}`.* TO %s@%s", (db.user, host))
        yield db
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{db.name}`")
            for host in ("127.0.0.1", "localhost"):
                cur.execute("DROP USER IF EXISTS %s@%s", (db.user, host))
        admin.close()


def create_stack(
    emulator: Emulator, settings: Settings, database: DeployDatabase, tag: str = "v1", **overrides: str
) -> Stack:
    """A network, secrets and the stack from the committed template, with every image at `tag`."""
    environment = f"t{RUN_ID[:6]}{next(_names)}"
    network = create_network(emulator, environment, {"db-password": database.password, "jwt-secret": JWT_SECRET})
    parameters = {
        "EnvironmentName": environment,
        "VpcId": network.vpc_id,
        "PublicSubnetIds": ",".join(network.public_subnets),
        "AlbSubnetCidrs": ",".join(PUBLIC_CIDRS),
        "PrivateSubnetIds": ",".join(network.private_subnets),
        "CertificateArn": network.certificate_arn,
        "ImageRegistry": REGISTRY,
        "AuthImageTag": tag,
        "GatewayImageTag": tag,
        "ApiImageTag": tag,
        "MigrationImageTag": tag,
        "DbHost": database.host,
        "DbPort": str(database.port),
        "DbName": database.name,
        "DbUser": database.user,
        "DatabaseSecurityGroupId": network.database_sg,
        "RedisUrl": settings.redis_url,
        "RedisSecurityGroupId": network.redis_sg,
        "DbPasswordSecretArn": network.secrets["db-password"],
        "JwtSecretArn": network.secrets["jwt-secret"],
        "CorsOrigins": "https://portal.alpha.example.com",
        **overrides,
    }
    name = f"ccsm-{environment}"
    emulator.client("cloudformation").create_stack(
        StackName=name,
        TemplateBody=TEMPLATE,
        Capabilities=["CAPABILITY_IAM"],
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
    )
    return Stack(name, emulator, network, parameters).refresh()


@pytest.fixture(scope="session")
def stack(emulator: Emulator, settings: Settings, deploy_database: DeployDatabase) -> Stack:
    """The read-only stack: created once, never changed; its code login is limited to two sites."""
    return create_stack(emulator, settings, deploy_database, DesktopSiteCidrs=SITES)


__all__ = ["DeployDatabase", "Stack", "create_stack"]
