"""What every service's HTTP side shares: JSON errors, a body limit, health, readiness, metrics."""

from __future__ import annotations

import logging
import re
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, suppress
from typing import Any, Literal

import psycopg
from eventsourcing.persistence import DataError, PersistenceError
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from opentelemetry import trace
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared import telemetry
from shared.application import Conflict
from shared.auth import Tokens
from shared.errors import describe

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024
REQUESTS = Counter("dunwell_http_requests_total", "HTTP requests", ["method", "route", "status"])
LATENCY = Histogram("dunwell_http_request_seconds", "HTTP request latency", ["method", "route"])

Checks = Callable[[], dict[str, bool]]


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details}}


# --- the error bodies, as the OpenAPI documents describe them ---


class Problem(BaseModel):
    code: str
    message: str
    details: dict[str, Any] | None


class ErrorBody(BaseModel):
    """Every 4xx but 422: `{"error": {"code", "message", "details"}}`."""

    error: Problem


class FieldProblem(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class InvalidProblem(BaseModel):
    code: Literal["invalid_request"]
    message: str
    details: list[FieldProblem]


class InvalidBody(BaseModel):
    """A 422: the same envelope, `details` naming each field that does not fit (at most 20)."""

    error: InvalidProblem


STATUS_MEANING = {
    400: "The request is well formed but asks for something impossible.",
    401: "No bearer token, or one that is not valid.",
    403: "The token's role (or its subject) may not do this.",
    404: "Nothing of that name, or nothing this caller may see.",
    409: "A conflict with what is already recorded.",
    413: f"The body exceeds {MAX_BODY_BYTES} bytes.",
    422: "The request does not fit the schema.",
}


def error_responses(*statuses: int, meaning: Mapping[int, str] | None = None
                    ) -> dict[int | str, dict[str, Any]]:
    """The `responses` of a route for the error statuses it can answer, with their bodies."""
    said = {**STATUS_MEANING, **(meaning or {})}
    documented: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        entry: dict[str, Any] = {"model": InvalidBody if status == 422 else ErrorBody,
                                 "description": said[status]}
        if status == 401:
            entry["headers"] = {"WWW-Authenticate": {
                "description": "Always `Bearer`.", "required": True,
                "schema": {"type": "string", "const": "Bearer"}}}
        documented[status] = entry
    return documented


# A JSON (or TOML) string's U+0000: the escape, after an even run of backslashes (an odd run
# makes the backslash before `u` a literal one).
_NUL_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


class BodyLimit:
    """Refuses a request body over the limit with 413 before any of it is parsed, and one whose
    strings hold U+0000 with 422: no store keeps that character (PostgreSQL's text and jsonb
    refuse it), so such a report would be accepted and then fail downstream. Paths that match
    `streamed` (an upload read as a stream, with its own limit) are let through; paths that
    match a pattern of `limits` (a batch of many reports) have that limit instead."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES,
                 streamed: Sequence[str] = (), limits: Mapping[str, int] | None = None) -> None:
        self.app = app
        self.default = limit
        self.streamed = [re.compile(pattern) for pattern in streamed]
        self.limits = [(re.compile(pattern), most) for pattern, most in (limits or {}).items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or any(p.fullmatch(path) for p in self.streamed):
            await self.app(scope, receive, send)
            return
        limit = next((most for p, most in self.limits if p.fullmatch(path)), self.default)
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _too_large(limit)(scope, receive, send)
            return
        body = bytearray()
        refused: JSONResponse | None = None

        async def counted() -> Message:
            nonlocal refused
            message = await receive()
            body.extend(message.get("body", b""))
            if len(body) > limit:
                refused = _too_large(limit)
                raise _BodyRefused
            if not message.get("more_body", False) and (b"\x00" in body
                                                        or _NUL_ESCAPE.search(body)):
                reason = "a string holds the NUL character (U+0000), which no field may carry"
                refused = JSONResponse(error_body("invalid_request", reason, [
                    {"loc": ["body"], "msg": reason, "type": "nul_character"}]), 422)
                raise _BodyRefused
            return message

        async def guarded(message: Message) -> None:
            if refused is None:  # the framework turns our stop into a 400; answer ours instead
                await send(message)

        with suppress(_BodyRefused):
            await self.app(scope, counted, guarded)
        if refused is not None:
            await refused(scope, receive, send)


class _BodyRefused(Exception):
    pass


def _too_large(limit: int) -> JSONResponse:
    return JSONResponse(error_body("payload_too_large", f"the body exceeds {limit} bytes"), 413)


def create_app(*, title: str, routers: Sequence[APIRouter], checks: Checks,
               lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]] | None,
               tokens: Tokens, streamed: Sequence[str] = (),
               body_limits: Mapping[str, int] | None = None) -> FastAPI:
    app = FastAPI(title=title, version="1", lifespan=lifespan)
    app.state.tokens = tokens  # what `shared.auth.require` checks a bearer token against
    for router in routers:
        app.include_router(router, prefix="/v1")
    app.add_middleware(BodyLimit, streamed=streamed, limits=body_limits)
    _add_errors(app)
    _add_operations(app, checks)
    _add_metrics(app)
    return app


def _add_errors(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        detail: Any = error.detail  # FastAPI's HTTPException also takes a dict
        if isinstance(detail, dict) and "code" in detail:
            body = {"error": {"details": None, **detail}}
        else:
            body = error_body(_code(error.status_code), str(detail))
        headers = getattr(error, "headers", None)
        if error.status_code == 405:
            headers = {**(headers or {}), "Allow": _allowed(request)}
        return JSONResponse(body, error.status_code, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        details = field_problems(error.errors())
        return JSONResponse(error_body("invalid_request", "the request does not fit the schema",
                                       details), 422)


    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        """Still a JSON error, never a bare 500 page; the store failing is a 503."""
        route = getattr(request.scope.get("route"), "path", "unmatched")
        log.error("%s %s failed: %s", request.method, route, describe(error))
        if isinstance(error, Conflict):
            return JSONResponse(error_body("conflict", "another request changed this meanwhile; "
                                           "send it again"), 409)
        if isinstance(error, DataError | psycopg.DataError):
            return JSONResponse(error_body("bad_request", "a value the store cannot keep "
                                           "(such as U+0000 in a parameter)"), 400)
        if isinstance(error, PersistenceError | sqlite3.Error | psycopg.Error):
            return JSONResponse(error_body("store_unavailable", "the service's store cannot "
                                           "take this now; send it again later"), 503,
                                headers={"Retry-After": "5"})
        return JSONResponse(error_body("internal_error", "the service failed, and may or may "
                                       "not have recorded this: send it again (with the same "
                                       "Idempotency-Key)"), 500)


def _allowed(request: Request) -> str:
    """Every method the path takes: Starlette names only those of the first route matching
    it, and a path may be served by several (GET and PUT of a strategy)."""
    methods: set[str] = set()
    for route in request.app.routes:
        match, _ = route.matches({**request.scope, "method": "GET"})
        if match is not Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return ", ".join(sorted(methods))


def field_problems(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """What a 422's `details` lists: each field that does not fit, at most 20."""
    return [{"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")}
            for e in errors[:20]]


