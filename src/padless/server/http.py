"""What every route shares: the error envelope, the request id, the request's deadline and the input-count limit."""

from __future__ import annotations

import time
import uuid

from fastapi import Request
from fastapi.responses import JSONResponse

from padless.config import ServerConfig
from padless.errors import InputError


def error_response(status: int, error_type: str, message: str, request_id: str,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    """padless's one error envelope: ``{"error", "error_type", "request_id"}`` (TEI's two fields, plus the id)."""
    body = {"error": message, "error_type": error_type, "request_id": request_id}
    return JSONResponse(body, status_code=status, headers={"X-Request-Id": request_id, **(headers or {})})


def request_id(request: Request) -> str:
    rid = getattr(request.state, "request_id", None)
    if rid is None:
        rid = request.state.request_id = uuid.uuid4().hex[:16]
    return rid


def deadline_for(request: Request, cfg: ServerConfig) -> float:
    """The request's deadline (monotonic): the server's timeout, shortened by ``X-Request-Timeout`` if sent."""
    timeout = cfg.request_timeout_s
    header = request.headers.get("x-request-timeout")
    if header:
        try:
            asked = float(header)
        except ValueError:
            raise InputError("X-Request-Timeout must be a number of seconds") from None
        if not asked > 0:
            raise InputError("X-Request-Timeout must be positive")
        timeout = min(timeout, asked)  # a client may shorten the deadline, never lengthen it
    return time.monotonic() + timeout


def check_count(n: int, cfg: ServerConfig) -> None:
    if n == 0:
        raise InputError("inputs must not be empty")
    if n > cfg.max_inputs_per_request:
        raise InputError(f"{n} inputs is over the limit of {cfg.max_inputs_per_request} per request")
