"""compose's env file (deploy/dotenv.py): `.env.compose`, written with fresh secrets, never a file `make run` reads;
the `.env` an earlier `make up` wrote moves there with its secrets; values are set in place."""

from __future__ import annotations

from pathlib import Path

import pytest

from ccsm_core.settings import load_settings
from deploy import dotenv
from tests.harness import ROOT

EXAMPLE = (ROOT / ".env.example").read_text(encoding="utf-8")


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    (tmp_path / ".env.example").write_text(EXAMPLE, encoding="utf-8")
    return tmp_path


def test_the_writer_fills_every_empty_secret_with_a_fresh_private_value(checkout: Path, tmp_path: Path) -> None:
    dotenv.main(checkout)
    first = dotenv.read(checkout / ".env.compose")
    assert all(len(first[name]) >= 48 for name in dotenv.GENERATED)
    assert first["JIRA_API_TOKEN"] == ""
    assert (checkout / ".env.compose").stat().st_mode & 0o077 == 0
    assert not (checkout / ".env").exists()
    other = tmp_path / "other"
    other.mkdir()
    (other / ".env.example").write_text(EXAMPLE, encoding="utf-8")
    dotenv.main(other)
    assert all(dotenv.read(other / ".env.compose")[n] != first[n] for n in dotenv.GENERATED)


def test_an_existing_file_is_kept(checkout: Path) -> None:
    dotenv.main(checkout)
    before = (checkout / ".env.compose").read_text()
    assert dotenv.ensure(checkout / ".env.compose", checkout) is False
    assert (checkout / ".env.compose").read_text() == before


def test_make_run_reads_nothing_of_the_compose_env_file(checkout: Path) -> None:
    dotenv.main(checkout)
    assert dotenv.read(checkout / ".env.compose")["NODE_ENV"] == "remotetest"
    settings = load_settings("test", environ={}, cwd=checkout)
    assert settings.node_env == "local"
    assert settings.db_password == ""


def test_the_env_file_an_earlier_make_up_wrote_moves_there_with_its_secrets(checkout: Path) -> None:
    legacy = dotenv.fill(EXAMPLE)
    assert legacy.startswith(dotenv.MARKER)
    (checkout / ".env").write_text(legacy, encoding="utf-8")
    assert dotenv.ensure(checkout / ".env.compose", checkout) is True
    assert not (checkout / ".env").exists()  # `make run` no longer reads NODE_ENV=remotetest and its DB_PASSWORD
    assert (checkout / ".env.compose").read_text(encoding="utf-8") == legacy  # the volume's passwords still work


def test_a_hand_written_env_file_is_left_alone(checkout: Path) -> None:
    (checkout / ".env").write_text("DB_PASSWORD=mine\n", encoding="utf-8")
    dotenv.ensure(checkout / ".env.compose", checkout)
    assert (checkout / ".env").read_text(encoding="utf-8") == "DB_PASSWORD=mine\n"
    assert dotenv.read(checkout / ".env.compose")["DB_PASSWORD"] != "mine"


def test_values_are_set_in_place_and_new_keys_appended(checkout: Path) -> None:
    target = checkout / ".env.compose"
    dotenv.main(checkout)
    dotenv.set_values(target, {"MYSQL_IMAGE": "ccsm-offline/mariadb:10.11", "NEW_KNOB": "1"})
    lines = target.read_text(encoding="utf-8").splitlines()
    assert lines.count("MYSQL_IMAGE=ccsm-offline/mariadb:10.11") == 1
    assert lines[-1] == "NEW_KNOB=1"
    assert len(lines) == len(EXAMPLE.splitlines()) + 1
    assert target.stat().st_mode & 0o077 == 0


def test_another_env_file_can_be_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CCSM_COMPOSE_ENV", str(tmp_path / "drill.env"))
    assert dotenv.env_file() == tmp_path / "drill.env"
    monkeypatch.delenv("CCSM_COMPOSE_ENV")
    assert dotenv.env_file() == ROOT / ".env.compose"
