"""JSON log lines never carry a token: query strings are redacted and anything shaped like a JWT is replaced."""

from __future__ import annotations

import logging

import orjson

from ccsm_core.logs import JsonFormatter, redact_query, scrub_tokens
from ccsm_core.tokens import TokenService

TOKEN = TokenService("s" * 48).issue(7, 2, "mreyes")


def test_a_query_string_is_redacted_and_a_path_without_one_is_kept() -> None:
    assert redact_query(f"/ws/desktop?token={TOKEN}") == "/ws/desktop?<redacted>"
    assert redact_query("/ws/desktop") == "/ws/desktop"
    assert redact_query("/api/items?projectId=1") == "/api/items?<redacted>"


def test_a_jwt_anywhere_in_a_line_is_replaced() -> None:
    line = f'{{"msg":"x","detail":"Bearer {TOKEN} trailing"}}'.encode()
    assert TOKEN.encode() not in scrub_tokens(line)
    assert b"Bearer <redacted> trailing" in scrub_tokens(line)
    assert scrub_tokens(b'{"msg":"no token here"}') == b'{"msg":"no token here"}'


def test_the_formatter_scrubs_messages_fields_and_tracebacks() -> None:
    formatter = JsonFormatter("test")
    try:
        raise ValueError(f"bad token {TOKEN}")
    except ValueError as exc:
        record = logging.LogRecord("t", logging.ERROR, "", 0, "got %s", (TOKEN,), (type(exc), exc, exc.__traceback__))
    record.header = f"Bearer {TOKEN}"
    out = formatter.format(record)
    assert TOKEN not in out
    assert TOKEN.split(".")[2] not in out
    assert orjson.loads(out)["header"] == "Bearer <redacted>"
