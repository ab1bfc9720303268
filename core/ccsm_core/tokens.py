"""HS256 JWTs compatible with the old backend's jsonwebtoken 9 (contract-core §8.2, interop-vectors.json).

Implemented on the standard library's `hmac` rather than a JOSE library: the only algorithm we may ever
accept is HS256, and building it by hand makes that pinning structural (there is no algorithm table to
misconfigure), keeps `sub` a JSON number as the old clients expect, and costs ~5 µs per verification on the
hot path of every request.

Rotation: new tokens carry a `kid` naming their key (derived from the secret, not revealing it). A token with
a `kid` is checked against that key only; a token without one (the old backend's) is tried against the current
secret, then `JWT_SECRET_PREVIOUS`.

Two claims of our own, both ignored by the old clients (they read `sub`, `role`, `login`) and by jsonwebtoken:
- `scope` (RFC 8693 §4.2: space-separated scope values): a token from the desktop auth-code login carries
  `"scope": "desktop"` and is valid only where the desktop app works, `/api/desktop/*` and `/ws/desktop`
  (issue 12 item 1; the guard enforces it). A token without `scope` (every web token, and every token of the
  old backend) is valid everywhere, as before.
- `iat_ms`: the issue instant in epoch milliseconds. `iat` is whole seconds (kept as jsonwebtoken writes it),
  which cannot say whether a token issued in the second of a revocation came before or after it; `iat_ms` can
  (`Claims.issued_before`, issue 12 item 4).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import re
import time
from dataclasses import dataclass
from typing import Any, TypeGuard

import orjson

MAX_TOKEN_BYTES = 8 * 1024  # a real token is ~200 bytes; anything near a header-size limit is garbage
VERIFIED_CACHE_SIZE = 10_000  # distinct live tokens remembered per process (a few hundred users in practice)
LEEWAY_S = 5  # clock skew allowed between tasks; the issue allows at most 30 s
_B64URL_RE = re.compile(r"[A-Za-z0-9_-]*")

DESKTOP_SCOPE = "desktop"
# Where a desktop-scoped token is valid: the desktop app calls nothing else (its backend-api.js only calls
# `/desktop/...` paths under the API base, and opens `/ws/desktop`).
DESKTOP_PATH_PREFIXES = ("/api/desktop", "/ws/desktop")


class TokenError(Exception):
    """Verification failed: answered 401 `Invalid or expired token` (contract-core §1.6)."""


class TokenSubjectError(TokenError):
    """The signature verified but `sub` is missing, 0 or not numeric: answered 401 `Invalid token`."""


@dataclass(frozen=True, slots=True)
class Claims:
    sub: int
    role: int | None
    login: str
    iat: int | None
    exp: int
    kid: str | None
    scope: str | None = None  # None: no `scope` claim, valid everywhere (web and old-backend tokens)
    iat_ms: int | None = None  # the issue instant in epoch ms, when the token says it (ours do)

    def may_use(self, path: str) -> bool:
        """Whether this token is valid for a request to `path` (matched case-insensitively, as routes are)."""
        if self.scope is None:
            return True
        if DESKTOP_SCOPE not in self.scope.split(" "):
            return False
        lowered = path.lower()
        return any(lowered == p or lowered.startswith(p + "/") for p in DESKTOP_PATH_PREFIXES)

    @property
    def issued_ms(self) -> int | None:
        """The earliest instant (epoch ms) this token may have been issued: `iat_ms`, else the start of `iat`'s
        second, else None (no `iat` at all)."""
        if self.iat_ms is not None:
            return self.iat_ms
        return self.iat * 1000 if self.iat is not None else None

    def issued_before(self, instant_ms: int) -> bool:
        """Whether this token may have been issued before `instant_ms` (epoch ms; a revocation): see
        `issued_before`, the rule the API guard and the ws-gateway share."""
        return issued_before(self.issued_ms, instant_ms)


def issued_before(issued_ms: int | None, instant_ms: int) -> bool:
    """Whether a token whose earliest issue instant is `issued_ms` (`Claims.issued_ms`) may predate `instant_ms`.

    With `iat_ms` the answer is exact. A token with only a whole-second `iat` (the old backend's, or ours from
    before `iat_ms`) counts from the start of its second, so one issued in the second of a revocation is
    refused, never let through; one without any `iat` predates every revocation."""
    return issued_ms is None or issued_ms < instant_ms


def key_id(secret: str) -> str:
    return hashlib.sha256(b"ccsm-jwt-kid:" + secret.encode()).hexdigest()[:16]


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    # fullmatch, not match: `$` would let a trailing newline through, and b64decode would then ignore it.
    if not _B64URL_RE.fullmatch(text) or len(text) % 4 == 1:
        raise TokenError("bad base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise TokenError("bad base64url") from None


def _sign(signing_input: bytes, secret: str) -> bytes:
    return hmac.new(secret.encode(), signing_input, hashlib.sha256).digest()


def _signature(signing_input: bytes, secret: str) -> bytes:
    """The base64url text of the HS256 signature, as it appears in a token."""
    return _b64encode(_sign(signing_input, secret)).encode("ascii")


class TokenService:
    def __init__(self, secret: str, previous: str = "", expires_seconds: int = 8 * 3600) -> None:
        self.secret = secret
        self.expires_seconds = expires_seconds
        self.keys: dict[str, str] = {}
        if secret:
            self.keys[key_id(secret)] = secret
        if previous:
            self.keys[key_id(previous)] = previous
        self.current_kid = key_id(secret) if secret else None
        # Tried in order for tokens without `kid`: current first, then previous.
        self.untagged = [k for k in (secret, previous) if k]
        # Tokens that verified, by their exact text: a client sends the same token on every request, and
        # re-checking its signature each time is most of the guard's cost. Expiry is still checked per use.
        self._verified: dict[str, Claims] = {}

    def verify(self, token: str, now: float | None = None) -> Claims:
        claims = self._verified.get(token) if isinstance(token, str) else None
        if claims is not None:
            t = time.time() if now is None else now
            if t < claims.exp + LEEWAY_S:  # `nbf`, if any, had passed when it verified
                return claims
        claims = self._verify(token, now)
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            self._verified.clear()
        self._verified[token] = claims
        return claims

    def issue(
        self, user_id: int, role: int | None, login: str, now: float | None = None, scope: str | None = None
    ) -> str:
        """A token for the user; `now` is its issue instant (the login passes the instant it read the user's row, so
        a revocation committed after that read also covers this token); `scope` limits where it is valid."""
        if not self.secret:
            raise TokenError("no signing secret configured")
        instant = time.time() if now is None else now
        iat = math.floor(instant)
        header = {"alg": "HS256", "typ": "JWT", "kid": self.current_kid}
        payload: dict[str, Any] = {"sub": user_id, "role": role, "login": login, "iat": iat}
        payload["exp"] = iat + self.expires_seconds
        payload["iat_ms"] = math.floor(instant * 1000)
        if scope is not None:
            payload["scope"] = scope
        signing_input = f"{_b64encode(orjson.dumps(header))}.{_b64encode(orjson.dumps(payload))}".encode()
        return f"{signing_input.decode()}.{_b64encode(_sign(signing_input, self.secret))}"

    def _verify(self, token: str, now: float | None) -> Claims:
        if not self.untagged:
            raise TokenError("no verification secret configured")
        if not isinstance(token, str) or len(token) > MAX_TOKEN_BYTES:
            raise TokenError("token too large")
        parts = token.split(".")
        if len(parts) != 3:
            raise TokenError("malformed")
        header = _json_object(_b64decode(parts[0]))
        if header.get("alg") != "HS256":  # pins the algorithm: `none`, HS384/512, RS*/ES* are all refused
            raise TokenError("algorithm not allowed")
        if header.get("typ", "JWT") != "JWT" or "crit" in header:
            raise TokenError("unsupported header")
        if not _B64URL_RE.fullmatch(parts[2]):
            raise TokenError("bad signature encoding")
        # The encoded signature is compared, as jws does: a non-canonical spelling of the right bytes (other
        # trailing bits in the last character) is a different token and is refused.
        signature = parts[2].encode("ascii")
        signing_input = f"{parts[0]}.{parts[1]}".encode()
        kid = header.get("kid")
        if kid is not None:
            secret = self.keys.get(kid) if isinstance(kid, str) else None
            if secret is None or not hmac.compare_digest(_signature(signing_input, secret), signature):
                raise TokenError("bad signature")
        elif not any(hmac.compare_digest(_signature(signing_input, s), signature) for s in self.untagged):
            raise TokenError("bad signature")

        payload = _json_object(_b64decode(parts[1]))
        t = time.time() if now is None else now
        exp = payload.get("exp")
        if not _is_number(exp):
            raise TokenError("missing exp")
        if t >= float(exp) + LEEWAY_S:
            raise TokenError("expired")
        nbf = payload.get("nbf")
        if nbf is not None and (not _is_number(nbf) or t + LEEWAY_S < float(nbf)):
            raise TokenError("not yet valid")

        sub = _positive_int(payload.get("sub"))
        if sub is None:
            raise TokenSubjectError("bad subject")
        role_raw = payload.get("role")
        role = int(role_raw) if _is_number(role_raw) and float(role_raw).is_integer() else None
        login = payload.get("login")
        iat = payload.get("iat")
        iat_ms = payload.get("iat_ms")
        scope = payload.get("scope")
        return Claims(
            sub=sub,
            role=role,
            login=login if isinstance(login, str) else "",
            iat=int(iat) if _is_number(iat) else None,
            exp=int(exp),
            kid=kid if isinstance(kid, str) else None,
            # A `scope` that is not a string grants nothing (""), rather than everything.
            scope=None if scope is None else scope if isinstance(scope, str) else "",
            iat_ms=int(iat_ms) if _is_number(iat_ms) else None,
        )


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise TokenError("bad json") from None
    if not isinstance(value, dict):
        raise TokenError("not an object")
    return value


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _positive_int(value: object) -> int | None:
    """`Number(sub)` as the old guard read it, limited to positive whole numbers."""
    if isinstance(value, str) and re.fullmatch(r"\s*\d{1,15}\s*", value):
        value = int(value)
    if _is_number(value) and float(value).is_integer() and value > 0:
        return int(value)
    return None


def bearer_token(authorization: str | None) -> str | None:
    """`Authorization: Bearer <t>`; the scheme ignores case, extra parts are ignored (contract-core §1.6)."""
    if not authorization:
        return None
    parts = authorization.split()
    if len(parts) < 2 or parts[0].lower() != "bearer":
        return None
    return parts[1]
