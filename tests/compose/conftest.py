"""The compose drills' session: a Docker engine (tests/compose/dockerd.py), the images (the official ones, or the
stand-ins of `make offline-images` where they cannot be pulled), then `make up` of a project of its own
(COMPOSE_PROJECT_NAME=ccsm-drill, its own env file, a free edge port and subnet), so a developer's stack, its
volume and its secrets are never touched. At the end the project goes with its volumes, and the engine with it
when this run started it.

Each phase's time and each check's figures are printed as they happen and again at the end."""

from __future__ import annotations

import ipaddress
import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from deploy import dotenv, engine
from deploy.compose import Stack, missing_images
from tests.compose.dockerd import running_engine
from tests.harness import ROOT, free_port

PROJECT = "ccsm-drill"
IMAGE_TAG = "drill"
APP_IMAGES = ("ccsm-api", "ccsm-auth", "ccsm-ws-gateway")
# Seed logins (fixtures/seed.sql header), loaded by the stack's `seed` job.
ADMIN = {"username": "admin", "password": "Admin#2025"}
AUTHCODE = "555"


@dataclass
class Report:
    config: pytest.Config
    lines: list[str] = field(default_factory=list)

    def line(self, text: str) -> None:
        self.lines.append(text)
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(text)

    @contextmanager
    def phase(self, name: str) -> Iterator[dict[str, str]]:
        """Times a phase; the dict it yields collects what is said about it."""
        notes: dict[str, str] = {}
        started = time.monotonic()
        try:
            yield notes
        finally:
            detail = "; ".join(f"{k}: {v}" for k, v in notes.items())
            self.line(f"phase {name:<14} {time.monotonic() - started:7.1f} s  {detail}")

    def check(self, name: str, **figures: Any) -> None:
        self.line(f"check {name:<40} " + ", ".join(f"{k}={v}" for k, v in figures.items()))


_REPORT_KEY = pytest.StashKey[Report]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_REPORT_KEY] = Report(config)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    report = config.stash.get(_REPORT_KEY, None)
    if report and report.lines:
        terminalreporter.section("compose drills: phases and checks")
        for text in report.lines:
            terminalreporter.write_line(text)


@pytest.fixture(scope="session")
def report(pytestconfig: pytest.Config) -> Report:
    return pytestconfig.stash[_REPORT_KEY]


def free_network() -> str:
    """The first three octets of a 172.30.x.0/24 no engine network uses (compose.yaml's BACKEND_NETWORK)."""
    ids = engine.docker("network", "ls", "--quiet").stdout.split()
    used = [
        ipaddress.ip_network(c["Subnet"])
        for n in engine.inspect(*ids, kind="network")
        for c in (n.get("IPAM") or {}).get("Config") or []
        if c.get("Subnet")
    ]
    for third in range(41, 255):
        if not any(ipaddress.ip_network(f"172.30.{third}.0/24").overlaps(u) for u in used):
            return f"172.30.{third}"
    raise RuntimeError("no free 172.30.x.0/24 for the drills' network")


def image_ids(names: list[str]) -> dict[str, str]:
    return {n: found[0]["Id"] for n in names if (found := engine.inspect(n, kind="image"))}


def dangling_volumes() -> set[str]:
    return set(engine.docker("volume", "ls", "--quiet", "--filter", "dangling=true").stdout.split())


@dataclass
class Drill:
    stack: Stack
    env: dict[str, str]
    base_url: str
    report: Report
    up_output: str
    dotenv_before: bytes | None
    dangling_before: set[str]
    workdir: Path

    def make(self, *targets: str, timeout: float = 1800, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["make", "--no-print-directory", *targets],
            cwd=ROOT,
            env={**self.env, **extra},
            capture_output=True,
            text=True,
            timeout=timeout,
        )


@pytest.fixture(scope="session")
def drill(report: Report, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Drill]:
    with ExitStack() as cleanup:
        with report.phase("engine") as notes:
            notes["dockerd"] = cleanup.enter_context(running_engine())
        workdir = tmp_path_factory.mktemp("compose")
        settings = {
            "CCSM_COMPOSE_ENV": str(workdir / "drill.env"),
            "COMPOSE_PROJECT_NAME": PROJECT,
            "EDGE_PORT": str(free_port()),
            "BACKEND_NETWORK": free_network(),
            "IMAGE_TAG": IMAGE_TAG,
        }
        patch = cleanup.enter_context(pytest.MonkeyPatch.context())
        for key, value in settings.items():
            patch.setenv(key, value)  # Stack() and every make target below see the drill's project
        stack = Stack()
        env = dict(os.environ)
        stack.run("down", "--volumes", "--remove-orphans", capture=True)  # what a crashed earlier run left
        cleanup.callback(lambda: stack.run("down", "--volumes", "--remove-orphans", capture=True, check=False))

        # Secrets with the characters a quoting mistake trips on (the stand-in's first-start SQL, the health check).
        dotenv.ensure(stack.env_file)
        dotenv.set_values(
            stack.env_file,
            {k: f"{secrets.token_urlsafe(24)}'\\\"q" for k in ("MYSQL_ROOT_PASSWORD", "DB_PASSWORD")},
        )

        with report.phase("images") as notes:
            missing = missing_images(stack)
            if missing:
                notes["unreachable"] = ", ".join(image for image, _ in missing)
                # `make up` stops before building and says what to do.
                refused = subprocess.run(
                    ["make", "--no-print-directory", "up"], cwd=ROOT, env=env, capture_output=True, text=True
                )
                assert refused.returncode != 0
                assert "make offline-images" in refused.stderr, refused.stderr
                built = subprocess.run(
                    ["make", "--no-print-directory", "offline-images"],
                    cwd=ROOT,
                    env=env,
                    capture_output=True,
                    text=True,
                )
                assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
                notes["offline-images"] = built.stdout.strip().splitlines()[-1]
                assert missing_images(stack) == []
            notes["using"] = ", ".join(stack.images_needed())

        superseded = image_ids([f"{name}:{IMAGE_TAG}" for name in APP_IMAGES])
        run_env_file = ROOT / ".env"  # what `make run` reads: `make up` must leave it alone
        dotenv_before = run_env_file.read_bytes() if run_env_file.exists() else None
        dangling_before = dangling_volumes()
        with report.phase("make up") as notes:
            up = subprocess.run(
                ["make", "--no-print-directory", "up"], cwd=ROOT, env=env, capture_output=True, text=True
            )
            notes["exit"] = str(up.returncode)
        if up.returncode != 0:
            raise RuntimeError(f"make up failed ({up.returncode}):\n{up.stdout[-4000:]}\n{up.stderr[-4000:]}")
        rebuilt = image_ids(list(superseded))
        for name, old in superseded.items():  # the previous run's images, replaced by this build: tidy them up
            if rebuilt.get(name) != old:
                engine.docker("image", "rm", old, check=False)

        yield Drill(
            stack=stack,
            env=env,
            base_url=stack.edge_url(),
            report=report,
            up_output=up.stdout + up.stderr,
            dotenv_before=dotenv_before,
            dangling_before=dangling_before,
            workdir=workdir,
        )
