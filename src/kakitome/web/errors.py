"""Errors as JSON: ``{"error": {"code": ..., "message": ...}}`` for every failure."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from kakitome.errors import AddressError, InputError, MessageError, NotFound, StorageError
from kakitome.message import MessageTooLarge


class ApiError(Exception):
    """An error response with a stable machine-readable code and a plain-words message."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message}},
        status_code=status,
        headers=dict(headers) if headers else None,
    )


def input_error_status(exc: InputError) -> tuple[int, str]:
    """The HTTP status and error code of an input error."""
    if isinstance(exc, MessageTooLarge):
        return 413, "message_too_large"
    if isinstance(exc, AddressError):
        return 422, "invalid_address"
    if isinstance(exc, MessageError):
        return 422, "invalid_message"
    return 422, "invalid_input"


def _location(loc: Any) -> str:
    parts = [str(p) for p in loc if p != "body"]
    return ".".join(parts) or "body"


def install_error_handlers(app: FastAPI) -> None:
    """Map the project's error tree to HTTP statuses."""

    async def api_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    async def validation(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return error_response(400, "invalid_json", "the request body is not valid JSON")
        problems = "; ".join(f"{_location(e.get('loc', ()))}: {e.get('msg')}" for e in errors)
        return error_response(422, "invalid_request", problems or "invalid request")

    async def input_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, InputError)
        return error_response(*input_error_status(exc), str(exc))

    async def not_found(_: Request, exc: Exception) -> JSONResponse:
        return error_response(404, "not_found", str(exc) or "not found")

    async def storage(_: Request, exc: Exception) -> JSONResponse:
        return error_response(
            503,
            "storage_unavailable",
            f"the message store is unavailable; nothing was accepted ({exc})",
            {"Retry-After": "30"},
        )

    async def http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail), exc.headers)

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(RequestValidationError, validation)
    app.add_exception_handler(InputError, input_error)
    app.add_exception_handler(NotFound, not_found)
    app.add_exception_handler(StorageError, storage)
    app.add_exception_handler(StarletteHTTPException, http_error)
