"""The offline validators at their pinned versions (deploy/validate.py): hadolint, cfn-lint, checkov and the
Compose v2 binary accept the committed files, and the compose check does fail on a broken file."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy import validate

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", sorted(validate.CHECKS))
def test_the_validator_accepts_the_committed_files(name: str) -> None:
    result = validate.CHECKS[name]().run()
    assert result.returncode == 0, result.stdout + result.stderr


BAD_DOCKERFILE = "FROM python:latest\nRUN apt-get install -y curl\nCMD python -m ccsm_api\n"
BAD_TEMPLATE = (
    "AWSTemplateFormatVersion: '2010-09-09'\nResources:\n  Logs:\n    Type: AWS::Logs::LogGroup\n"
    "    Properties:\n      RetentionInDays: 3\n      Bogus: 1\n"
)


def test_hadolint_rejects_an_unpinned_root_dockerfile(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text(BAD_DOCKERFILE, encoding="utf-8")
    result = validate.hadolint(str(tmp_path / "Dockerfile")).run()
    assert result.returncode != 0
    assert "DL3007" in result.stdout + result.stderr  # `latest`


def test_cfn_lint_rejects_an_unknown_property(tmp_path: Path) -> None:
    (tmp_path / "t.yaml").write_text(BAD_TEMPLATE, encoding="utf-8")
    result = validate.cfn_lint(str(tmp_path / "t.yaml")).run()
    assert result.returncode != 0
    assert "Bogus" in result.stdout + result.stderr


def test_checkov_fails_a_dockerfile_without_user_or_healthcheck(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text(BAD_DOCKERFILE, encoding="utf-8")
    (tmp_path / "t.yaml").write_text(BAD_TEMPLATE, encoding="utf-8")
    result = validate.checkov(str(tmp_path / "t.yaml"), str(tmp_path / "Dockerfile")).run()
    assert result.returncode != 0
    assert "CKV_DOCKER_2" in result.stdout  # no HEALTHCHECK


def test_the_compose_validator_rejects_a_broken_compose_file(tmp_path: Path) -> None:
    broken = tmp_path / "compose.yaml"
    broken.write_text("services:\n  api:\n    image: ccsm-api:local\n    restartt: always\n", encoding="utf-8")
    result = validate.compose_config(str(broken)).run()
    assert result.returncode != 0
    assert "restartt" in result.stdout + result.stderr
