"""The image, built without a Docker engine: the Dockerfile's build stage is replayed on this machine (its COPY
lines into a scratch context, its RUN lines with its ENV), the runtime stage's files are placed the same way, and
the service then starts from that virtualenv alone and passes the image's own HEALTHCHECK command.
Only the base image differs (this machine's Python, of the same minor version; test_drift pins that)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from ccsm_core.settings import Settings
from deploy import validate
from deploy.topology import deployments
from tests.harness import ROOT, LineReader, free_port, settings_env

pytestmark = pytest.mark.slow

DOCKERFILE = (ROOT / "Dockerfile").read_text(encoding="utf-8")


def stages() -> dict[str, list[tuple[str, str]]]:
    """Instructions per stage, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    out: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        instruction, _, rest = line.strip().partition(" ")
        if instruction == "FROM":
            current = out.setdefault(rest.split(" AS ")[-1].strip(), [])
        current.append((instruction, rest.strip()))
    return out


def env_of(instructions: list[tuple[str, str]], args: dict[str, str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction, rest in instructions:
        if instruction == "ENV":
            for name, value in (part.split("=", 1) for part in shlex.split(rest)):
                env[name] = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), env.get(m.group(1), "")), value)
    return env


def dockerignore_allows(path: str) -> bool:
    allowed = [
        line[1:].rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines() if line.startswith("!")
    ]
    return any(path == a or path.startswith(a + "/") for a in allowed)


def compose_args(name: str) -> dict[str, str]:
    compose: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text(encoding="utf-8"))
    args: dict[str, str] = compose["services"][name]["build"]["args"]
    return args


def replay_build(context: Path, venv: Path, args: dict[str, str]) -> None:
    build = stages()["build"]
    defaults = {k: v for k, _, v in (rest.partition("=") for i, rest in build if i == "ARG")}
    args = {**defaults, **args}
    env = {**os.environ, **env_of(build, args)}
    # The base image's interpreter is this machine's; the venv lands in the scratch directory.
    env.update({"UV_PYTHON": sys.executable, "UV_PROJECT_ENVIRONMENT": str(venv)})
    env = {k: v for k, v in env.items() if k != "VIRTUAL_ENV"}
    # The image has uv on its PATH (copied from uv's image); here it is wherever `make` found or installed it,
    # which a fresh machine's PATH need not include.
    uv = Path(validate.uv())
    assert uv.is_absolute(), "uv is not installed: `make test` installs it"
    env["PATH"] = os.pathsep.join([str(uv.parent), env.get("PATH", "")])
    workdir = context
    for instruction, rest in build:
        if instruction == "WORKDIR":
            workdir = context / rest.lstrip("/")
            workdir.mkdir(parents=True, exist_ok=True)
        elif instruction == "COPY" and not rest.startswith("--from"):
            *sources, dest = rest.split()
            for source in sources:
                assert dockerignore_allows(source.rstrip("/")), f".dockerignore leaves {source} out of the context"
                target = workdir / dest
                if (ROOT / source).is_dir():  # Docker copies a directory's contents into the destination
                    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
                    shutil.copytree(ROOT / source, target, ignore=ignore, dirs_exist_ok=True)
                else:
                    if dest.endswith("/"):
                        target.mkdir(parents=True, exist_ok=True)
                    shutil.copy(ROOT / source, target)
        elif instruction == "RUN":
            command = re.sub(r"--mount=\S+\s*", "", rest)
            command = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], command)
            result = subprocess.run(command, shell=True, cwd=workdir, env=env, capture_output=True, text=True)  # noqa: S602
            assert result.returncode == 0, f"{command}\n{result.stdout}{result.stderr}"


@pytest.mark.parametrize("svc", deployments(), ids=lambda s: s.name)
def test_the_image_installs_each_service_from_the_lock_and_it_passes_the_healthcheck(
    svc: Any, settings: Settings, tmp_path: Path
) -> None:
    args = compose_args(svc.name)
    venv = tmp_path / "app" / ".venv"
    replay_build(tmp_path / "context", venv, args)

    runtime = stages()["runtime"]
    copies = [rest for i, rest in runtime if i == "COPY"]
    assert "--from=build /app/.venv /app/.venv" in copies  # only the venv crosses from the build stage
    assert [c for c in copies if c.startswith("--from")] == ["--from=build /app/.venv /app/.venv"]
    runs = " ".join(rest for i, rest in runtime if i == "RUN")
    assert not re.search(r"\b(apt-get|apk|pip|uv|gcc|make)\b", runs)  # no package manager or build tool
    assert [rest for i, rest in runtime if i == "USER"] == ["10001:10001"]  # never root
    (healthcheck,) = [c.split() for c in copies if not c.startswith("--from")]
    assert healthcheck == ["deploy/healthcheck.py", "/app/healthcheck.py"]
    assert dockerignore_allows(healthcheck[0])
    shutil.copy(ROOT / healthcheck[0], tmp_path / "app" / "healthcheck.py")
    image_env = env_of(runtime, {"SERVICE_MODULE": args["SERVICE_MODULE"], "SERVICE_PORT": args["SERVICE_PORT"]})
    assert image_env["CCSM_MODULE"] == svc.module
    assert image_env["PORT"] == str(svc.port)

    # MySQL 8's default auth (caching_sha2_password) without TLS needs PyMySQL's RSA path, i.e. cryptography.
    rsa = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import pymysql._auth as a; raise SystemExit(0 if a._have_cryptography else 1)",
        ],
        capture_output=True,
    )
    assert rsa.returncode == 0, rsa.stderr

    port = free_port()
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", **settings_env(settings), "PORT": str(port), "HOST": "127.0.0.1"}
    env.update({"PYTHONUNBUFFERED": "1", "LOG_LEVEL": "info"})  # info: readiness shows in uvicorn's lines
    proc = subprocess.Popen(
        [str(venv / "bin" / "python"), "-m", image_env["CCSM_MODULE"]],
        cwd=tmp_path / "app",
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = LineReader(proc, image_env["CCSM_MODULE"])
    try:
        lines.wait_for("Uvicorn running on", timeout=30)  # printed once the socket is bound
        (command,) = re.findall(r"^HEALTHCHECK .* CMD (\[.*\])$", DOCKERFILE, re.MULTILINE)
        argv = yaml.safe_load(command)
        assert argv == ["python", "/app/healthcheck.py"]
        check = subprocess.run(
            [str(venv / "bin" / "python"), str(tmp_path / "app" / "healthcheck.py")], env=env, capture_output=True
        )
        assert check.returncode == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(40)
        lines.close()
    assert code == 0, lines.lines[-10:]