def _code(status: int) -> str:
    return {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
            405: "method_not_allowed", 409: "conflict", 413: "payload_too_large",
            503: "unavailable"}.get(status, f"http_{status}")


def _add_operations(app: FastAPI, checks: Checks) -> None:
    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    def readyz() -> JSONResponse:
        try:
            results = checks()
        except Exception as error:  # noqa: BLE001 - a failing check means not ready
            log.warning("readiness check failed: %s", type(error).__name__)
            results = {"checks": False}
        ok = all(results.values())
        return JSONResponse({"ready": ok, "checks": results}, 200 if ok else 503)

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def _add_metrics(app: FastAPI) -> None:
    app.add_middleware(Measured)


class Measured:
    """Counts and times every request, in a span that continues the caller's trace (its
    `traceparent` header) or starts one: what the request stores is published in it. Plain
    ASGI: no task and no copy of the body per request, as a `BaseHTTPMiddleware` would make."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        method = scope["method"]
        status = 500  # what the server answers when the app raises before it answers

        async def answered(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        name = telemetry.TRACEPARENT.encode()
        parent = next((value.decode("latin-1") for key, value in scope.get("headers", [])
                       if key == name), None)
        with telemetry.continued(f"HTTP {method}", parent,
                                 kind=trace.SpanKind.SERVER) as span:
            try:
                await self.app(scope, receive, answered)
            finally:
                path = getattr(scope.get("route"), "path", "unmatched")
                span.update_name(f"{method} {path}")
                span.set_attribute("http.response.status_code", status)
                REQUESTS.labels(method, path, status).inc()
                LATENCY.labels(method, path).observe(time.perf_counter() - started)

