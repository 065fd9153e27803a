from __future__ import annotations

from datetime import timedelta
from typing import Any

from litestar import Controller, Request, get, post
from litestar.params import Parameter

from api.auth import OPERATOR, require_admin
from api.context import request_id_var
from api.controllers.convert import certificate_out
from api.metrics import certificates_issued, certificates_revoked
from api.problems import problems
from api.schemas import CertificateOut, IssueRequest, RenewRequest, RevokeRequest
from provision.audit import Actor
from provision.authority import Authority

SerialParam = Parameter(description="Certificate serial number, hex", max_length=64)


def _actor(request: Request[Any, Any, Any]) -> Actor:
    user = request.scope.get("user")
    return Actor(user if isinstance(user, str) else "anonymous", request_id_var.get() or None)


def _authority(request: Request[Any, Any, Any]) -> Authority:
    authority: Authority = request.app.state.services.authority
    return authority


def _ttl(seconds: int | None) -> timedelta | None:
    return timedelta(seconds=seconds) if seconds is not None else None


class CertificateController(Controller):
    path = "/v1/certificates"
    tags = ("certificates",)

    @post(
        "/",
        operation_id="issueCertificate",
        guards=[require_admin],
        security=OPERATOR,
        summary="Issue a certificate from a CSR under a profile (truck, service, evidence)",
        responses=problems(400, 401, 413, 422, 503),
    )
    async def issue(self, request: Request[Any, Any, Any], data: IssueRequest) -> CertificateOut:
        view = await _authority(request).issue_async(
            _actor(request),
            profile=data.profile,
            csr=data.csr.encode(),
            uri_sans=data.uri_sans,
            dns_sans=data.dns_sans,
            ttl=_ttl(data.ttl_seconds),
        )
        certificates_issued.labels(view.profile).inc()
        return certificate_out(view)

    @get(
        "/{serial:str}",
        operation_id="getCertificate",
        sync_to_thread=True,
        summary="Look up a certificate and its status",
        responses=problems(404),
    )
    def show(self, request: Request[Any, Any, Any], serial: str = SerialParam) -> CertificateOut:
        return certificate_out(_authority(request).get(serial))

    @post(
        "/{serial:str}/revoke",
        operation_id="revokeCertificate",
        guards=[require_admin],
        security=OPERATOR,
        sync_to_thread=True,
        status_code=200,
        summary="Revoke a certificate (RFC 5280 reason)",
        responses=problems(400, 401, 404, 409, 503),
    )
    def revoke(
        self, request: Request[Any, Any, Any], data: RevokeRequest, serial: str = SerialParam
    ) -> CertificateOut:
        view = _authority(request).revoke(_actor(request), serial, data.reason)
        certificates_revoked.labels(data.reason).inc()
        return certificate_out(view)

    @post(
        "/{serial:str}/renew",
        operation_id="renewCertificate",
        guards=[require_admin],
        security=OPERATOR,
        sync_to_thread=True,
        summary="Renew: same identity and profile, new key allowed",
        responses=problems(400, 401, 404, 409, 422, 503),
    )
    def renew(
        self, request: Request[Any, Any, Any], data: RenewRequest, serial: str = SerialParam
    ) -> CertificateOut:
        view = _authority(request).renew(
            _actor(request), serial, csr=data.csr.encode(), ttl=_ttl(data.ttl_seconds)
        )
        certificates_issued.labels(view.profile).inc()
        return certificate_out(view)
