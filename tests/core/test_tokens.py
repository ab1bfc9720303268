"""HS256 tokens (core/ccsm_core/tokens.py): the old backend's vectors, every way a token can be wrong, rotation."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import pytest

from ccsm_core.tokens import (
    DESKTOP_SCOPE,
    LEEWAY_S,
    MAX_TOKEN_BYTES,
    Claims,
    TokenError,
    TokenService,
    TokenSubjectError,
    bearer_token,
    key_id,
)

# ../shared/spec/interop-vectors.json: made by jsonwebtoken 9 in the old backend.
VECTOR_SECRET = "ccsm-interop-test-secret-0123456789abcdef"
VECTORS = {
    "admin_valid_until_2126": (
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
        "eyJzdWIiOjEsInJvbGUiOjEsImxvZ2luIjoiYWRtaW4iLCJpYXQiOjE3OTU2NjYyNjUsImV4cCI6NDk1MTQyNjI2NX0."
        "EE1RU5YQfqnjbYHbLKfSQb-gyaSqs-J_-ipnkKFTJCc"
    ),
    "employee_valid_until_2126": (
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
        "eyJzdWIiOjIsInJvbGUiOjIsImxvZ2luIjoibXJleWVzIiwiaWF0IjoxNzk1NjY2MjY1LCJleHAiOjQ5NTE0MjYyNjV9."
        "0-7sRUAayKf-SM4gd-ODV3WCKWAQ2Y6n8VilHrO2Ox4"
    ),
    "admin_expired": (
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
        "eyJzdWIiOjEsInJvbGUiOjEsImxvZ2luIjoiYWRtaW4iLCJpYXQiOjE3OTU2NjYyNjUsImV4cCI6MTc5NTY2NjI2Nn0."
        "r1ly8wtwIfv_zg7GBVVEaiSonmjO0COzXkrhHEZ7bJk"
    ),
    "admin_signed_with_another_secret": (
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
        "eyJzdWIiOjEsInJvbGUiOjEsImxvZ2luIjoiYWRtaW4iLCJpYXQiOjE3OTU2NjYyNjUsImV4cCI6NDk1MTQyNjI2NX0."
        "52R21JvVlTFdnYKBTI8rPK2Th6U3u32QIfqCEF3nEZY"
    ),
}

SECRET = "current-secret-that-is-long-enough-0123456789"
PREVIOUS = "previous-secret-that-is-long-enough-987654321"
THIRD = "some-third-secret-nobody-configured-000000000"


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def forge(header: dict[str, Any], payload: dict[str, Any], secret: str = SECRET, digest: Any = hashlib.sha256) -> str:
    """A token built independently of the code under test."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    sig = hmac.new(secret.encode(), signing_input.encode(), digest).digest()
    return f"{signing_input}.{b64(sig)}"


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": 1, "role": 1, "login": "admin", "iat": now, "exp": now + 3600, **overrides}


HS256 = {"alg": "HS256", "typ": "JWT"}


# --- the old backend's vectors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "sub", "role", "login"),
    [("admin_valid_until_2126", 1, 1, "admin"), ("employee_valid_until_2126", 2, 2, "mreyes")],
)
def test_the_old_backends_valid_tokens_are_accepted(name: str, sub: int, role: int, login: str) -> None:
    c = TokenService(VECTOR_SECRET).verify(VECTORS[name])
    assert (c.sub, c.role, c.login, c.kid) == (sub, role, login, None)
    assert c.exp == 4951426265


@pytest.mark.parametrize("name", ["admin_expired", "admin_signed_with_another_secret"])
def test_the_old_backends_bad_tokens_are_rejected(name: str) -> None:
    with pytest.raises(TokenError):
        TokenService(VECTOR_SECRET).verify(VECTORS[name])


