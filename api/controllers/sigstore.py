"""Sigstore interop over HTTP: the `ClientTrustConfig` a stock Sigstore client verifies our bundles with,
and the export of a signed artifact (signed by an evidence-signing certificate issued here) as a
Sigstore bundle v0.3 whose hashedrekord 0.0.2 entry is in our transparency log."""

from __future__ import annotations

import json
from typing import Annotated, Any

import msgspec
from cryptography import x509
from litestar import Controller, Request, Response, get, post
from msgspec import Meta

from api.problems import problems
from api.scopes import PUBLIC
from api.services import actor_of, services_of
from provision.errors import ProvisionError
from provision.sigstore import MAX_ARTIFACT_BYTES, Sigstore

_JSON = "application/json"


class MalformedEvidenceCertificate(ProvisionError):
    code = "malformed-certificate"


class SigstoreUnavailable(ProvisionError):
    code = "sigstore-unavailable"
    kind = "unavailable"


class SigstoreExportIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    artifact: Annotated[
        bytes, Meta(min_length=1, max_length=MAX_ARTIFACT_BYTES, description="the signed bytes, base64")
    ]
    signature: Annotated[
        bytes, Meta(min_length=8, max_length=256, description="ECDSA P-256/SHA-256 over them, DER, base64")
    ]
    certificate_pem: Annotated[
        str, Meta(min_length=1, max_length=16384, description="the evidence-signing certificate, PEM")
    ]


def _sigstore(request: Request[Any, Any, Any]) -> Sigstore:
    sigstore = services_of(request).sigstore
    if sigstore is None:
        raise SigstoreUnavailable("the Sigstore keys are not loaded in this process")
    return sigstore


def _json(document: dict[str, Any]) -> Response[bytes]:
    return Response(json.dumps(document, indent=2).encode("utf-8"), media_type=_JSON)


class SigstoreController(Controller):
    path = "/v1/sigstore"
    tags = ("sigstore",)

    @get(
        "/trust-config",
        operation_id="getSigstoreTrustConfig",
        security=PUBLIC,
        sync_to_thread=True,
        media_type=_JSON,
        summary="ClientTrustConfig (trusted root v0.1 + signing config v0.2) for `sigstore --trust-config`",
        responses=problems(503),
    )
    def trust_config(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        return _json(_sigstore(request).trust_config())

    @post(
        "/bundles",
        operation_id="exportSigstoreBundle",
        security=PUBLIC,
        sync_to_thread=True,
        status_code=200,
        media_type=_JSON,
        summary="Log a signed artifact as a hashedrekord 0.0.2 entry and return its Sigstore bundle v0.3",
        responses=problems(400, 404, 422, 503),
    )
    def export(self, request: Request[Any, Any, Any], data: SigstoreExportIn) -> Response[bytes]:
        try:
            certificate = x509.load_pem_x509_certificate(data.certificate_pem.encode("utf-8"))
        except ValueError:
            raise MalformedEvidenceCertificate("certificate_pem is not one PEM certificate") from None
        document = _sigstore(request).export(
            actor_of(request), artifact=data.artifact, signature=data.signature, certificate=certificate
        )
        return _json(document)
