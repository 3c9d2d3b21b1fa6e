"""The error hierarchy and the handlers that render every error in Qingbo's envelope."""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.platform.db import DATABASE_UNAVAILABLE, PoolTimeout

logger = logging.getLogger(__name__)


class ServiceError(Exception):
    """An error with an HTTP status and a Qingbo-style code; the message is shown to callers."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.headers = headers or {}
        self.extra = extra or {}

    def envelope(self) -> dict[str, Any]:
        error: dict[str, Any] = {"message": self.message, "code": self.code}
        if self.param is not None:
            error["param"] = self.param
        error.update(self.extra)
        return {"error": error}


class InvalidRequest(ServiceError):
    status = 400
    code = "invalid_request"


class PriceNotConfigured(InvalidRequest):
    """A model the catalog knows but the price table does not price: refused before
    anything is stored or sent (Qingbo answers its own unpriced models the same way)."""

    code = "price_not_configured"


class Unauthorized(ServiceError):
    status = 401
    code = "unauthorized"


class BudgetExceeded(ServiceError):
    status = 402
    code = "budget_exceeded"


class ModelNotAllowed(ServiceError):
    status = 403
    code = "model_not_allowed"


class NotFound(ServiceError):
    status = 404
    code = "not_found"


class MethodNotAllowed(ServiceError):
    status = 405
    code = "method_not_allowed"


class RequestTimeout(ServiceError):
    """The body did not all arrive within QGW_BODY_READ_TIMEOUT_SECONDS."""

    status = 408
    code = "request_timeout"


class NotCancellable(ServiceError):
    status = 409
    code = "not_cancellable"


class IdempotencyConflict(ServiceError):
    status = 409
    code = "idempotency_conflict"


class NotArchived(ServiceError):
    status = 404
    code = "not_archived"


class ArchiveGone(ServiceError):
    status = 410
    code = "archive_failed"


class ArchiveExpired(ServiceError):
    status = 410
    code = "archive_expired"


class RangeNotSatisfiable(ServiceError):
    status = 416
    code = "range_not_satisfiable"


class PayloadTooLarge(ServiceError):
    status = 413
    code = "payload_too_large"


class RateLimited(ServiceError):
    status = 429
    code = "rate_limited"


class ConcurrencyLimited(ServiceError):
    status = 429
    code = "concurrency_limited"


class InternalError(ServiceError):
    status = 500
    code = "internal_error"


class UpstreamUnavailable(ServiceError):
    status = 503
    code = "upstream_unavailable"


class ServiceUnavailable(ServiceError):
    status = 503
    code = "service_unavailable"


def error_response(err: ServiceError) -> JSONResponse:
    return JSONResponse(err.envelope(), status_code=err.status, headers=err.headers)


def _param_from_loc(loc: tuple[int | str, ...]) -> str:
    parts = [p for p in loc if p not in ("body", "query", "path", "header")]
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "body"


def validation_error(exc: RequestValidationError) -> InvalidRequest:
    """The first pydantic error, named by field and rule."""
    first = exc.errors()[0]
    loc = tuple(first.get("loc", ()))
    if first.get("type") == "json_invalid":
        return InvalidRequest("body: the request body is not valid JSON", param="body")
    if first.get("type") == "missing" and loc in (("body",), ()):
        return InvalidRequest("body: a JSON object is required", param="body")
    param = _param_from_loc(loc)
    message = str(first.get("msg", "invalid value"))
    if first.get("type") == "extra_forbidden":
        message = "unknown field"
    elif first.get("type") == "missing":
        message = "field required"
    return InvalidRequest(f"{param}: {message}", param=param)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def _service_error(_: Request, exc: ServiceError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(validation_error(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        err: ServiceError
        if exc.status_code == 404:
            err = NotFound("no such route")
        elif exc.status_code == 405:
            err = MethodNotAllowed("method not allowed on this route")
        else:
            err = InvalidRequest(str(exc.detail))
        return error_response(err)

    @app.exception_handler(PoolTimeout)
    async def _pool_timeout(request: Request, exc: PoolTimeout) -> JSONResponse:
        # Every pooled connection is busy (stuck statements, a slow database): the caller
        # may come back shortly; waiting for ever would only add to the queue.
        logger.warning("no database connection free", extra={"path": request.url.path})
        return error_response(
            ServiceUnavailable(
                "the gateway is out of database connections; retry shortly",
                headers={"Retry-After": "1"},
            )
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, DATABASE_UNAVAILABLE):  # restarting or failing over: not a bug
            logger.warning(
                "database unavailable",
                extra={"path": request.url.path, "error": type(exc).__name__},
            )
            return error_response(
                ServiceUnavailable(
                    "the gateway's database is unavailable; retry shortly",
                    headers={"Retry-After": "2"},
                )
            )
        logger.exception("unhandled error", extra={"path": request.url.path})
        return error_response(InternalError("internal error"))