def test_the_old_vectors_pass_as_the_previous_secret_during_a_rotation() -> None:
    svc = TokenService(SECRET, previous=VECTOR_SECRET)
    assert svc.verify(VECTORS["admin_valid_until_2126"]).sub == 1
    with pytest.raises(TokenError):
        svc.verify(VECTORS["admin_signed_with_another_secret"])


# --- what we issue -----------------------------------------------------------------------------------------------


def test_issued_tokens_have_the_old_claims_with_numeric_sub_and_a_kid_header() -> None:
    token = TokenService(SECRET, expires_seconds=1800).issue(7, 2, "mreyes", now=1_800_000_000.9)
    header_b64, payload_b64, sig = token.split(".")
    header = json.loads(base64.urlsafe_b64decode(header_b64 + "=="))
    payload = json.loads(base64.urlsafe_b64decode(payload_b64 + "=="))
    assert header == {"alg": "HS256", "typ": "JWT", "kid": key_id(SECRET)}
    # The old claims, plus the issue instant in milliseconds (a private claim jsonwebtoken and the clients ignore).
    assert payload == {
        "sub": 7,
        "role": 2,
        "login": "mreyes",
        "iat": 1_800_000_000,
        "exp": 1_800_001_800,
        "iat_ms": 1_800_000_000_900,
    }
    expected = hmac.new(SECRET.encode(), f"{header_b64}.{payload_b64}".encode(), hashlib.sha256).digest()
    assert sig == b64(expected)  # plain HS256: jsonwebtoken verifies it with the same secret


def test_the_kid_does_not_reveal_the_secret() -> None:
    assert SECRET not in key_id(SECRET)
    assert key_id(SECRET) != key_id(PREVIOUS)
    assert len(key_id(SECRET)) == 16


def test_an_issued_token_round_trips() -> None:
    svc = TokenService(SECRET)
    c = svc.verify(svc.issue(5, 3, "pwcourt"))
    assert (c.sub, c.role, c.login, c.kid) == (5, 3, "pwcourt", key_id(SECRET))


def test_a_null_role_round_trips_as_none() -> None:
    svc = TokenService(SECRET)
    assert svc.verify(svc.issue(5, None, "x")).role is None


def test_issuing_without_a_secret_raises() -> None:
    with pytest.raises(TokenError):
        TokenService("").issue(1, 1, "admin")


# --- everything that must be refused -----------------------------------------------------------------------------


def test_alg_none_is_refused_with_or_without_a_signature() -> None:
    unsigned = f"{b64(json.dumps({'alg': 'none', 'typ': 'JWT'}).encode())}.{b64(json.dumps(claims()).encode())}."
    with pytest.raises(TokenError):
        TokenService(SECRET).verify(unsigned)
    with pytest.raises(TokenError):
        TokenService(SECRET).verify(forge({"alg": "none", "typ": "JWT"}, claims()))
    with pytest.raises(TokenError):
        TokenService(SECRET).verify(forge({"alg": "None", "typ": "JWT"}, claims()))


@pytest.mark.parametrize(("alg", "digest"), [("HS512", hashlib.sha512), ("HS384", hashlib.sha384)])
def test_other_hmac_algorithms_are_refused_even_with_the_right_secret(alg: str, digest: Any) -> None:
    with pytest.raises(TokenError):
        TokenService(SECRET).verify(forge({"alg": alg, "typ": "JWT"}, claims(), digest=digest))


@pytest.mark.parametrize("alg", ["RS256", "ES256", "PS256", "EdDSA", "hs256", "", None, 256])
def test_any_other_alg_header_is_refused(alg: Any) -> None:
    with pytest.raises(TokenError):
        TokenService(SECRET).verify(forge({"alg": alg, "typ": "JWT"}, claims()))


def test_a_missing_alg_is_refused() -> None:
    with pytest.raises(TokenError):
        TokenService(SECRET).verify(forge({"typ": "JWT"}, claims()))


def test_a_wrong_secret_is_refused() -> None:
    with pytest.raises(TokenError):
        TokenService(SECRET).verify(forge(HS256, claims(), secret=THIRD))


