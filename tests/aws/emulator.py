"""The AWS emulator of the tests: moto's server (tests/aws/moto_server.py) on a free loopback port, boto3 clients
pointed at it with fake credentials, and what the stack needs before it can be created (a VPC with two public and
two private subnets, the database's and Redis's security groups, the secrets, an imported ACM certificate)."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

import boto3
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.harness import ROOT, LineReader, free_port

REGION = "eu-west-1"
# Fake credentials for this process only (the emulator accepts any); nothing is read from the environment.
FAKE_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
VPC_CIDR = "10.20.0.0/16"
PUBLIC_CIDRS = ("10.20.0.0/24", "10.20.1.0/24")
PRIVATE_CIDRS = ("10.20.10.0/24", "10.20.11.0/24")
DOMAIN = "api.alpha.example.com"


class Emulator:
    def __init__(self) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.aws.moto_server", "-H", "127.0.0.1", "-p", str(self.port)],
            cwd=str(ROOT),
            env=_emulator_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.output = LineReader(self.proc, "moto server")
        try:
            self.output.wait_for("Running on", timeout=60)
        except BaseException:
            self.stop()
            raise

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, service: str) -> Any:
        return boto3.session.Session(region_name=REGION, **FAKE_CREDENTIALS).client(
            service, endpoint_url=self.endpoint_url
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.output.close()


def _emulator_env() -> dict[str, str]:
    import os

    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class Network:
    vpc_id: str
    public_subnets: list[str]
    private_subnets: list[str]
    database_sg: str
    redis_sg: str
    certificate_arn: str
    secrets: dict[str, str] = field(default_factory=dict)


def self_signed_certificate(domain: str) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domain)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(domain)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    pem_key = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), pem_key


def create_network(emulator: Emulator, name: str, secret_values: dict[str, str]) -> Network:
    ec2 = emulator.client("ec2")
    vpc = ec2.create_vpc(CidrBlock=VPC_CIDR)["Vpc"]["VpcId"]
    # Private tasks reach ECR, logs and secrets through VPC endpoints or a NAT: the VPC resolves names.
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsSupport={"Value": True})
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
    zones = [f"{REGION}a", f"{REGION}b"]

    def subnets(cidrs: tuple[str, ...]) -> list[str]:
        return [
            ec2.create_subnet(VpcId=vpc, CidrBlock=cidr, AvailabilityZone=zone)["Subnet"]["SubnetId"]
            for cidr, zone in zip(cidrs, zones, strict=True)
        ]

    def group(label: str) -> str:
        created = ec2.create_security_group(GroupName=f"{name}-{label}", Description=label, VpcId=vpc)
        return str(created["GroupId"])

    cert, key = self_signed_certificate(DOMAIN)
    certificate = emulator.client("acm").import_certificate(Certificate=cert, PrivateKey=key)["CertificateArn"]
    secretsmanager = emulator.client("secretsmanager")
    secrets = {
        label: secretsmanager.create_secret(Name=f"ccsm/{name}/{label}", SecretString=value)["ARN"]
        for label, value in secret_values.items()
    }
    return Network(
        vpc_id=vpc,
        public_subnets=subnets(PUBLIC_CIDRS),
        private_subnets=subnets(PRIVATE_CIDRS),
        database_sg=group("mysql"),
        redis_sg=group("redis"),
        certificate_arn=certificate,
        secrets=secrets,
    )
