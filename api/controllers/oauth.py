"""OAuth2: client registration (operator), the token endpoint (client credentials, RFC 6749 §4.4) and
the authorization-server metadata (RFC 8414). Token-endpoint errors use RFC 6749 §5.2's JSON shape, which
OAuth clients expect, and are audited like every refusal."""

from __future__ import annotations

import base64
import binascii
from typing import Any
from urllib.parse import unquote

from litestar import Controller, Request, Response, get, post
from litestar.concurrency import sync_to_thread

from api.attest_schemas import ClientIn, ClientOut, RegisteredClientOut
from api.auth import OPERATOR, require_admin
from api.problems import problems
from api.services import actor_of, services_of
from provision.clients import KINDS, ClientView
from provision.errors import ClientAuthenticationFailed, InvalidScope

_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def _client(view: ClientView) -> ClientOut:
    return ClientOut(
        client_id=view.client_id,
        name=view.name,
        kind=view.kind,
        organisation=view.organisation,
        fleets=list(view.fleets),
        insurer_policies=list(view.insurer_policies),
        global_admin=view.global_admin,
        scopes=list(view.scopes),
        created_at=view.created_at,
    )


class ClientController(Controller):
    path = "/v1/clients"
    tags = ("oauth",)
    guards = (require_admin,)
    security = OPERATOR

    @post(
        "/",
        operation_id="registerClient",
        summary="Register an OAuth2 client",
        responses=problems(400, 401, 404),
    )
    async def register(
        self, request: Request[Any, Any, Any], data: ClientIn
    ) -> Response[RegisteredClientOut]:
        services = services_of(request)
        registered = await sync_to_thread(
            lambda: services.clients.register(
                actor_of(request),
                name=data.name,
                kind=data.kind,
                organisation=data.organisation,
                fleets=data.fleets,
                insurer_policies=data.insurer_policies,
                global_admin=data.global_admin,
                scopes=data.scopes,
            )
        )
        view = _client(registered.client)
        body = RegisteredClientOut(
            **{f: getattr(view, f) for f in view.__struct_fields__}, client_secret=registered.secret
        )
        return Response(body, status_code=201, headers=_NO_STORE)

    @get(
        "/",
        operation_id="listClients",
        sync_to_thread=True,
        summary="OAuth2 clients",
        responses=problems(401),
    )
    def list_clients(self, request: Request[Any, Any, Any]) -> list[ClientOut]:
        return [_client(view) for view in services_of(request).clients.clients()]


def _oauth_error(
    status: int, error: str, description: str, headers: dict[str, str] | None = None
) -> Response[dict[str, str]]:
    return Response(
        {"error": error, "error_description": description},
        status_code=status,
        headers={**_NO_STORE, **(headers or {})},
    )


def _basic(header: str) -> tuple[str, str] | None:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    client_id, sep, secret = decoded.partition(":")
    # RFC 6749 §2.3.1: both parts are form-urlencoded before the Basic encoding.
    return (unquote(client_id), unquote(secret)) if sep else None


@post(
    "/v1/oauth/token",
    operation_id="issueAccessToken",
    tags=["oauth"],
    summary="Client-credentials grant: client_secret_basic or client_secret_post",
    status_code=200,
)
async def token(request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
    services = services_of(request)
    form = await request.form()
    fields = {key: str(form.get(key, "")) for key in ("grant_type", "client_id", "client_secret", "scope")}
    if fields["grant_type"] != "client_credentials":
        services.audit_refusal(request, code="unsupported-grant-type", reason=fields["grant_type"][:64])
        return _oauth_error(400, "unsupported_grant_type", "only client_credentials is supported")
    basic = _basic(request.headers.get("authorization", ""))
    client_id, secret = basic or (fields["client_id"], fields["client_secret"])
    if not client_id or not secret:
        services.audit_refusal(request, code="invalid-client", reason="no client credentials")
        return _oauth_error(
            401, "invalid_client", "client authentication required", {"WWW-Authenticate": "Basic"}
        )
    try:
        issued = await sync_to_thread(services.clients.token, client_id, secret, fields["scope"] or None)
    except ClientAuthenticationFailed as exc:
        services.audit_refusal(request, code=exc.code, reason=f"{exc.reason} ({client_id[:64]})")
        return _oauth_error(401, "invalid_client", exc.reason, {"WWW-Authenticate": "Basic"})
    except InvalidScope as exc:
        services.audit_refusal(request, code=exc.code, reason=exc.reason)
        return _oauth_error(400, "invalid_scope", exc.reason)
    body = {
        "access_token": issued.token,
        "token_type": "Bearer",
        "expires_in": issued.expires_in,
        "scope": issued.scope,
    }
    return Response(body, status_code=200, headers=_NO_STORE)


@get(
    "/.well-known/oauth-authorization-server",
    operation_id="getAuthorizationServerMetadata",
    tags=["oauth"],
    sync_to_thread=False,
    summary="RFC 8414 authorization-server metadata",
)
def metadata(request: Request[Any, Any, Any]) -> dict[str, Any]:
    issuer = services_of(request).settings.public_url.rstrip("/")
    return {
        "issuer": issuer,
        "token_endpoint": f"{issuer}/v1/oauth/token",
        "jwks_uri": f"{issuer}/v1/jwks",
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "token_endpoint_auth_signing_alg_values_supported": ["ES256"],
        "response_types_supported": [],
        "client_kinds": list(KINDS),
    }
