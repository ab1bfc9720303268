"""POST /api/desktop/login-authcode (contract-work D1): the recorded calls and the edge cases of `code`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from ccsm_core.tokens import TokenService

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES: list[dict[str, Any]] = orjson.loads((ROOT / "fixtures" / "examples.json").read_bytes())
AUTHCODE_CALLS = [c for e in EXAMPLES if e["endpoint"] == "POST /api/desktop/login-authcode" for c in e["calls"]]


def test_every_recorded_authcode_call_gets_the_recorded_status_and_body(auth_client) -> None:
    assert len(AUTHCODE_CALLS) == 4
    with auth_client() as client:
        for call in AUTHCODE_CALLS:
            r = client.post("/api/desktop/login-authcode", json=call["body"])
            assert r.status_code == call["status"], call["note"]
            expected = call["response"]
            actual = r.json()
            if isinstance(expected, dict) and isinstance(expected.get("accessToken"), str):
                assert actual["accessToken"].count(".") == 2
                actual = {**actual, "accessToken": expected["accessToken"]}
            assert actual == expected, call["note"]


def test_the_desktop_token_names_the_user_and_role(auth_client, auth_settings) -> None:
    with auth_client() as client:
        body = client.post("/api/desktop/login-authcode", json={"code": "444"}).json()
    claims = TokenService(auth_settings.jwt_secret).verify(body["accessToken"])
    assert (claims.sub, claims.role, claims.login) == (5, 3, "pwcourt")  # customers may log in, as before
    assert body["system_role"] == 3
    assert body["expiresIn"] == "8h"


@pytest.mark.parametrize("code", [" 888 ", 888, 888.0, ["888"]])
def test_the_code_is_read_like_string_value_trim(auth_client, code: Any) -> None:
    with auth_client() as client:
        r = client.post("/api/desktop/login-authcode", json={"code": code})
    assert r.status_code == 200
    assert r.json()["id"] == 3


@pytest.mark.parametrize("code", [None, "", "   ", []])
def test_an_empty_code_is_400_code_is_required(auth_client, code: Any) -> None:
    with auth_client() as client:
        r = client.post("/api/desktop/login-authcode", json={"code": code})
    assert r.status_code == 400
    assert r.json() == {"error": "code is required"}


@pytest.mark.parametrize("code", [{"a": 1}, True, "888' OR '1'='1"])
def test_an_odd_code_matches_nobody(auth_client, code: Any) -> None:
    with auth_client() as client:
        r = client.post("/api/desktop/login-authcode", json={"code": code})
    assert r.status_code == 200
    assert r.json() is None


def test_no_secret_with_auth_off_gives_null_token_fields(auth_client) -> None:
    with auth_client(auth_required=False, jwt_secret="") as client:
        body = client.post("/api/desktop/login-authcode", json={"code": "777"}).json()
    assert body == {
        "id": 2,
        "first_name": "Marco",
        "last_name": "Reyes",
        "login": "mreyes",
        "system_role": 2,
        "accessToken": None,
        "tokenType": None,
        "expiresIn": None,
    }