def test_an_expired_token_is_refused_after_the_leeway_only() -> None:
    now = 2_000_000_000
    token = forge(HS256, claims(iat=now - 100, exp=now))
    svc = TokenService(SECRET)
    assert svc.verify(token, now=now + LEEWAY_S - 1).sub == 1
    with pytest.raises(TokenError):
        svc.verify(token, now=now + LEEWAY_S)
    assert LEEWAY_S <= 30  # the issue allows at most 30 s


def test_a_token_without_exp_is_refused() -> None:
    payload = claims()
    del payload["exp"]
    with pytest.raises(TokenError):
        TokenService(SECRET).verify(forge(HS256, payload))


@pytest.mark.parametrize("exp", ["4951426265", None, True, 1e400, float("nan")])
def test_a_non_numeric_exp_is_refused(exp: Any) -> None:
    with pytest.raises(TokenError):
        TokenService(SECRET).verify(forge(HS256, claims(exp=exp)))


def test_a_token_not_yet_valid_is_refused() -> None:
    with pytest.raises(TokenError):
        TokenService(SECRET).verify(forge(HS256, claims(nbf=int(time.time()) + 600)))


def test_a_tampered_payload_is_refused() -> None:
    token = TokenService(SECRET).issue(2, 2, "mreyes")
    header, _, sig = token.split(".")
    promoted = b64(json.dumps(claims(sub=2, role=1, login="mreyes")).encode())
    with pytest.raises(TokenError):
        TokenService(SECRET).verify(f"{header}.{promoted}.{sig}")


def test_a_tampered_header_is_refused() -> None:
    token = TokenService(SECRET).issue(2, 2, "mreyes")
    _, payload, sig = token.split(".")
    with pytest.raises(TokenError):
        TokenService(SECRET).verify(f"{b64(json.dumps(HS256).encode())}.{payload}.{sig}")


def test_a_non_canonical_signature_encoding_is_refused() -> None:
    """43 base64url characters carry 258 bits for a 256-bit MAC: the last one has two spare bits. Setting them
    gives a different string for the same bytes; jws compares the strings, and so do we."""
    token = forge(HS256, claims())
    head, payload, sig = token.rsplit(".", 2)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    twin = sig[:-1] + alphabet[alphabet.index(sig[-1]) ^ 1]
    assert base64.urlsafe_b64decode(twin + "=") == base64.urlsafe_b64decode(sig + "=")
    assert TokenService(SECRET).verify(token).sub == 1
    with pytest.raises(TokenError):
        TokenService(SECRET).verify(f"{head}.{payload}.{twin}")


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        ".",
        "..",
        "abc",
        "a.b",
        "a.b.c.d",
        "!!!.???.***",
        "eyJhbGciOiJIUzI1NiJ9.e30.",
        "e30.e30.e30",
        "W10.e30.AAAA",  # header is a JSON array
        "bnVsbA.e30.AAAA",  # header is JSON null
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.bm90IGpzb24.AAAA",
        "\u00e9\u00e9.\u00e9.\u00e9",
        "a" * 5,
        "a.b.c\n",
    ],
)
def test_garbage_is_a_token_error_never_another_exception(garbage: str) -> None:
    with pytest.raises(TokenError):
        TokenService(SECRET).verify(garbage)


def test_a_trailing_newline_after_a_valid_signature_is_refused() -> None:
    token = forge(HS256, claims())
    with pytest.raises(TokenError):
        TokenService(SECRET).verify(token + "\n")


def test_a_100_kb_token_is_refused_before_any_decoding() -> None:
    huge = forge(HS256, claims(padding="x" * 100_000))
    assert len(huge) > MAX_TOKEN_BYTES
    started = time.perf_counter()
    with pytest.raises(TokenError):
        TokenService(SECRET).verify(huge)
    assert time.perf_counter() - started < 0.05


