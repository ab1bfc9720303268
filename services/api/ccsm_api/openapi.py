"""`GET /api/openapi.json` (no auth): the OpenAPI 3.1 document of every `/api` route (`openapi_document`).

The document is built and encoded once, at import (it is plain data: nothing connects), and the same bytes are
served on every request.
"""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response

from .openapi_document import build

DOCUMENT_BYTES = orjson.dumps(build())


async def openapi_json(request: Request) -> Response:
    return Response(DOCUMENT_BYTES, media_type="application/json")
