"""OAuth2: client registration (operator), the token endpoint (client credentials, RFC 6749 §4.4; the
client authenticates with its secret or with a private_key_jwt assertion, RFC 7523 §2.2), the
authorization-server metadata (RFC 8414) and the rotation of the access-token signing key (operator).
Token-endpoint errors use RFC 6749 §5.2's JSON shape, which OAuth clients expect, and are audited like
every refusal."""

from __future__ import annotations

import base64
import binascii
from functools import partial
from typing import Any
from urllib.parse import unquote

from litestar import Controller, Request, Response, get, post
from litestar.concurrency import sync_to_thread

from api.attest_schemas import ClientIn, ClientOut, KeyRotationOut, RegisteredClientOut
from api.idempotency import IdempotencyKey, idempotent
from api.problems import problems
from api.scopes import CLIENT_CREDENTIALS, NEEDS_ADMIN
from api.services import actor_of, services_of
from provision.client_assertions import ASSERTION_TYPE, SIGNING_ALGORITHMS
from provision.clients import AUTH_METHODS, KINDS, PRIVATE_KEY_JWT, SECRET_BASIC, SECRET_POST, ClientView
from provision.errors import ClientAuthenticationFailed, InvalidScope
from provision.idempotency import Pending
from provision.token_keys import RotatedKey

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
        token_endpoint_auth_method=view.token_endpoint_auth_method,
        jwks={"keys": list(view.jwks)} if view.jwks else None,
    )


class ClientController(Controller):
    path = "/v1/clients"
    tags = ("oauth",)

    @post(
        "/",
        operation_id="registerClient",
        security=NEEDS_ADMIN,
        summary="Register an OAuth2 client (a secret, or a public JWKS for private_key_jwt)",
        responses=problems(400, 401, 403, 404, 422),
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
                token_endpoint_auth_method=data.token_endpoint_auth_method,
                jwks={"keys": data.jwks.keys} if data.jwks is not None else None,
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
        security=NEEDS_ADMIN,
        sync_to_thread=True,
        summary="OAuth2 clients",
        responses=problems(401, 403),
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


_FORM_FIELDS = (
    "grant_type",
    "client_id",
    "client_secret",
    "scope",
    "client_assertion_type",
    "client_assertion",
)


@post(
    "/v1/oauth/token",
    operation_id="issueAccessToken",
    security=CLIENT_CREDENTIALS,
    tags=["oauth"],
    summary="Client-credentials grant: client_secret_basic, client_secret_post or private_key_jwt",
    description=(
        "Form-encoded (RFC 6749 §4.4.2): `grant_type=client_credentials`, optional `scope`, and exactly "
        "the client's registered authentication: HTTP Basic (client_secret_basic), `client_id` + "
        "`client_secret` (client_secret_post), or `client_assertion_type=" + ASSERTION_TYPE + "` + "
        "`client_assertion` (private_key_jwt, RFC 7523 §2.2: iss = sub = client_id, aud = this token "
        "endpoint URL or the issuer, exp at most 5 min after iat, single-use jti, kid = a registered key, "
        "ES256/ES384/PS256/RS256). Errors are RFC 6749 §5.2 JSON."
    ),
    status_code=200,
)
async def token(request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
    services = services_of(request)
    form = await request.form()
    fields = {key: str(form.get(key, "")) for key in _FORM_FIELDS}
    if fields["grant_type"] != "client_credentials":
        services.audit_refusal(request, code="unsupported-grant-type", reason=fields["grant_type"][:64])
        return _oauth_error(400, "unsupported_grant_type", "only client_credentials is supported")
    basic = _basic(request.headers.get("authorization", ""))
    presented = [
        method
        for method, present in (
            (SECRET_BASIC, basic is not None),
            (SECRET_POST, bool(fields["client_secret"])),
            (PRIVATE_KEY_JWT, bool(fields["client_assertion"] or fields["client_assertion_type"])),
        )
        if present
    ]
    if len(presented) > 1:
        # RFC 6749 §2.3: a client must not use more than one authentication method per request.
        services.audit_refusal(request, code="invalid-request", reason=f"several methods: {presented}")
        return _oauth_error(
            400, "invalid_request", f"more than one client authentication method: {presented}"
        )
    if not presented:
        services.audit_refusal(request, code="invalid-client", reason="no client credentials")
        return _oauth_error(
            401, "invalid_client", "client authentication required", {"WWW-Authenticate": "Basic"}
        )
    method = presented[0]
    client_id = basic[0] if basic is not None else fields["client_id"]
    scope = fields["scope"] or None
    try:
        if method == PRIVATE_KEY_JWT:
            if fields["client_assertion_type"] != ASSERTION_TYPE:
                raise ClientAuthenticationFailed(f"client_assertion_type must be {ASSERTION_TYPE}")
            if not fields["client_assertion"]:
                raise ClientAuthenticationFailed("client_assertion is missing")
            run = partial(services.clients.token_by_assertion, fields["client_assertion"], client_id, scope)
        else:
            secret = basic[1] if basic is not None else fields["client_secret"]
            if not client_id:
                raise ClientAuthenticationFailed("client_id is missing")
            run = partial(services.clients.token, client_id, secret, scope, method=method)
        issued = await sync_to_thread(run)
    except ClientAuthenticationFailed as exc:
        services.audit_refusal(request, code=exc.code, reason=f"{exc.reason} ({client_id[:64]})")
        challenge = {"WWW-Authenticate": "Basic"} if method == SECRET_BASIC else None
        return _oauth_error(401, "invalid_client", exc.reason, challenge)
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
        "token_endpoint_auth_methods_supported": list(AUTH_METHODS),
        # The algorithms a private_key_jwt assertion may be signed with (never none or HS*).
        "token_endpoint_auth_signing_alg_values_supported": list(SIGNING_ALGORITHMS),
        "response_types_supported": [],
        "client_kinds": list(KINDS),
    }


def _rotation(view: RotatedKey) -> KeyRotationOut:
    return KeyRotationOut(
        purpose=view.purpose, kid=view.kid, retired=list(view.retired), published_until=view.published_until
    )


@post(
    "/v1/oauth/keys/rotate",
    operation_id="rotateAccessTokenKey",
    security=NEEDS_ADMIN,
    tags=["oauth"],
    status_code=201,
    summary="Sign access tokens with a new key; the old one verifies until its tokens have expired",
    responses=problems(401, 403, 409, 422, 503),
)
async def rotate_access_token_key(
    request: Request[Any, Any, Any], idempotency_key: str | None = IdempotencyKey
) -> Response[KeyRotationOut]:
    async def run(pending: Pending[RotatedKey] | None) -> RotatedKey:
        clients = services_of(request).clients
        return await sync_to_thread(
            partial(clients.rotate_access_key, actor_of(request), idempotency=pending)
        )

    return await idempotent(
        request,
        "rotateAccessTokenKey",
        key=idempotency_key,
        out_type=KeyRotationOut,
        status_code=201,
        run=run,
        render=_rotation,
    )