def test_a_non_string_token_is_refused() -> None:
    with pytest.raises(TokenError):
        TokenService(SECRET).verify(b"abc.def.ghi")  # type: ignore[arg-type]


def test_without_any_secret_nothing_verifies() -> None:
    with pytest.raises(TokenError):
        TokenService("").verify(VECTORS["admin_valid_until_2126"])


@pytest.mark.parametrize("sub", [None, 0, "0", "abc", -3, 1.5, True, [], {}])
def test_a_bad_subject_is_the_invalid_token_error(sub: Any) -> None:
    payload = claims(sub=sub)
    if sub is None:
        del payload["sub"]
    with pytest.raises(TokenSubjectError):
        TokenService(SECRET).verify(forge(HS256, payload))


def test_a_numeric_string_subject_reads_as_its_number_like_js_number() -> None:
    assert TokenService(SECRET).verify(forge(HS256, claims(sub=" 12 "))).sub == 12


def test_a_subject_error_comes_only_after_the_signature_checks() -> None:
    with pytest.raises(TokenError) as err:
        TokenService(SECRET).verify(forge(HS256, claims(sub=0), secret=THIRD))
    assert not isinstance(err.value, TokenSubjectError)


def test_a_crit_header_or_another_typ_is_refused() -> None:
    with pytest.raises(TokenError):
        TokenService(SECRET).verify(forge({**HS256, "crit": ["exp"]}, claims()))
    with pytest.raises(TokenError):
        TokenService(SECRET).verify(forge({"alg": "HS256", "typ": "at+jwt"}, claims()))


# --- rotation ----------------------------------------------------------------------------------------------------


def test_a_token_signed_with_the_previous_secret_passes_after_a_rotation() -> None:
    old = TokenService(PREVIOUS).issue(1, 1, "admin")
    untagged = forge(HS256, claims(), secret=PREVIOUS)
    rotated = TokenService(SECRET, previous=PREVIOUS)
    assert rotated.verify(old).kid == key_id(PREVIOUS)
    assert rotated.verify(untagged).sub == 1


def test_a_token_signed_with_a_third_secret_fails_after_a_rotation() -> None:
    rotated = TokenService(SECRET, previous=PREVIOUS)
    with pytest.raises(TokenError):
        rotated.verify(TokenService(THIRD).issue(1, 1, "admin"))
    with pytest.raises(TokenError):
        rotated.verify(forge(HS256, claims(), secret=THIRD))


def test_new_tokens_are_signed_with_the_current_secret_only() -> None:
    token = TokenService(SECRET, previous=PREVIOUS).issue(1, 1, "admin")
    assert TokenService(SECRET).verify(token).sub == 1
    with pytest.raises(TokenError):
        TokenService(PREVIOUS).verify(token)


def test_a_kid_binds_the_token_to_that_key() -> None:
    rotated = TokenService(SECRET, previous=PREVIOUS)
    # Signed with the current secret but claiming the previous key's id: refused, no fallback.
    with pytest.raises(TokenError):
        rotated.verify(forge({**HS256, "kid": key_id(PREVIOUS)}, claims(), secret=SECRET))
    with pytest.raises(TokenError):
        rotated.verify(forge({**HS256, "kid": "unknown-key"}, claims()))
    with pytest.raises(TokenError):
        rotated.verify(forge({**HS256, "kid": 12}, claims()))


def test_a_retired_previous_secret_stops_working() -> None:
    old = TokenService(PREVIOUS).issue(1, 1, "admin")
    with pytest.raises(TokenError):
        TokenService(SECRET).verify(old)


