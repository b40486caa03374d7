"""One pure-ASGI gate in front of every route.

In order: a request id (``X-Request-Id`` on every response); the API key (every path but ``/health``, checked before
the body is read or parsed, compared in constant time); POST bodies read as JSON whatever their declared content
type (``curl -d`` says form data); the body-size limit (413 for a declared or a streamed body over it); the request
counter by route and status; and a last-resort 500 envelope for anything that escapes the handlers.

Pure ASGI rather than ``@app.middleware("http")``: Starlette's ``BaseHTTPMiddleware`` wraps ``receive`` so that
``request.is_disconnected()`` never sees the client leave, which the batcher relies on to drop abandoned work.
"""

from __future__ import annotations

import hmac
import json
import logging
import uuid
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("padless.server")

ROUTES = {"/", "/invocations", "/predict", "/rerank", "/tokenize", "/decode", "/v1/classify", "/health", "/ready",
          "/ping", "/info", "/metrics", "/openapi.json", "/docs"}
OPEN_PATHS = {"/health"}


async def send_error(send: Send, status: int, error_type: str, message: str, request_id: str,
                     headers: dict[str, str] | None = None) -> None:
    body = json.dumps({"error": message, "error_type": error_type, "request_id": request_id}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
           (b"x-request-id", request_id.encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class Gatekeeper:
    """See the module docstring. ``count(route, status)`` is called once per response."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, api_key: str | None, count: Any) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.api_key = api_key.encode() if api_key else None
        self.count = count

    def _authorized(self, headers: dict[bytes, bytes]) -> bool:
        if self.api_key is None:
            return True
        auth = headers.get(b"authorization", b"")
        given = auth[7:] if auth[:7].lower() == b"bearer " else headers.get(b"x-api-key", b"")
        return hmac.compare_digest(given, self.api_key)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # An id set by a wrapper in front (Ray Serve's proxy id, padless.ray.serve) is kept; else a fresh one.
        rid = scope.setdefault("state", {}).get("request_id") or uuid.uuid4().hex[:16]
        scope["state"]["request_id"] = rid
        path = scope.get("path", "")
        route = path if path in ROUTES else "other"
        status_seen: list[int] = []

        async def tagged_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_seen.append(int(message["status"]))
                headers = [h for h in message.get("headers", []) if h[0].lower() != b"x-request-id"]
                message = {**message, "headers": [*headers, (b"x-request-id", rid.encode())]}
            await send(message)

        headers = dict(scope.get("headers") or [])
        try:
            if path not in OPEN_PATHS and not self._authorized(headers):
                await send_error(tagged_send, 401, "unauthorized", "missing or invalid API key", rid,
                                 {"WWW-Authenticate": "Bearer"})
                return
            declared = headers.get(b"content-length")
            if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
                await send_error(tagged_send, 413, "payload_too_large",
                                 f"request body is over {self.max_body_bytes} bytes", rid)
                return
            if scope.get("method") == "POST" and b"json" not in headers.get(b"content-type", b""):
                scope = {**scope, "headers": [(k, v) for k, v in scope["headers"] if k != b"content-type"]
                         + [(b"content-type", b"application/json")]}
            seen = 0

            async def limited_receive() -> Message:
                nonlocal seen
                message = await receive()
                if message["type"] == "http.request":
                    seen += len(message.get("body", b""))
                    if seen > self.max_body_bytes:
                        # An HTTPException passes through FastAPI's body parsing (anything else becomes a 400).
                        raise HTTPException(413, f"request body is over {self.max_body_bytes} bytes")
                return message

            await self.app(scope, limited_receive, tagged_send)
        except Exception:
            log.exception("unhandled error in request %s", rid)
            if not status_seen:
                await send_error(tagged_send, 500, "internal_error", "internal server error", rid)
        finally:
            self.count(route, status_seen[0] if status_seen else 500)
