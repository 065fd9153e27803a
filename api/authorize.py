"""The one place every HTTP route is authorized: an app-level Litestar guard that asks Cedar.

For each request:
1. the action is the handler's OpenAPI operation id (the few routes outside the document have fixed
   names: `options`, `getOpenApi`, `getMetrics`); an operation with no entry in SCOPES is refused;
2. the principal comes from the credential: an OAuth2 access token (`Authorization: Bearer`, JOSE
   `typ: at+jwt`) names a client, whose registration is read now; a truck request JWT (`typ:
   truck-request+jwt`) or a client certificate from a trusted proxy names a truck (api.truck_auth);
   no credential the guard understands means Anonymous. Other bearer tokens (an enrollment token)
   belong to the use case;
3. a client's token must carry one of the operation's scopes (api.scopes.SCOPES);
4. the resource comes from the path: `truck` → Truck (`truck` and `sequence` of an evidence
   operation → that statement's Evidence), `fleet` → Fleet, `release_id` → Release, anything else →
   the Authority singleton, with entities from live state (provision.access);
5. Cedar decides with the active policy set. Public operations pass only because public.cedar
   permits them.

Refusals are problem+json, audited once with the actor, the operation and the resource: 401 when a
credential is missing or invalid (with WWW-Authenticate), 403 `forbidden` with the deciding forbid
policies (none: no policy permits it), 403 `insufficient-scope`.
"""

from __future__ import annotations

import logging
from typing import Any

from litestar import Request, Response
from litestar.concurrency import sync_to_thread
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.handlers import HTTPRouteHandler
from litestar.handlers.base import BaseRouteHandler

from api.problems import problem_response
from api.scopes import SCOPES, TRUCK_REQUEST_SCHEME
from api.services import Services
from api.truck_auth import authenticate_truck, truck_request_jwt
from pki.jws import unverified_type
from policies.entities import AUTHORITY, EntityRef
from policies.errors import PolicyError
from provision.access import ANONYMOUS, EVIDENCE_OPERATIONS, AccessDecision, Caller, evidence_ref
from provision.errors import AccessTokenInvalid

log = logging.getLogger("weighstation.http")


# -- refusals -----------------------------------------------------------------------------------------
class Refused(Exception):
    """An authorization refusal; rendered and audited once by `handle_refused`."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        action: str,
        resource: EntityRef,
        reasons: tuple[str, ...] = (),
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.action = action
        self.resource = resource
        self.reasons = reasons
        self.headers = headers


def handle_refused(request: Request[Any, Any, Any], exc: Refused) -> Response[bytes]:
    services: Services | None = getattr(request.app.state, "services", None)
    if services is not None:
        reason = exc.detail + (f" [{', '.join(exc.reasons)}]" if exc.reasons else "")
        services.audit_refusal(
            request,
            code=exc.code,
            reason=reason,
            action=exc.action[:64],
            target=f"{exc.resource.type}::{exc.resource.id}",
        )
    return problem_response(
        exc.status,
        exc.code,
        exc.detail,
        request,
        headers=exc.headers,
        reasons=list(exc.reasons) if exc.code == "forbidden" else None,
    )


# -- the guard ----------------------------------------------------------------------------------------
def operation_of(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> str:
    operation_id = getattr(handler, "operation_id", None)
    if isinstance(operation_id, str) and operation_id:
        return operation_id
    # Routes Litestar adds outside the OpenAPI document.
    if connection.scope.get("method") == "OPTIONS":
        return "options"
    path = connection.url.path
    openapi = connection.app.openapi_config
    docs = (openapi.path or "/schema").rstrip("/") if openapi is not None else None
    if docs is not None and (path == docs or path.startswith(docs + "/")):
        return "getOpenApi"
    if path == "/metrics":
        return "getMetrics"
    return f"unnamed:{path}"


_RESOURCE_PARAMS = (("truck", "Truck"), ("fleet", "Fleet"), ("release_id", "Release"))


def resource_of(path_params: dict[str, Any], action: str) -> EntityRef:
    if action in EVIDENCE_OPERATIONS:
        truck, sequence = path_params.get("truck"), path_params.get("sequence")
        if isinstance(truck, str) and isinstance(sequence, int):
            return evidence_ref(truck, sequence)
    for name, kind in _RESOURCE_PARAMS:
        value = path_params.get(name)
        if isinstance(value, str):
            return EntityRef(kind, value)
    return AUTHORITY


def _access_token(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    """The bearer token if it is an access token (typ at+jwt); other credentials are not ours."""
    scheme, _, token = connection.headers.get("authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token if unverified_type(token) == "at+jwt" else None


def _carries_truck_credential(connection: ASGIConnection[Any, Any, Any, Any], services: Services) -> bool:
    """A truck request JWT or a forwarded client certificate: checked without I/O, verified after."""
    if truck_request_jwt(connection.headers.get("authorization", "")) is not None:
        return True
    return bool(connection.headers.get(services.settings.client_cert_header, "").strip())


def _invalid_token(reason: str, action: str, resource: EntityRef) -> Refused:
    return Refused(
        401,
        "invalid-token",
        reason,
        action=action,
        resource=resource,
        headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
    )


def _truck_caller(connection: ASGIConnection[Any, Any, Any, Any], action: str, resource: EntityRef) -> Caller:
    """The truck the credential proves (api.truck_auth, provision.truck_requests); 401 if it fails."""
    try:
        requester = authenticate_truck(connection)
    except NotAuthorizedException as exc:
        raise _invalid_token(str(exc.detail), action, resource) from None
    if requester is None:
        return Caller()
    connection.scope["user"] = f"truck:{requester.truck_id}"
    return Caller(truck_id=requester.truck_id)


def _client_caller(
    connection: ASGIConnection[Any, Any, Any, Any],
    services: Services,
    token: str,
    action: str,
    resource: EntityRef,
) -> Caller:
    """The client the access token names, once its scope covers the operation."""
    try:
        claims = services.clients.verify(token)
    except AccessTokenInvalid as exc:
        raise _invalid_token(exc.reason, action, resource) from None
    connection.scope["user"] = f"client:{claims.client_id}"
    connection.state.client_id = claims.client_id
    needed = SCOPES[action]
    if needed is not None and not needed & claims.scopes:
        wanted = " ".join(sorted(needed))
        raise Refused(
            403,
            "insufficient-scope",
            f"{action} needs an access token with one of the scopes: {wanted}",
            action=action,
            resource=resource,
            headers={"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{wanted}"'},
        )
    return Caller(client_id=claims.client_id)


def _authenticate_and_decide(
    connection: ASGIConnection[Any, Any, Any, Any],
    services: Services,
    token: str | None,
    action: str,
    resource: EntityRef,
) -> AccessDecision:
    """Synchronous (database reads): run in one worker thread per request."""
    if token is not None:
        caller = _client_caller(connection, services, token, action, resource)
    elif _carries_truck_credential(connection, services):
        caller = _truck_caller(connection, action, resource)
    else:
        caller = Caller()
    return _decide(services, caller, action, resource)


def _credential_for(handler: BaseRouteHandler) -> str:
    """What a caller should have sent, as the operation's OpenAPI security declares it."""
    declared = handler.resolve_security() if isinstance(handler, HTTPRouteHandler) else []
    schemes = {name for requirement in declared for name in requirement}
    if TRUCK_REQUEST_SCHEME not in schemes:
        return "an access token"
    if schemes == {TRUCK_REQUEST_SCHEME}:
        return "the truck's request JWT (typ truck-request+jwt, signed by its identity key)"
    return "an access token or the truck's request JWT (typ truck-request+jwt, signed by its identity key)"


