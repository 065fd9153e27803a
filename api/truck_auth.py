"""Which truck is asking, from the credential its request carries (the Cedar guard asks this).

Two carriers (provision.truck_requests checks both):

- `Authorization: Bearer <jwt>` whose unverified JOSE header says `typ: truck-request+jwt`: a
  single-use request JWT signed by the truck's TPM identity key, `x5c` = its certificate;
- a client certificate a TLS-terminating reverse proxy verified and forwarded in a header (default
  `X-Forwarded-Client-Cert`, URL-escaped PEM as nginx's `$ssl_client_escaped_cert`). The header is
  believed only from a TCP peer in `WEIGHSTATION_TRUSTED_PROXIES`; from anywhere else it is refused,
  never ignored, so a misrouted or forged header is visible in the audit trail.

uvicorn and hypercorn do not expose the client certificate of a TLS connection they terminate to the
ASGI app (neither implements the ASGI TLS extension), so the proxy is the supported mTLS deployment.
uvicorn's proxy-header support rewrites the peer address from `X-Forwarded-For` for peers it trusts; a
client-certificate header arriving together with `X-Forwarded-For` is therefore refused, because the
peer address it would be trusted by may not be the TCP peer's.

A request JWT's jti is spent here (a write of its own) except on the operations in SPENT_BY_USE_CASE:
there the guard refuses a jti already spent and leaves this one in the connection's state
(`unspent_jti`); the use case spends it in the same transaction as its own write, and the route's
exception handlers spend it on every refusal (`spend_unspent`), so each request whose JWT verified
still spends it, whatever the outcome. Two presentations racing are settled by that insert.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from sqlalchemy.exc import SQLAlchemyError

from pki.jws import unverified_type
from provision.errors import TruckRequestInvalid
from provision.single_use import PendingJti
from provision.truck_requests import TYP, TruckRequester

log = logging.getLogger("weighstation.http")
# Operations whose use case spends the request JWT's jti in its own write transaction.
SPENT_BY_USE_CASE = frozenset({"issueAttestationNonce", "attestTruck"})
_UNSPENT = "truck_request_unspent_jti"
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_PEM_BEGIN = "-----BEGIN CERTIFICATE-----"
_MAX_HEADER = 16384  # a leaf plus an intermediate, URL-escaped, fits easily


def peer_is_trusted(host: str | None, networks: Sequence[Network]) -> bool:
    """Whether the TCP peer's address lies in one of the trusted proxy networks."""
    if not host or not networks:
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False  # a unix socket path or a name: not an address we were told to trust
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in networks)


def forwarded_certificate(value: str) -> str:
    """The PEM of a URL-escaped client-certificate header value; ValueError if it is not one."""
    if len(value) > _MAX_HEADER:
        raise ValueError(f"the client-certificate header is longer than {_MAX_HEADER} characters")
    pem = unquote(value.strip(), errors="strict")
    if not pem.startswith(_PEM_BEGIN):
        raise ValueError("the client-certificate header is not a URL-escaped PEM certificate")
    return pem


def truck_request_jwt(authorization: str) -> str | None:
    """The bearer token when its unverified JOSE header types it as a truck request JWT, else None
    (no header, another scheme, an access token, or not a JWT at all: not a truck's credential)."""
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token if unverified_type(token) == TYP else None


def _refused(reason: str) -> NotAuthorizedException:
    return NotAuthorizedException(detail=reason, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})


def _request_url(public_url: str, connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    """The URL the truck addressed: our public base plus the path as sent (htu has no query)."""
    raw = connection.scope.get("raw_path")
    path = raw.decode("latin-1") if isinstance(raw, bytes) and raw else connection.scope["path"]
    return public_url.rstrip("/") + path


def authenticate_truck(connection: ASGIConnection[Any, Any, Any, Any]) -> TruckRequester | None:
    """The truck the request's credential proves, None when it carries no truck credential; raises
    NotAuthorizedException (401) with the reason when it carries one that does not hold up."""
    services = connection.app.state.services
    settings = services.settings
    by_certificate: TruckRequester | None = None
    forwarded = connection.headers.get(settings.client_cert_header, "").strip()
    if forwarded:
        peer = connection.client.host if connection.client else None
        if not peer_is_trusted(peer, settings.trusted_proxy_networks):
            raise _refused(f"a client-certificate header from an untrusted address ({peer or 'unknown'})")
        if "x-forwarded-for" in connection.headers:
            raise _refused(
                "a client-certificate header with X-Forwarded-For: the peer address may not be the proxy's"
            )
        try:
            by_certificate = services.truck_requests.verify_client_certificate(
                forwarded_certificate(forwarded)
            )
        except ValueError as exc:
            raise _refused(str(exc)) from None
        except TruckRequestInvalid as exc:
            raise _refused(exc.reason) from None
    token = truck_request_jwt(connection.headers.get("authorization", ""))
    if token is None:
        return by_certificate
    operation = getattr(connection.scope.get("route_handler"), "operation_id", None)
    try:
        by_token: TruckRequester = services.truck_requests.verify(
            token,
            method=str(connection.scope.get("method", "")),
            url=_request_url(settings.public_url, connection),
            spend=operation not in SPENT_BY_USE_CASE,
        )
    except TruckRequestInvalid as exc:
        raise _refused(exc.reason) from None
    if by_token.unspent is not None:
        setattr(connection.state, _UNSPENT, by_token.unspent)
    if by_certificate is not None and by_certificate.truck_id != by_token.truck_id:
        raise _refused("the client certificate and the request JWT name different trucks")
    return by_token


def unspent_jti(connection: ASGIConnection[Any, Any, Any, Any]) -> PendingJti | None:
    """The verified request JWT's jti the guard left for the use case to spend, if any."""
    pending = getattr(connection.state, _UNSPENT, None)
    return pending if isinstance(pending, PendingJti) else None


def spend_unspent(connection: ASGIConnection[Any, Any, Any, Any]) -> None:
    """Spend, in a transaction of its own, a jti the guard left unspent (a refused request: the use
    case did not commit it). Already spent is fine; a database failure is logged, the refusal goes out."""
    pending = unspent_jti(connection)
    if pending is None:
        return
    setattr(connection.state, _UNSPENT, None)
    try:
        connection.app.state.services.truck_requests.spend(pending)
    except TruckRequestInvalid:
        pass  # spent by the use case, or by a concurrent presentation: what we wanted
    except SQLAlchemyError:
        log.exception("spending a refused request's jti failed", extra={"jti": pending.jti[:128]})
