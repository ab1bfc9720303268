"""compose.yaml's variables and deploy/compose.py without an engine: every image compose starts or builds from is a
variable whose default is the official image (the Dockerfile's build args say the same), every variable is in
.env.example, the gateway's descriptor limit defaults to one an engine here grants, and compose's durations read
as the seconds a rolling replacement waits. The stack itself runs in tests/compose (`make test-compose`)."""

from __future__ import annotations

import re
import resource
from typing import Any

import pytest
import yaml

from deploy import dotenv
from deploy.compose import EDGE_FAIL_TIMEOUT_S, duration_s
from deploy.offline.images import official_images
from deploy.topology import service_deploy
from tests.harness import ROOT

COMPOSE_TEXT = (ROOT / "compose.yaml").read_text(encoding="utf-8")
DOCKERFILE = (ROOT / "Dockerfile").read_text(encoding="utf-8")
BUILT = {"ccsm-api", "ccsm-auth", "ccsm-ws-gateway"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE_TEXT)
    return loaded


def test_every_image_compose_starts_is_a_variable_defaulting_to_the_official_image(compose: dict[str, Any]) -> None:
    defaults = official_images()
    for name, service in compose["services"].items():
        image = service["image"]
        if "build" in service:
            repository, _, tag = image.partition(":")
            assert repository in BUILT, name
            assert tag == "${IMAGE_TAG:-local}", name
        else:
            (variable,) = re.findall(r"^\$\{([A-Z_]+_IMAGE):-[^}]+\}$", image)
            assert image == f"${{{variable}:-{defaults[variable]}}}", name
    assert {"MYSQL_IMAGE", "REDIS_IMAGE", "NGINX_IMAGE", "PYTHON_IMAGE", "UV_IMAGE"} == set(defaults)
    for official in defaults.values():
        assert re.fullmatch(r"[a-z0-9./-]+:\d[\w.-]*", official), official  # a version tag, never `latest`


def test_the_dockerfiles_base_images_are_build_args_with_the_defaults_compose_passes(compose: dict[str, Any]) -> None:
    args = dict(re.findall(r"^ARG ([A-Z_]+_IMAGE)=(\S+)$", DOCKERFILE, re.MULTILINE))
    defaults = official_images()
    assert args == {k: defaults[k] for k in ("PYTHON_IMAGE", "UV_IMAGE")}
    first_from = DOCKERFILE.index("\nFROM ")
    assert all(DOCKERFILE.index(f"ARG {k}=") < first_from for k in args)  # ARGs before FROM are usable in FROM
    for name, service in compose["services"].items():
        if "build" in service:
            for k in args:
                assert service["build"]["args"][k] == f"${{{k}:-{defaults[k]}}}", name


def test_the_dockerfile_fetches_no_frontend_from_a_registry() -> None:
    assert not re.search(r"^#\s*syntax\s*=", DOCKERFILE, re.MULTILINE | re.IGNORECASE)


def test_every_compose_variable_is_a_documented_knob_of_the_env_example() -> None:
    used = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", COMPOSE_TEXT))
    example = dotenv.read(ROOT / ".env.example")
    assert used == set(example)


def test_the_gateways_descriptor_limit_defaults_to_one_an_engine_started_here_grants(compose: dict[str, Any]) -> None:
    """The engine cannot raise a container's hard limit above its own (`error setting rlimit type 7`), and an
    engine started on this machine inherits this process's hard limit; ECS keeps the fleet's 65,536."""
    nofile = compose["services"]["ws-gateway"]["ulimits"]["nofile"]
    assert nofile["soft"] == nofile["hard"] == "${GATEWAY_NOFILE:-8192}"
    default = 8192
    assert dotenv.read(ROOT / ".env.example")["GATEWAY_NOFILE"] == str(default)
    assert default <= resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    assert (service_deploy("ws-gateway").nofile or 0) >= 65536


@pytest.mark.parametrize(("text", "seconds"), [("35s", 35.0), ("1m30s", 90.0), ("1h", 3600.0), ("500ms", 0.5)])
def test_a_compose_duration_reads_as_seconds(text: str, seconds: float) -> None:
    assert duration_s(text) == seconds


def test_nanoseconds_read_as_seconds_too() -> None:
    assert duration_s("35000000000") == 35.0


def test_the_rolling_replacement_waits_out_the_edges_own_fail_timeout() -> None:
    """roll waits `EDGE_FAIL_TIMEOUT_S` between replicas because the edge keeps nginx's default; were
    upstreams.conf to set its own, the wait would be wrong (a 502 when both replicas are skipped)."""
    upstreams = (ROOT / "edge" / "conf.d" / "upstreams.conf").read_text(encoding="utf-8")
    assert "fail_timeout" not in upstreams
    assert "max_fails" not in upstreams
    assert EDGE_FAIL_TIMEOUT_S == 10.0  # nginx's documented default


def test_the_api_runs_as_two_containers_under_one_name_at_fixed_addresses(compose: dict[str, Any]) -> None:
    api, twin = compose["services"]["api"], compose["services"]["api-b"]
    assert {k: v for k, v in twin.items() if k != "networks"} == {k: v for k, v in api.items() if k != "networks"}
    assert twin["networks"]["backend"]["aliases"] == ["api"]
    addresses = {s["networks"]["backend"]["ipv4_address"] for s in (api, twin)}
    assert addresses == {"${BACKEND_NETWORK:-172.30.40}.21", "${BACKEND_NETWORK:-172.30.40}.22"}
    assert set(compose["services"]["edge"]["depends_on"]) >= {"api", "api-b"}
