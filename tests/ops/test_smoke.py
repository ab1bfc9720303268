"""`make smoke` against a locally started service set: the three services as real processes behind Debian's
nginx with the committed edge config, i.e. the same shape as a deployment behind the ALB."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from ccsm_core.settings import Settings
from ops.smoke import main
from tests.deploy.nginx_process import running_nginx
from tests.harness import ADMIN, ROOT, ServiceProcess

pytestmark = pytest.mark.slow

CHECKS = 9


@pytest.fixture
def edge(fresh_db: Settings, tmp_path: Path) -> Iterator[str]:
    with ExitStack() as stack:
        procs = {}
        for name, module in (("auth", "ccsm_auth"), ("ws-gateway", "ccsm_gateway"), ("api", "ccsm_api")):
            proc = ServiceProcess(module, fresh_db)
            stack.callback(proc.stop)
            procs[name] = proc
        for proc in procs.values():
            proc.wait_started()
        procs["ws-gateway"].wait_for_line("subscribed to db-changed")
        yield stack.enter_context(running_nginx(tmp_path, {n: f"127.0.0.1:{p.port}" for n, p in procs.items()}))


def smoke_env(username: str, password: str, code: str) -> dict[str, str]:
    return {"SMOKE_USERNAME": username, "SMOKE_PASSWORD": password, "SMOKE_AUTHCODE": code}


def test_all_nine_checks_pass_against_the_local_deployment(edge: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--base-url", edge], smoke_env(ADMIN["username"], ADMIN["password"], "555"))
    out = capsys.readouterr().out
    assert code == 0, out
    lines = [line for line in out.splitlines() if line.startswith(("PASS", "FAIL"))]
    assert len(lines) == CHECKS
    assert all(line.startswith("PASS") for line in lines)
    assert "ms" in lines[0]
    assert f"smoke: {CHECKS} passed, 0 failed" in out
    # code 555 is the admin's (fixtures/seed.sql header): the line names the user the code logged in
    assert any("desktop" in line and "user id=1 login=admin" in line for line in lines), lines


def test_a_failing_check_makes_the_command_exit_non_zero(edge: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--base-url", edge], smoke_env(ADMIN["username"], "wrong-password", "555"))
    out = capsys.readouterr().out
    assert code == 1
    assert "FAIL POST /api/login returns a token" in out
    assert "PASS GET /health 200" in out


def test_missing_credentials_are_refused_before_any_request(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "ops.smoke", "--base-url", "http://127.0.0.1:9"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "SMOKE_USERNAME" in proc.stderr
