"""Truck calls at provisioning: start (token → credential challenge) and activate (→ certificate chain).

Neither takes the operator token: start is authorised by the enrollment token, activate by the
challenge it answers (only the TPM that holds the EK recovers the secret)."""

from __future__ import annotations

from functools import partial
from typing import Any

from litestar import Controller, Request, Response, post
from litestar.concurrency import sync_to_thread
from litestar.params import Parameter

from api.controllers.convert import certificate_pem, chain_pem
from api.fleet_schemas import ChallengeOut, EnrollmentActivateIn, EnrollmentOut, EnrollmentStartIn
from api.idempotency import IdempotencyKey, idempotent
from api.metrics import certificates_issued
from api.problems import problems
from api.scopes import ENROLLING_TRUCK, PUBLIC
from api.services import actor_of, services_of
from provision.attestation import Evidence
from provision.enrollment import ActivateRequest, Challenge, Enrolled, StartRequest
from provision.errors import EnrollmentTokenInvalid, FirstQuoteRequired
from provision.idempotency import Pending

EnrollmentParam = Parameter(description="The enrollment id from the start call", max_length=64)


def _challenge(challenge: Challenge) -> ChallengeOut:
    return ChallengeOut(
        enrollment_id=challenge.enrollment_id,
        truck=challenge.truck,
        credential_blob=challenge.credential_blob,
        encrypted_secret=challenge.encrypted_secret,
        certify_nonce=challenge.certify_nonce,
        expires_at=challenge.expires_at,
        quote_nonce=challenge.quote_nonce,
        quote_bank=challenge.quote_bank,
        quote_pcrs=list(challenge.quote_pcrs),
    )


def enrolled_out(enrolled: Enrolled) -> EnrollmentOut:
    return EnrollmentOut(
        truck=enrolled.truck,
        fleet=enrolled.fleet,
        spiffe_id=enrolled.spiffe_id,
        serial=enrolled.certificate.serial,
        not_after=enrolled.certificate.not_after,
        certificate_pem=certificate_pem(enrolled.certificate),
        chain_pem=chain_pem(enrolled.certificate),
    )


def _bearer(request: Request[Any, Any, Any]) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise EnrollmentTokenInvalid("an enrollment token is required (Authorization: Bearer <token>)")
    return token.strip()


class EnrollmentController(Controller):
    path = "/v1/enrollments"
    tags = ("enrollment",)

    @post(
        "/",
        operation_id="startEnrollment",
        security=ENROLLING_TRUCK,
        summary="Start enrollment: EK certificate, EK and AK public areas → credential challenge",
        responses=problems(400, 401, 403, 409, 422, 503),
    )
    async def start(
        self,
        request: Request[Any, Any, Any],
        data: EnrollmentStartIn,
        idempotency_key: str | None = IdempotencyKey,
    ) -> Response[ChallengeOut]:
        token = _bearer(request)
        start = StartRequest(
            truck=data.truck,
            ek_certificate=data.ek_certificate,
            ek_intermediates=data.ek_intermediates,
            ek_public=data.ek_public,
            ak_public=data.ak_public,
        )

        async def run(pending: Pending[Challenge] | None) -> Challenge:
            call = partial(services_of(request).enrollment.start, idempotency=pending)
            return await sync_to_thread(call, actor_of(request), token, start)

        return await idempotent(
            request,
            "startEnrollment",
            key=idempotency_key,
            out_type=ChallengeOut,
            status_code=201,
            run=run,
            render=_challenge,
        )

    @post(
        "/{enrollment_id:str}/activate",
        operation_id="activateEnrollment",
        security=PUBLIC,
        summary="Answer the challenge: activated secret, the identity key's Certify, CSR → certificate chain",
        responses=problems(400, 403, 404, 409, 410, 422, 503),
    )
    async def activate(
        self,
        request: Request[Any, Any, Any],
        data: EnrollmentActivateIn,
        enrollment_id: str = EnrollmentParam,
        idempotency_key: str | None = IdempotencyKey,
    ) -> Response[EnrollmentOut]:
        first_quote = (data.quote, data.quote_signature, data.pcr_values, data.event_log)
        if any(part is not None for part in first_quote) and None in first_quote:
            raise FirstQuoteRequired("quote, quote_signature, pcr_values and event_log go together")
        answer = ActivateRequest(
            secret=data.secret,
            identity_public=data.identity_public,
            certify_info=data.certify_info,
            certify_signature=data.certify_signature,
            csr=data.csr.encode(),
            first_quote=(
                Evidence(
                    quote=data.quote,
                    signature=data.quote_signature,
                    pcr_values={int(k): v for k, v in data.pcr_values.items()},
                    event_log=data.event_log,
                )
                if data.quote and data.quote_signature and data.pcr_values is not None and data.event_log
                else None
            ),
        )

        async def run(pending: Pending[Enrolled] | None) -> Enrolled:
            call = partial(services_of(request).enrollment.activate, idempotency=pending)
            enrolled = await sync_to_thread(call, actor_of(request), enrollment_id, answer)
            certificates_issued.labels("truck").inc()
            return enrolled

        return await idempotent(
            request,
            "activateEnrollment",
            key=idempotency_key,
            out_type=EnrollmentOut,
            status_code=201,
            run=run,
            render=enrolled_out,
        )
