"""A truck's Sigstore evidence over HTTP: the evidence-signing certificate a truck asks for its TPM
identity key (the CSR's proof of possession of the enrolled key authenticates it), and the Sigstore
bundle v0.3 of a statement it submitted with that certificate, for `sigstore verify --offline`."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Annotated, Any

import msgspec
from cryptography.hazmat.primitives.serialization import Encoding
from litestar import Controller, Request, Response, get, post
from msgspec import Meta

from api.controllers.statements import SequenceParam, TruckParam
from api.problems import problems
from api.scopes import NEEDS_EVIDENCE_READ, TRUCK_SELF
from api.services import actor_of, services_of
from pki.profiles import profile_for
from provision.evidence_certificates import TruckEvidenceCertificates
from provision.statement_sigstore import SigstoreNotLoaded, StatementSigstore
from tlog.sigstore import BUNDLE_MEDIA_TYPE

_MAX_TTL = int(profile_for("evidence", truck_default_ttl=timedelta(hours=1)).max_ttl.total_seconds())


class EvidenceCertificateIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    csr: Annotated[
        str,
        Meta(
            min_length=1,
            max_length=16384,
            description="PKCS#10 (PEM) signed by the truck's enrolled TPM identity key (names ignored)",
        ),
    ]
    ttl_seconds: (
        Annotated[
            int, Meta(ge=10, le=_MAX_TTL, description="validity in seconds (default: the evidence profile's)")
        ]
        | None
    ) = None


class EvidenceCertificateOut(msgspec.Struct, kw_only=True):
    truck: str
    spiffe_id: str
    serial: str
    not_before: datetime
    not_after: datetime
    certificate_pem: str
    chain_pem: str  # the evidence CA, then the root


def _evidence(request: Request[Any, Any, Any]) -> TruckEvidenceCertificates:
    issuer = services_of(request).evidence_certificates
    if issuer is None:
        raise SigstoreNotLoaded("the Sigstore keys are not loaded in this process")
    return issuer


def _statements(request: Request[Any, Any, Any]) -> StatementSigstore:
    exporter = services_of(request).statement_sigstore
    if exporter is None:
        raise SigstoreNotLoaded("the Sigstore keys are not loaded in this process")
    return exporter


class TruckSigstoreController(Controller):
    path = "/v1/trucks"
    tags = ("sigstore",)

    @post(
        "/{truck:str}/evidence-certificates",
        operation_id="issueEvidenceCertificate",
        security=TRUCK_SELF,
        sync_to_thread=True,
        status_code=201,
        summary="Issue an evidence-signing certificate (Sigstore profile, one SCT) for the truck's enrolled "
        "TPM identity key; the CSR must be signed by that key",
        responses=problems(400, 403, 404, 409, 422, 503),
    )
    def issue(
        self, request: Request[Any, Any, Any], data: EvidenceCertificateIn, truck: str = TruckParam
    ) -> EvidenceCertificateOut:
        ttl = timedelta(seconds=data.ttl_seconds) if data.ttl_seconds is not None else None
        issued = _evidence(request).issue(actor_of(request), truck, data.csr.encode(), ttl=ttl)
        view = issued.certificate
        return EvidenceCertificateOut(
            truck=issued.truck,
            spiffe_id=issued.spiffe_id,
            serial=view.serial,
            not_before=view.not_before,
            not_after=view.not_after,
            certificate_pem=view.certificate.public_bytes(Encoding.PEM).decode("ascii"),
            chain_pem="".join(c.public_bytes(Encoding.PEM).decode("ascii") for c in view.chain),
        )

    @get(
        "/{truck:str}/statements/{sequence:int}/sigstore",
        operation_id="exportStatementSigstoreBundle",
        security=NEEDS_EVIDENCE_READ,
        sync_to_thread=True,
        media_type=BUNDLE_MEDIA_TYPE,
        summary="The Sigstore bundle v0.3 of a statement submitted with an evidence certificate "
        "(hashedrekord 0.0.2 entry in our log, RFC 3161 timestamp taken at submission), for "
        "`sigstore verify --offline` with the trust config of GET /v1/sigstore/trust-config",
        responses=problems(400, 401, 403, 404, 409, 503),
    )
    def export(
        self, request: Request[Any, Any, Any], truck: str = TruckParam, sequence: int = SequenceParam
    ) -> Response[bytes]:
        document = _statements(request).bundle(truck, sequence)
        filename = f"{truck}-{sequence}.sigstore.json"
        return Response(
            json.dumps(document, indent=2).encode("utf-8"),
            media_type=BUNDLE_MEDIA_TYPE,
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )
