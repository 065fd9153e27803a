"""Operator authentication for now: one admin bearer token from settings (issue 6 replaces it with
OAuth2 client credentials and Cedar). Compared in constant time; the actor is recorded for audit."""

from __future__ import annotations

import hmac
from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi.spec import Reference, SecurityScheme

SECURITY_SCHEME = "adminBearer"
ENROLLMENT_SCHEME = "enrollmentToken"
SECURITY_COMPONENTS: dict[str, SecurityScheme | Reference] = {
    SECURITY_SCHEME: SecurityScheme(type="http", scheme="bearer", description="The operator's admin token"),
    ENROLLMENT_SCHEME: SecurityScheme(
        type="http",
        scheme="bearer",
        bearer_format="JWT",
        description="A single-use enrollment token the operator minted for the truck",
    ),
}
OPERATOR: list[dict[str, list[str]]] = [{SECURITY_SCHEME: []}]
ENROLLING_TRUCK: list[dict[str, list[str]]] = [{ENROLLMENT_SCHEME: []}]


def require_admin(connection: ASGIConnection[Any, Any, Any, Any], _handler: BaseRouteHandler) -> None:
    expected: str = connection.app.state.services.settings.admin_token
    header = connection.headers.get("authorization", "")
    scheme, _, presented = header.partition(" ")
    if (
        scheme.lower() != "bearer"
        or not presented
        or not hmac.compare_digest(presented.strip().encode(), expected.encode())
    ):
        raise NotAuthorizedException(
            detail="a valid operator bearer token is required", headers={"WWW-Authenticate": "Bearer"}
        )
    connection.scope["user"] = "admin"