def _who(principal: EntityRef) -> str:
    return "anonymous" if principal == ANONYMOUS else f"{principal.type}::{principal.id}"


async def authorize(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    services: Services = connection.app.state.services
    action = operation_of(connection, handler)
    resource = resource_of(connection.path_params, action)
    if action not in SCOPES:
        # Fail closed: a new operation is reachable only once it has a Cedar action, a scope entry
        # and a policy.
        raise Refused(
            403,
            "forbidden",
            f"operation {action!r} has no authorization entry",
            action=action,
            resource=resource,
        )
    token = _access_token(connection)
    if token is None and resource == AUTHORITY and not _carries_truck_credential(connection, services):
        decided = _decide(services, Caller(), action, resource)  # Anonymous on the authority: no I/O
    elif token is not None and services.access.reads_inline:
        # A client's token: only reads, and SQLite reads are in-process CPU work, so a hop to a worker
        # thread buys nothing but GIL hand-offs. (A truck credential spends its jti: a write, in a thread.)
        decided = _authenticate_and_decide(connection, services, token, action, resource)
    else:
        decided = await sync_to_thread(
            _authenticate_and_decide, connection, services, token, action, resource
        )
    if decided.decision.allowed:
        # The client's registration as read just now, for the handler (the decision API): not read twice.
        connection.state.client = decided.client
        return
    reasons = decided.decision.reasons
    # Anonymous and no forbid named: a credential is what is missing (a forbid that could not be
    # evaluated, e.g. on an unknown truck, does not make it a 403: nothing permits Anonymous anyway).
    if decided.principal == ANONYMOUS and not reasons:
        raise Refused(
            401,
            "unauthorized",
            f"{action} needs {_credential_for(handler)} (Authorization: Bearer)",
            action=action,
            resource=resource,
            headers={"WWW-Authenticate": "Bearer"},
        )
    why = "refused by " + ", ".join(reasons) if reasons else "no policy permits it"
    if decided.decision.errors:
        why += " (a policy could not be evaluated: " + "; ".join(decided.decision.errors)[:300] + ")"
    raise Refused(
        403,
        "forbidden",
        f"{_who(decided.principal)} may not {action} on {resource.type}::{resource.id}: {why}",
        action=action,
        resource=resource,
        reasons=reasons,
    )


def _decide(services: Services, caller: Caller, action: str, resource: EntityRef) -> AccessDecision:
    try:
        return services.access.decide(caller, action, resource)
    except AccessTokenInvalid as exc:
        raise _invalid_token(exc.reason, action, resource) from None
    except PolicyError as exc:
        # The action does not apply to this resource type, or is unknown: deny, and say so in the log
        # because it is a wiring mistake, not the caller's.
        log.error("authorization request invalid", extra={"action": action, "reason": exc.reason})
        raise Refused(
            403,
            "forbidden",
            f"no policy can allow {action} here: {exc.reason[:300]}",
            action=action,
            resource=resource,
        ) from None
