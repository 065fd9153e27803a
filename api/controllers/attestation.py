"""Attestation over HTTP: nonces and quotes from trucks, status and quarantine for the operator, and
the JWKS that verifies result tokens.

A truck's request JWT on the nonce and attestation routes is spent by the use case in its own write
transaction (api.truck_auth.SPENT_BY_USE_CASE); this controller's exception handlers spend it on any
refusal first (the guard's included), then answer as the application's handlers do. A replay that only
the use case's insert caught (two presentations racing) is answered as the guard answers a replay."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from litestar import Controller, Request, Response, get, post
from litestar.concurrency import sync_to_thread
from litestar.exceptions import HTTPException
from litestar.params import Parameter
from litestar.types import ExceptionHandlersMap

from api.attest_schemas import (
    EvidenceIn,
    LiftIn,
    NonceIn,
    NonceOut,
    ReleaseRef,
    ResultOut,
    StatusOut,
    TruckRenewIn,
)
from api.authorize import Refused, handle_refused, operation_of
from api.controllers.enrollment import enrolled_out
from api.controllers.log import handle_tlog_error
from api.fleet_schemas import EnrollmentOut
from api.metrics import certificates_issued
from api.problems import (
    handle_domain_error,
    handle_http_exception,
    handle_unexpected,
    problem_response,
    problems,
)
from api.scopes import NEEDS_FLEETS, NEEDS_STATUS_READ, TRUCK_SELF
from api.services import actor_of, services_of
from api.truck_auth import spend_unspent, unspent_jti
from attest.errors import AttestError
from pki.errors import PkiError
from policies.entities import EntityRef
from provision.attestation import Evidence, ResultView, StatusView
from provision.errors import JwtReplayed, ProvisionError
from tlog.errors import TlogError

TruckParam = Parameter(description="Truck id", max_length=64)


def _status(view: StatusView) -> StatusOut:
    return StatusOut(
        truck=view.truck,
        status=view.status,
        attested_at=view.attested_at,
        attested_until=view.attested_until,
        release_id=view.release_id,
        reasons=list(view.reasons),
        quarantined=view.quarantined,
        quarantine_reason=view.quarantine_reason,
        quarantined_at=view.quarantined_at,
    )


def _result(view: ResultView) -> ResultOut:
    release = ReleaseRef(id=view.release_id, version=view.release_version or "") if view.release_id else None
    return ResultOut(
        id=view.id,
        truck=view.truck,
        status=view.status,
        release=release,
        trust_vector=view.trust_vector,
        reasons=list(view.reasons),
        rebooted=view.rebooted,
        issued_at=view.issued_at,
        expires_at=view.expires_at,
        token=view.token,
    )


E = TypeVar("E", bound=Exception)


def _replayed(request: Request[Any, Any, Any], exc: JwtReplayed) -> Response[bytes]:
    """As the guard answers a replayed request JWT: 401 invalid-token, audited once."""
    headers = {"WWW-Authenticate": 'Bearer error="invalid_token"'}
    if exc.audited:  # the use case wrote the refusal's row (attestation.verify, with the truck)
        return problem_response(401, "invalid-token", exc.reason, request, headers=headers)
    truck = request.path_params.get("truck")
    refused = Refused(
        401,
        "invalid-token",
        exc.reason,
        action=operation_of(request, request.route_handler),
        resource=EntityRef("Truck", truck if isinstance(truck, str) else ""),
        headers=headers,
    )
    return handle_refused(request, refused)


def _spending_first(
    handler: Callable[[Request[Any, Any, Any], E], Response[bytes]],
) -> Callable[[Request[Any, Any, Any], E], Response[bytes]]:
    """`handler`, after spending the request JWT's jti if the refused request left it unspent."""

    def handle(request: Request[Any, Any, Any], exc: E) -> Response[bytes]:
        spend_unspent(request)
        if isinstance(exc, JwtReplayed):
            return _replayed(request, exc)
        return handler(request, exc)

    return handle


# The application's handlers (api.app), each after the spend; keep the two lists in step.
_SPENDING_HANDLERS: ExceptionHandlersMap = {
    Refused: _spending_first(handle_refused),
    PkiError: _spending_first(handle_domain_error),
    ProvisionError: _spending_first(handle_domain_error),
    AttestError: _spending_first(handle_domain_error),
    TlogError: _spending_first(handle_tlog_error),
    HTTPException: _spending_first(handle_http_exception),
    Exception: _spending_first(handle_unexpected),
}