# --- the Authorization header ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc", "abc"),
        ("bearer abc", "abc"),
        ("BEARER   abc  ", "abc"),
        ("Bearer abc extra", "abc"),
        ("Bearer", None),
        ("Basic abc", None),
        ("", None),
        (None, None),
        ("abc", None),
    ],
)
def test_the_bearer_header_is_read_like_the_old_guard(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token


def test_a_token_remembered_as_verified_still_expires() -> None:
    service = TokenService("k" * 40, expires_seconds=60)
    token = service.issue(7, 2, "someone", now=1_000_000)
    assert service.verify(token, now=1_000_010).sub == 7  # verified, and now remembered
    assert service.verify(token, now=1_000_020).sub == 7
    with pytest.raises(TokenError):
        service.verify(token, now=1_000_000 + 60 + 6)


def test_a_rejected_token_is_never_remembered() -> None:
    service = TokenService("k" * 40)
    forged = TokenService("x" * 40).issue(1, 1, "admin")
    for _ in range(2):
        with pytest.raises(TokenError):
            service.verify(forged)


# --- issue 12: the desktop scope and the issue instant ---------------------------------------------------------


def test_a_desktop_token_carries_the_scope_claim_and_a_web_token_none() -> None:
    svc = TokenService(SECRET)
    desktop = svc.issue(3, 2, "pnair", scope=DESKTOP_SCOPE)
    payload = json.loads(base64.urlsafe_b64decode(desktop.split(".")[1] + "=="))
    assert payload["scope"] == "desktop"
    assert svc.verify(desktop).scope == "desktop"
    assert svc.verify(svc.issue(3, 2, "pnair")).scope is None
    old_backend = TokenService(VECTOR_SECRET).verify(VECTORS["admin_valid_until_2126"])
    assert (old_backend.scope, old_backend.iat_ms) == (None, None)
    assert old_backend.may_use("/api/users")


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        ("/api/desktop/bootstrap", True),
        ("/API/Desktop/bootstrap/", True),
        ("/api/desktop", True),
        ("/ws/desktop", True),
        ("/api/users", False),
        ("/api/desktop-admin", False),
        ("/api/desktopx/bootstrap", False),
        ("/api/lookups/task-categories", False),
        ("/ws/desktopx", False),
        ("/", False),
    ],
)
def test_a_desktop_token_may_use_only_the_desktop_paths(path: str, allowed: bool) -> None:
    claims = Claims(sub=3, role=2, login="pnair", iat=1, exp=2, kid=None, scope=DESKTOP_SCOPE)
    web = Claims(sub=3, role=2, login="pnair", iat=1, exp=2, kid=None)
    assert claims.may_use(path) is allowed
    assert web.may_use(path) is True


@pytest.mark.parametrize("scope", [123, ["desktop"], {"desktop": True}, "", "admin", "web"])
def test_a_scope_claim_that_is_not_the_desktop_scope_grants_nothing(scope: Any) -> None:
    token = forge({"alg": "HS256", "typ": "JWT"}, {"sub": 1, "role": 1, "exp": time.time() + 60, "scope": scope})
    claims = TokenService(SECRET).verify(token)
    assert not claims.may_use("/api/users")
    assert not claims.may_use("/api/desktop/bootstrap")


def test_issued_before_is_exact_with_iat_ms_and_from_the_start_of_the_second_without() -> None:
    svc = TokenService(SECRET)
    claims = svc.verify(svc.issue(1, 1, "admin", now=1_800_000_000.400))
    assert claims.iat_ms == 1_800_000_000_400
    assert claims.issued_before(1_800_000_000_401)
    assert not claims.issued_before(1_800_000_000_400)  # a login right at the revocation instant is after it
    assert not claims.issued_before(1_800_000_000_100)
    old = svc.verify(forge({"alg": "HS256", "typ": "JWT"}, {"sub": 1, "iat": 1_800_000_000, "exp": 4e9}))
    assert old.iat_ms is None
    assert old.issued_before(1_800_000_000_100)  # may predate it: refused, never let through
    assert not old.issued_before(1_800_000_000_000)
    no_iat = svc.verify(forge({"alg": "HS256", "typ": "JWT"}, {"sub": 1, "exp": 4e9}))
    assert no_iat.issued_before(1)
