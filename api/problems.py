"""RFC 9457 problem+json for every error, with a stable `code`; refused requests are audited here
unless the use case already audited them (domain errors carry their own audit row)."""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from api.context import request_id_var
from attest.errors import AttestError
from pki import errors
from provision.errors import IdempotencyKeyInUse, InvalidAutonomyMode, InvalidIdempotencyKey, ProvisionError

PROBLEM_MEDIA_TYPE = "application/problem+json"
_TYPE_PREFIX = "urn:weighstation:problem:"
log = logging.getLogger("weighstation.http")


class Problem(msgspec.Struct, kw_only=True, omit_defaults=True):
    type: str
    title: str
    status: int
    code: str
    detail: str = ""
    instance: str = ""
    request_id: str = ""
    errors: list[dict[str, Any]] | None = None
    reasons: list[str] | None = None  # an authorization refusal: the @ids of the deciding policies


_KIND_STATUS = {
    "invalid": 422,
    "not_found": 404,
    "conflict": 409,
    "unavailable": 503,
    "forbidden": 403,
    "unauthorized": 401,
    "gone": 410,
}
_MALFORMED = (
    errors.MalformedCsr,
    errors.MalformedOcspRequest,
    errors.CsrSignatureInvalid,
    InvalidIdempotencyKey,
    InvalidAutonomyMode,
)
_STATUS_CODES = {
    400: "invalid-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    409: "conflict",
    410: "gone",
    413: "body-too-large",
    415: "unsupported-media-type",
    422: "unprocessable",
    429: "too-many-requests",
    503: "unavailable",
}


def problem_response(
    status: int,
    code: str,
    detail: str,
    request: Request[Any, Any, Any],
    *,
    headers: dict[str, str] | None = None,
    extra_errors: list[dict[str, Any]] | None = None,
    reasons: list[str] | None = None,
) -> Response[bytes]:
    body = Problem(
        type=_TYPE_PREFIX + code,
        title=code.replace("-", " "),
        status=status,
        code=code,
        detail=detail,
        instance=request.url.path,
        request_id=request_id_var.get(),
        errors=extra_errors,
        reasons=reasons,
    )
    return Response(
        msgspec.json.encode(body), status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers
    )


def _audit_refusal(request: Request[Any, Any, Any], status: int, code: str, detail: str) -> None:
    # Lookups that miss are not refusals; anything else that is turned away is.
    if request.method in {"GET", "HEAD"} and status in {404, 405}:
        return
    services = getattr(request.app.state, "services", None)
    if services is not None:
        services.audit_refusal(request, code=code, reason=detail)


def handle_domain_error(
    request: Request[Any, Any, Any], exc: errors.PkiError | ProvisionError | AttestError
) -> Response[bytes]:
    status = 400 if isinstance(exc, _MALFORMED) else _KIND_STATUS[exc.kind]
    headers = None
    if exc.kind == "unavailable":
        headers = {"Retry-After": "5"}
    elif exc.kind == "unauthorized":
        headers = {"WWW-Authenticate": "Bearer"}
    elif isinstance(exc, IdempotencyKeyInUse):
        headers = {"Retry-After": "1"}
    if isinstance(exc, ProvisionError | AttestError) and not exc.audited:
        # Unless the use case wrote the row itself (with the truck it concerns); PKI refusals are
        # audited by the authority.
        _audit_refusal(request, status, exc.code, exc.reason)
    return problem_response(status, exc.code, exc.reason, request, headers=headers)


def handle_http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    status = exc.status_code
    if status >= 500:
        return handle_unexpected(request, exc)
    code = _STATUS_CODES.get(status, "client-error")
    extra = exc.extra if isinstance(exc, ValidationException) and isinstance(exc.extra, list) else None
    detail = exc.detail or code
    _audit_refusal(request, status, code, detail)
    headers = dict(exc.headers or {})
    return problem_response(status, code, detail, request, headers=headers or None, extra_errors=extra)


def handle_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    log.error("unhandled error", exc_info=exc, extra={"request_id": request_id_var.get()})
    return problem_response(
        HTTP_500_INTERNAL_SERVER_ERROR,
        "internal-error",
        "the server failed; the request id identifies it in the logs",
        request,
    )


def problems(*statuses: int) -> dict[int, ResponseSpec]:
    """OpenAPI documentation of the problem responses an operation may return."""
    return {
        status: ResponseSpec(
            data_container=Problem,
            media_type=PROBLEM_MEDIA_TYPE,
            description=_STATUS_CODES.get(status, "error").replace("-", " "),
        )
        for status in statuses
    }
