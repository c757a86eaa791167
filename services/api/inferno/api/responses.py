"""JSON responses encoded with msgspec: the views are plain dicts and lists, and this skips
FastAPI's `jsonable_encoder` walk, which costs more than the rest of a status read."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
from starlette.responses import JSONResponse, Response


class MsgspecJSONResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        return msgspec.json.encode(content)


def json_response(
    content: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    return MsgspecJSONResponse(content, status, headers=dict(headers) if headers else None)
