"""The OpenAPI document, said as the server behaves, so a client generated from it (or a
schemathesis run) meets no surprise.

Routes list the errors they answer themselves (`errors(...)` in their decorators); `install`
adds what the layers around every route answer: the bearer token's 401 (only when one is set,
with its security scheme), the Host / Origin checks' 400 and 403, and on writes the body's
413 and 415. FastAPI's 422 goes: validation errors are 400s here (`inferno.api.errors`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel


class Error(BaseModel):
    """Every error the api answers: `{"error": "..."}`, naming the field when a field is wrong."""

    error: str


WHY: dict[int, str] = {
    400: "A field, parameter or header is invalid; `error` names it.",
    401: "No valid bearer token (INFERNO_TOKEN or INFERNO_TOKENS is set on this api).",
    403: "A foreign Origin, or a Host this api does not serve.",
    404: "What the request names does not exist.",
    409: "The projection shows the transition cannot work, or the Idempotency-Key was used for"
    " another request.",
    413: "The request body, or the command it makes, is over the configured limit.",
    415: "The body's Content-Type is not one this route reads.",
    503: "The log (NATS JetStream) is unavailable or behind (on /readyz also: no scheduler"
    " holds the lease); retry.",
}

_ERROR_REF = {"$ref": "#/components/schemas/Error"}
_FASTAPI_VALIDATION = ("HTTPValidationError", "ValidationError")


_BODY_MODELS: dict[str, type[BaseModel]] = {}
"""Models of bodies a route validates itself (`one_of`), added to the document's schemas."""


def one_of(*models: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra=` for a route whose body is any of `models`, picked by its own fields."""
    _BODY_MODELS.update({m.__name__: m for m in models})
    refs = [{"$ref": f"#/components/schemas/{m.__name__}"} for m in models]
    body = {"required": True, "content": {"application/json": {"schema": {"oneOf": refs}}}}
    return {"requestBody": body}


def _body_schemas() -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    for name, model in _BODY_MODELS.items():
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas |= schema.pop("$defs", {})
        schemas[name] = schema
    return schemas


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route decorator: these error statuses, each with the Error body."""
    return {code: {"model": Error, "description": WHY[code]} for code in codes}


def _document(operation: dict[str, Any], code: int) -> None:
    operation["responses"].setdefault(
        str(code),
        {"description": WHY[code], "content": {"application/json": {"schema": _ERROR_REF}}},
    )


def conform(schema: dict[str, Any], *, bearer: bool, open_paths: Collection[str]) -> dict[str, Any]:
    """The generated document, made to say what the middleware and error handlers do."""
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            operation["responses"].pop("422", None)
            for code in (400, 403) + ((413, 415) if method in ("post", "put", "patch") else ()):
                _document(operation, code)
            if bearer and path not in open_paths:
                _document(operation, 401)
                operation["security"] = [{"bearer": []}]
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for name in _FASTAPI_VALIDATION:
        schemas.pop(name, None)
    schemas["Error"] = Error.model_json_schema()
    schemas |= {name: body for name, body in _body_schemas().items() if name not in schemas}
    if bearer:
        components["securitySchemes"] = {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "INFERNO_TOKEN or INFERNO_TOKENS",
            }
        }
    return schema


def install(app: FastAPI, *, bearer: bool, open_paths: Collection[str]) -> None:
    """Serve the conformed document at /openapi.json (and so in /docs)."""
    generate: Callable[[], dict[str, Any]] = app.openapi
    conformed: dict[str, Any] = {}

    def openapi() -> dict[str, Any]:
        if not conformed:
            conformed.update(conform(generate(), bearer=bearer, open_paths=open_paths))
        return conformed

    app.openapi = openapi  # type: ignore[method-assign]
