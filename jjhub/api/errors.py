"""The one table from domain errors to HTTP statuses, and the error body shape."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from jjhub import errors

log = logging.getLogger(__name__)

STATUS_BY_ERROR: list[tuple[type[errors.DomainError], int]] = [
    (errors.BadRequest, 400),
    (errors.Unauthenticated, 401),
    (errors.Forbidden, 403),
    (errors.NotFound, 404),
    (errors.Conflict, 409),
    (errors.ValidationFailed, 422),
    (errors.Invalid, 422),
    (errors.Unavailable, 503),
]


def error_response(status: int, message: str, **extra: object) -> JSONResponse:
    return JSONResponse({"message": message, **extra}, status_code=status)


def _status_for(error: errors.DomainError) -> int:
    for cls, status in STATUS_BY_ERROR:
        if isinstance(error, cls):
            return status
    return 500


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, errors.DomainError)
    extra: dict[str, object] = {}
    if isinstance(exc, errors.ValidationFailed):
        extra["errors"] = exc.errors
    elif isinstance(exc, errors.Invalid) and exc.field:
        extra["errors"] = [{"resource": "", "field": exc.field, "code": "invalid"}]
    return error_response(_status_for(exc), exc.message, **extra)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    """Malformed JSON is 400; well-formed JSON with wrong fields is 422."""
    assert isinstance(exc, RequestValidationError)
    problems = exc.errors()
    if any(p.get("type") == "json_invalid" for p in problems):
        return error_response(400, "invalid request body")
    fields = []
    for problem in problems:
        location = [str(part) for part in problem.get("loc", ()) if part != "body"]
        where = location[0] if location else "body"
        if where in ("query", "path") and len(location) > 1:
            return error_response(400, f"invalid {location[1]} value")
        fields.append(
            {
                "resource": "",
                "field": ".".join(location) or "body",
                "code": problem.get("type", "invalid"),
                "message": problem.get("msg", ""),
            }
        )
    return error_response(422, "validation failed", errors=fields)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return error_response(exc.status_code, str(exc.detail).lower())


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error path=%s", request.url.path)
    return error_response(500, "internal server error; the server log has details")


def install(app: FastAPI) -> None:
    app.add_exception_handler(errors.DomainError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
