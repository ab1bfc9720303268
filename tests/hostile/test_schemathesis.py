"""Schemathesis, driven by our own OpenAPI document, against the running service set: no input gives a 500,
and every response matches its documented schema and content type. Bounded and deterministic
(`derandomize=True`: the same examples every run), in both positive and negative generation modes.

Driven through Schemathesis's Python API (operation strategies + Hypothesis) rather than its pytest plugin,
which does not load under pytest 9.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from ccsm_core.settings import Settings
from tests.harness import ServiceProcess
from tests.hostile.conftest import admin_authorization

pytestmark = pytest.mark.slow

EXAMPLES_PER_OPERATION = 10  # per generation mode: ~1,000 requests over the 49 operations
UPSTREAM_FAILURES = {("POST", "/api/items/jira-sync"): 502}  # Jira unreachable, as this stack configures it


@schemathesis.check
def no_server_error(ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case) -> None:
    """No 5xx, except a documented upstream failure (jira-sync's 502 when Jira cannot be reached)."""
    key = (case.operation.method.upper(), case.operation.path)
    if response.status_code >= 500 and UPSTREAM_FAILURES.get(key) != response.status_code:
        raise AssertionError(f"{case.operation.label} answered {response.status_code}: {response.text[:300]}")


CHECKS = [no_server_error, response_schema_conformance, content_type_conformance]


def run_operation(
    operation: Any, mode: GenerationMode, base_url: str, headers: Callable[[], dict[str, str]], counter: list[int]
) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @hypothesis_settings(
        max_examples=EXAMPLES_PER_OPERATION,
        derandomize=True,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def check(case: schemathesis.Case) -> None:
        counter[0] += 1
        # a token per case: a generated PUT /api/users/1 may change the admin's password, which revokes the
        # tokens issued before it, and every later case would only exercise the 401
        case.call_and_validate(base_url=base_url, headers=headers(), checks=CHECKS)

    check()


def test_no_generated_input_gives_a_500_or_breaks_the_documented_schema(
    stack: ServiceProcess, hostile_settings: Settings
) -> None:
    schema = schemathesis.openapi.from_url(f"{stack.base_url}/api/openapi.json")
    failures: list[str] = []
    no_negative_inputs: list[str] = []
    counter = [0]
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 49
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                run_operation(operation, mode, stack.base_url, lambda: admin_authorization(hostile_settings), counter)
            except Unsatisfiable:
                no_negative_inputs.append(operation.label)  # nothing to invalidate (no parameters, no body)
            except (Exception, BaseExceptionGroup) as exc:  # Schemathesis reports a FailureGroup
                failures.append(f"{operation.label} [{mode.value}]: {str(exc)[:600]}")
    print(f"schemathesis: {counter[0]} examples over {len(operations)} operations")
    assert set(no_negative_inputs) <= {op.label for op in operations if op.method.upper() == "GET"}
    assert failures == [], "\n\n".join(failures)
    assert counter[0] >= len(operations) * EXAMPLES_PER_OPERATION
    assert stack.proc.poll() is None


class _Operation:
    def __init__(self, method: str, path: str) -> None:
        self.method, self.path, self.label = method, path, f"{method} {path}"


class _Case:
    def __init__(self, method: str, path: str) -> None:
        self.operation = _Operation(method, path)


class _Response:
    def __init__(self, status_code: int) -> None:
        self.status_code, self.text = status_code, "{}"


@pytest.mark.parametrize(
    ("method", "path", "status", "fails"),
    [
        ("GET", "/api/users", 500, True),
        ("POST", "/api/items/jira-sync", 500, True),
        ("POST", "/api/items/jira-sync", 502, False),
        ("GET", "/api/users", 502, True),
        ("GET", "/api/users", 404, False),
    ],
)
def test_the_server_error_check_allows_only_the_documented_upstream_failure(
    method: str, path: str, status: int, fails: bool
) -> None:
    case, response = _Case(method, path), _Response(status)
    if fails:
        with pytest.raises(AssertionError):
            no_server_error(None, response, case)  # type: ignore[arg-type]
    else:
        no_server_error(None, response, case)  # type: ignore[arg-type]
