"""The ASGI gate in front of the guard's and the worker's routes: the token before any body byte, a body cap (413).

FastAPI reads and parses a body before it runs a route's dependencies, so a 401 from a dependency comes after the
whole upload sits in memory. The gate matches the route first: a route that declares the auth dependency gets its
401 while the body is still unread, and every body is counted as it arrives (413 past the route's limit).
"""

from __future__ import annotations

import json
from typing import Any, Callable

from starlette.exceptions import HTTPException
from starlette.routing import Match

from headroom.auth import UNAUTHORIZED_DETAIL, token_matches

DEFAULT_BODY_LIMIT = 4 * 2**20  # JSON bodies: an Alertmanager webhook of 1000 alerts fits


class BodyTooLarge(HTTPException):
    """Raised from `receive` once a body passes its limit; FastAPI re-raises HTTPExceptions, so it becomes a 413."""

    def __init__(self, limit: int):
        super().__init__(413, f"the request body is larger than {limit} bytes")


class Gate:
    """Pure ASGI middleware; `needs_token(route)` and `body_limit(route)` say what each matched route requires."""

    def __init__(self, app, token: str, routes: Callable[[], list], needs_token: Callable[[Any], bool],
                 body_limit: Callable[[Any], int]):
        if not token:
            raise ValueError("the gate needs a non-empty token")
        self.app, self.token, self.routes = app, token, routes
        self.needs_token, self.body_limit = needs_token, body_limit

    def _route(self, scope) -> tuple[Any, set[str]]:
        """The route that takes this request, else the methods the routes on its path allow (for a 405's Allow)."""
        allowed: set[str] = set()
        for route in self.routes():
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return route, allowed
            if match is Match.PARTIAL:
                allowed.update(getattr(route, "methods", None) or ())
        return None, allowed

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route, allowed = self._route(scope)
        if route is None and allowed:  # Starlette's own 405 names only the first route's method
            await _answer(send, 405, "Method Not Allowed", [(b"allow", ", ".join(sorted(allowed)).encode())])
            return
        headers = dict(scope["headers"])
        if (
            route is not None
            and self.needs_token(route)
            and not token_matches(self.token, headers.get(b"authorization"))
        ):
            await _answer(send, 401, UNAUTHORIZED_DETAIL, [(b"www-authenticate", b"Bearer")])
            return
        limit = self.body_limit(route) if route is not None else DEFAULT_BODY_LIMIT
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            await _answer(send, 413, f"the request body is larger than {limit} bytes")
            return
        await self.app(scope, _counting(receive, limit), send)


def _counting(receive, limit: int):
    seen = 0

    async def counted():
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLarge(limit)
        return message

    return counted


async def _answer(send, status: int, detail: str, extra: list[tuple[bytes, bytes]] = ()) -> None:
    """A JSON error sent without reading the body; the server closes the connection (the body stays unread)."""
    body = json.dumps({"detail": detail}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
        *extra,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def install(app, token: str, auth, body_limits: dict[str, int] | None = None) -> None:
    """Put the gate and the sanitised 422 handler on a FastAPI `app` whose guarded routes declare `Depends(auth)`.

    `body_limits` maps a route's path (e.g. "/v1/batches") to its own limit; others get DEFAULT_BODY_LIMIT.
    """
    from fastapi.exceptions import RequestValidationError

    from headroom.echo import validation_response

    limits = body_limits or {}

    def needs_token(route) -> bool:
        return any(getattr(dep, "dependency", None) is auth for dep in getattr(route, "dependencies", []))

    def body_limit(route) -> int:
        return limits.get(getattr(route, "path", ""), DEFAULT_BODY_LIMIT)

    for route in app.router.routes:  # publish what the gate answers, so the schema matches the server
        responses = getattr(route, "responses", None)
        if responses is None:
            continue
        if needs_token(route):
            responses.setdefault(401, {"description": "missing or wrong bearer token"})
        if getattr(route, "body_field", None) is not None or route.path in limits:
            responses.setdefault(413, {"description": "the request body is larger than the limit"})
        if getattr(route, "body_field", None) is not None:
            responses.setdefault(400, {"description": "the body cannot be read as JSON (e.g. it is not UTF-8)"})
    app.add_middleware(
        Gate, token=token, routes=lambda: app.router.routes, needs_token=needs_token, body_limit=body_limit
    )
    app.add_exception_handler(RequestValidationError, validation_response)