class AttestationController(Controller):
    path = "/v1/trucks"
    tags = ("attestation",)
    exception_handlers = _SPENDING_HANDLERS

    @post(
        "/{truck:str}/attestation-nonces",
        operation_id="issueAttestationNonce",
        security=TRUCK_SELF,
        summary="A single-use nonce for the truck's next quote, with the PCR selection to quote",
        responses=problems(400, 404, 409),
    )
    async def nonce(
        self, request: Request[Any, Any, Any], data: NonceIn, truck: str = TruckParam
    ) -> Response[NonceOut]:
        services = services_of(request)
        view = await sync_to_thread(
            lambda: services.attestation.nonce(
                actor_of(request), truck, data.purpose, data.tender, request_jti=unspent_jti(request)
            )
        )
        body = NonceOut(
            id=view.id,
            truck=view.truck,
            purpose=view.purpose,
            tender=view.tender,
            nonce=view.nonce,
            extra_data=view.extra_data,
            bank=view.bank,
            pcrs=list(view.pcrs),
            expires_at=view.expires_at,
        )
        return Response(body, status_code=201, headers={"Cache-Control": "no-store"})

    @post(
        "/{truck:str}/attestations",
        operation_id="attestTruck",
        security=TRUCK_SELF,
        summary="Quote, signature, PCR values and event log → signed attestation result",
        responses=problems(400, 403, 404, 409, 410, 422),
    )
    async def attest(
        self, request: Request[Any, Any, Any], data: EvidenceIn, truck: str = TruckParam
    ) -> Response[ResultOut]:
        evidence = Evidence(
            quote=data.quote,
            signature=data.signature,
            pcr_values={int(k): v for k, v in data.pcr_values.items()},
            event_log=data.event_log,
        )
        services = services_of(request)
        view = await sync_to_thread(
            lambda: services.attestation.attest(
                actor_of(request), truck, data.nonce_id, evidence, request_jti=unspent_jti(request)
            )
        )
        return Response(_result(view), status_code=201)

    @post(
        "/{truck:str}/renewals",
        operation_id="renewTruckCertificate",
        security=TRUCK_SELF,
        summary="Renew the truck certificate: CSR by its TPM identity key, after an affirming attestation",
        responses=problems(400, 403, 404, 409, 422),
    )
    async def renew(
        self, request: Request[Any, Any, Any], data: TruckRenewIn, truck: str = TruckParam
    ) -> Response[EnrollmentOut]:
        services = services_of(request)
        enrolled = await sync_to_thread(services.renewal.renew, actor_of(request), truck, data.csr.encode())
        certificates_issued.labels("truck").inc()
        return Response(enrolled_out(enrolled), status_code=201)

    @get(
        "/{truck:str}/attestation",
        operation_id="getAttestationStatus",
        security=NEEDS_STATUS_READ,
        sync_to_thread=True,
        summary="The truck's attestation status: attested until, last result, reasons, quarantine",
        responses=problems(401, 403, 404),
    )
    def show(self, request: Request[Any, Any, Any], truck: str = TruckParam) -> StatusOut:
        return _status(services_of(request).attestation.status(truck))

    @post(
        "/{truck:str}/quarantine/lift",
        operation_id="liftQuarantine",
        security=NEEDS_FLEETS,
        status_code=200,
        summary="Lift the truck's quarantine (audited); its next attestation decides again",
        responses=problems(400, 401, 403, 404, 409),
    )
    async def lift(self, request: Request[Any, Any, Any], data: LiftIn, truck: str = TruckParam) -> StatusOut:
        services = services_of(request)
        view = await sync_to_thread(
            services.attestation.lift_quarantine, actor_of(request), truck, data.reason
        )
        return _status(view)


@get(
    "/v1/jwks",
    operation_id="getJwks",
    sync_to_thread=True,
    tags=["attestation"],
    summary="Keys of the tokens the authority signs",
)
def jwks(request: Request[Any, Any, Any]) -> dict[str, list[dict[str, str]]]:
    return services_of(request).token_keys.jwks()
