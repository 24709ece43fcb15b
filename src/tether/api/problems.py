"""Rendering errors as RFC 9457 problem documents, in one place."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

from tether.errors import ERROR_BASE, TetherError
from tether.log import get_logger

PROBLEM = "application/problem+json"
log = get_logger("tether.api")


class ProblemResponse(JSONResponse):
    media_type = PROBLEM


def problem(status: int, code: str, title: str, detail: str, **extra: Any) -> ProblemResponse:
    doc = {
        "type": ERROR_BASE + code.replace("_", "-"),
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
        **extra,
    }
    headers = {"WWW-Authenticate": 'Bearer realm="tether"'} if status == 401 else None
    return ProblemResponse(doc, status_code=status, headers=headers)


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


def install(app: FastAPI) -> None:
    @app.exception_handler(TetherError)
    async def _tether(request: Request, exc: TetherError) -> ProblemResponse:
        headers = {"WWW-Authenticate": 'Bearer realm="tether"'} if exc.status == 401 else None
        return ProblemResponse(exc.problem(request.url.path), status_code=exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> ProblemResponse:
        errors = [{"field": _field(tuple(e.get("loc", ()))), "message": str(e.get("msg", ""))} for e in exc.errors()]
        first = errors[0] if errors else {"field": "body", "message": "invalid"}
        return problem(
            422,
            "validation_failed",
            "Validation failed",
            f"{first['field']}: {first['message']}",
            field=first["field"],
            errors=errors[:20],
            instance=request.url.path,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> ProblemResponse:
        code = {404: "not_found", 405: "method_not_allowed", 401: "unauthenticated"}.get(exc.status_code, "http_error")
        return problem(exc.status_code, code, str(exc.detail), str(exc.detail), instance=request.url.path)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> ProblemResponse:
        # Top-level handler: log for operators, never leak internals to the caller.
        log.error("unhandled error", path=request.url.path, error=type(exc).__name__, exc_info=exc)
        return problem(500, "internal_error", "Internal error", "an unexpected error occurred; see the server log")


#: OpenAPI description of the problem responses every route may give.
PROBLEM_SCHEMA: dict[str, Any] = {
    "content": {
        PROBLEM: {
            "schema": {
                "type": "object",
                "properties": {
                    "type": {"type": "string"},
                    "title": {"type": "string"},
                    "status": {"type": "integer"},
                    "detail": {"type": "string"},
                    "code": {"type": "string"},
                    "field": {"type": "string"},
                },
                "required": ["type", "title", "status"],
            }
        }
    }
}
COMMON_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "No or invalid admin token", **PROBLEM_SCHEMA},
    403: {"description": "The token's role may not do this", **PROBLEM_SCHEMA},
    422: {"description": "Invalid input; `field` names it", **PROBLEM_SCHEMA},
}

__all__ = ["COMMON_RESPONSES", "PROBLEM", "PROBLEM_SCHEMA", "ProblemResponse", "install", "problem"]
