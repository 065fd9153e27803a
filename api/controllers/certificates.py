from __future__ import annotations

from datetime import timedelta
from functools import partial
from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.concurrency import sync_to_thread
from litestar.params import Parameter

from api.controllers.convert import certificate_out
from api.idempotency import IdempotencyKey, idempotent
from api.metrics import certificates_issued, certificates_revoked
from api.problems import problems
from api.schemas import CertificateOut, IssueRequest, RenewRequest, RevokeRequest
from api.scopes import NEEDS_ADMIN
from api.services import actor_of, authority_of, services_of
from pki.names import parse_truck_id
from provision.authority import CertificateView
from provision.errors import AttestationRequired, UnknownTruck
from provision.idempotency import Pending

SerialParam = Parameter(description="Certificate serial number, hex", max_length=64)


def require_attested_truck(request: Request[Any, Any, Any], serial: str) -> None:
    """A truck certificate is renewed only for a truck with a recent affirming attestation."""
    services = services_of(request)
    view = services.authority.get(serial)
    if view.profile == "truck" and view.status == "valid":  # a revoked one is refused by renew itself
        truck = parse_truck_id(view.subject, services.settings.trust_domain).truck
        try:
            services.attestation.require_passing(truck, services.settings.renewal_attestation_window)
        except UnknownTruck:
            raise AttestationRequired(f"truck {truck} is not registered, so it has no attestation") from None


def _ttl(seconds: int | None) -> timedelta | None:
    return timedelta(seconds=seconds) if seconds is not None else None


class CertificateController(Controller):
    path = "/v1/certificates"
    tags = ("certificates",)

    @post(
        "/",
        operation_id="issueCertificate",
        security=NEEDS_ADMIN,
        summary="Issue a certificate from a CSR under a profile (truck, service, evidence)",
        responses=problems(400, 401, 403, 413, 422, 503),
    )
    async def issue(
        self,
        request: Request[Any, Any, Any],
        data: IssueRequest,
        idempotency_key: str | None = IdempotencyKey,
    ) -> Response[CertificateOut]:
        async def run(pending: Pending[CertificateView] | None) -> CertificateView:
            view = await authority_of(request).issue_async(
                actor_of(request),
                profile=data.profile,
                csr=data.csr.encode(),
                uri_sans=data.uri_sans,
                dns_sans=data.dns_sans,
                ttl=_ttl(data.ttl_seconds),
                idempotency=pending,
            )
            certificates_issued.labels(view.profile).inc()
            return view

        return await idempotent(
            request,
            "issueCertificate",
            key=idempotency_key,
            out_type=CertificateOut,
            status_code=201,
            run=run,
            render=certificate_out,
        )

    @get(
        "/{serial:str}",
        operation_id="getCertificate",
        sync_to_thread=True,
        summary="Look up a certificate and its status",
        responses=problems(404),
    )
    def show(self, request: Request[Any, Any, Any], serial: str = SerialParam) -> CertificateOut:
        return certificate_out(authority_of(request).get(serial))

    @post(
        "/{serial:str}/revoke",
        operation_id="revokeCertificate",
        security=NEEDS_ADMIN,
        status_code=200,
        summary="Revoke a certificate (RFC 5280 reason)",
        responses=problems(400, 401, 403, 404, 409, 503),
    )
    async def revoke(
        self,
        request: Request[Any, Any, Any],
        data: RevokeRequest,
        serial: str = SerialParam,
        idempotency_key: str | None = IdempotencyKey,
    ) -> Response[CertificateOut]:
        async def run(pending: Pending[CertificateView] | None) -> CertificateView:
            revoke = partial(authority_of(request).revoke, idempotency=pending)
            view = await sync_to_thread(revoke, actor_of(request), serial, data.reason)
            certificates_revoked.labels(data.reason).inc()
            return view

        return await idempotent(
            request,
            "revokeCertificate",
            key=idempotency_key,
            out_type=CertificateOut,
            status_code=200,
            run=run,
            render=certificate_out,
        )

    @post(
        "/{serial:str}/renew",
        operation_id="renewCertificate",
        security=NEEDS_ADMIN,
        summary="Renew: same identity and profile, new key allowed",
        responses=problems(400, 401, 403, 404, 409, 422, 503),
    )
    async def renew(
        self,
        request: Request[Any, Any, Any],
        data: RenewRequest,
        serial: str = SerialParam,
        idempotency_key: str | None = IdempotencyKey,
    ) -> Response[CertificateOut]:
        async def run(pending: Pending[CertificateView] | None) -> CertificateView:
            await sync_to_thread(require_attested_truck, request, serial)
            renew = partial(
                authority_of(request).renew,
                csr=data.csr.encode(),
                ttl=_ttl(data.ttl_seconds),
                idempotency=pending,
            )
            view = await sync_to_thread(renew, actor_of(request), serial)
            certificates_issued.labels(view.profile).inc()
            return view

        return await idempotent(
            request,
            "renewCertificate",
            key=idempotency_key,
            out_type=CertificateOut,
            status_code=201,
            run=run,
            render=certificate_out,
        )
