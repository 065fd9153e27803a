"""Clients authenticate with their OAuth2 access tokens (Authorization: Bearer); a guard checks the
token (provision.clients.Clients.verify) and the scope the route needs, and records who is asking."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi.spec import SecurityScheme

from provision.errors import AccessTokenInvalid

CLIENT_SCHEME = "clientToken"
CLIENT_SECURITY_SCHEME = SecurityScheme(
    type="http", scheme="bearer", bearer_format="JWT", description="An access token from /v1/oauth/token"
)
CLIENT: list[dict[str, list[str]]] = [{CLIENT_SCHEME: []}]

Guard = Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], None]


def require_client(scope: str) -> Guard:
    def guard(connection: ASGIConnection[Any, Any, Any, Any], _handler: BaseRouteHandler) -> None:
        scheme, _, token = connection.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise NotAuthorizedException(
                detail="an access token is required", headers={"WWW-Authenticate": "Bearer"}
            )
        try:
            claims = connection.app.state.services.clients.verify(token.strip())
        except AccessTokenInvalid as exc:
            raise NotAuthorizedException(
                detail=exc.reason, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}
            ) from None
        if scope not in claims.scopes:
            raise PermissionDeniedException(detail=f"the access token lacks the {scope!r} scope")
        connection.scope["user"] = f"client:{claims.client_id}"
        connection.state.client_id = claims.client_id

    return guard
