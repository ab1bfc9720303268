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


def test_the_compose_validator_rejects_a_broken_compose_file(tmp_path: Path) -> None:
    broken = tmp_path / "compose.yaml"
    broken.write_text("services:\n  api:\n    image: ccsm-api:local\n    restartt: always\n", encoding="utf-8")
    result = validate.compose_config(str(broken)).run()
    assert result.returncode != 0
    assert "restartt" in result.stdout + result.stderr
