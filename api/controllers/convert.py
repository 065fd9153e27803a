"""Use-case views → wire bodies."""

from __future__ import annotations

from functools import lru_cache

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from api.schemas import AuthorityOut, CertificateOut
from provision.authority import CertificateView
from provision.hierarchy import CaView


@lru_cache(maxsize=32)
def _ca_pem(certificate: x509.Certificate) -> str:
    """CA certificates repeat on every response: encode each once."""
    return certificate.public_bytes(Encoding.PEM).decode()


def certificate_pem(view: CertificateView) -> str:
    return view.certificate.public_bytes(Encoding.PEM).decode()


def chain_pem(view: CertificateView) -> str:
    return "".join(_ca_pem(c) for c in view.chain)


def certificate_out(view: CertificateView) -> CertificateOut:
    return CertificateOut(
        serial=view.serial,
        profile=view.profile,
        issuer_id=view.issuer_id,
        subject=view.subject,
        status=view.status,
        not_before=view.not_before,
        not_after=view.not_after,
        revoked_at=view.revoked_at,
        revocation_reason=view.revocation_reason,
        renewed_from=view.renewed_from,
        certificate_pem=certificate_pem(view),
        chain_pem=chain_pem(view),
    )


def authority_out(view: CaView) -> AuthorityOut:
    return AuthorityOut(
        id=view.id,
        kind=view.kind,
        status=view.status,
        not_before=view.not_before,
        not_after=view.not_after,
        certificate_pem=view.certificate.public_bytes(Encoding.PEM).decode(),
    )
