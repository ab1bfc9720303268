"""Reading request values with the JavaScript semantics the old handlers used (contract-core §1.4,
contract-work §1.2), but refusing what used to crash or 500 (fix 1): query arrays and objects, wrong JSON
types and unparseable values are a 400 `{"error": ...}` instead.
"""

from __future__ import annotations

import math
import re
from typing import Any

from starlette.requests import Request

from ccsm_core.errors import ApiError

NAN = float("nan")
# JS Number() on a string: trimmed; "" -> 0; decimal with optional sign/exponent; 0x/0o/0b (no sign); Infinity.
_DECIMAL_RE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_PREFIXED_RE = re.compile(r"^0([xX][0-9a-fA-F]+|[oO][0-7]+|[bB][01]+)$")
# JS String.prototype.trim() white space: WhiteSpace + LineTerminator (ECMA-262 §22.1.3.32). Python's
# str.strip() would also strip U+001C..U+001F, which JS keeps (contract-core §1.4).
_JS_WS = "\t\n\v\f\r \u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"  # noqa: E501


def js_trim(text: str) -> str:
    return text.strip(_JS_WS)


def js_number(value: Any) -> float:
    """`Number(value)` for the values JSON and query strings can carry."""
    if value is None:
        return 0.0
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        text = js_trim(value)
        if text == "":
            return 0.0
        if _DECIMAL_RE.match(text):
            return float(text)
        prefixed = _PREFIXED_RE.match(text)
        if prefixed:
            return float(int(text, 0))
        if text in ("Infinity", "+Infinity"):
            return math.inf
        if text == "-Infinity":
            return -math.inf
        return NAN
    if isinstance(value, list):
        # [x] is Number(String(x)); unwrapped in a loop, as a JSON body may nest ~1,000 levels (past Python's
        # recursion limit: a RecursionError, i.e. a 500)
        while isinstance(value, list):
            if len(value) == 0:
                return 0.0
            if len(value) > 1 or isinstance(value[0], dict):
                return NAN
            value = value[0]
        return js_number(value)
    return NAN  # objects


def positive_number(value: Any) -> float:
    """`parseRequiredNumber`: finite and > 0, otherwise 0 ("missing")."""
    n = js_number(value)
    return n if math.isfinite(n) and n > 0 else 0.0


def positive_int(value: Any) -> int | None:
    """A positive whole number (an id), or None. Fractional ids can never match a row, so they are None."""
    n = positive_number(value)
    if n and n.is_integer() and n <= 2**63 - 1:
        return int(n)
    return None


def normalize_string(value: Any) -> str:
    """`String(value ?? '').trim()`."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e21:
            return str(int(value))
        return js_trim(repr(value))
    if isinstance(value, str):
        return js_trim(value)
    if isinstance(value, list):
        return _joined(value)
    return "[object Object]"


def _joined(value: list[Any]) -> str:
    """`String(array)`: elements joined with ",", nested arrays the same way, null as "" (each element trimmed, as
    this module always has). Walked with an explicit stack: a JSON body may nest arrays ~1,000 levels deep, past
    Python's recursion limit."""
    parts: list[str] = []
    stack = [iter(value)]
    started = [False]  # whether the array on top of the stack has written an element yet
    while stack:
        for element in stack[-1]:
            if started[-1]:
                parts.append(",")
            started[-1] = True
            if isinstance(element, list):
                stack.append(iter(element))
                started.append(False)
                break
            parts.append("" if element is None else normalize_string(element))
        else:
            stack.pop()
            started.pop()
    return js_trim("".join(parts))


def to_flag(value: Any) -> int:
    """`toFlag`: 1 only for true, "true", 1, "1"; everything else 0."""
    if value is True or value == "true" or value == "1":
        return 1
    return 1 if isinstance(value, int | float) and not isinstance(value, bool) and value == 1 else 0


def query_value(request: Request, name: str) -> str | None:
    """One query parameter. Express's qs parser turned `?a=1&a=2` into an array and `?a[x]=1` into an object,
    which reached the SQL layer as NaN or a key list (contract-core §1.4); both are a 400 here."""
    values = request.query_params.getlist(name)
    if len(values) > 1 or any(k.startswith(name + "[") for k in request.query_params):
        raise ApiError(400, f"Query parameter '{name}' must be given once")
    return values[0] if values else None


def require_type(body: dict[str, Any], name: str, *types: type) -> Any:
    """A body field that, when present and not null, must be one of `types` (bool is never an int here)."""
    value = body.get(name)
    if value is None:
        return None
    ok = any(isinstance(value, t) and not (t in (int, float) and isinstance(value, bool)) for t in types)
    if not ok:
        raise ApiError(400, f"Field '{name}' has the wrong type")
    return value
