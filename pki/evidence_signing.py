"""Evidence-signing certificates: the Sigstore (Fulcio-style) profile of a truck's signing key.

ECDSA P-256 key, EKU codeSigning, the truck's SPIFFE ID as the only (URI) SAN, the authority's issuer
URL in the Fulcio OIDC-issuer extensions (1.3.6.1.4.1.57264.1.1 raw UTF-8, and .1.8 a DER
UTF8String), short validity, and exactly one embedded SCT from our CT key.

The issuing CA is a dedicated evidence CA under the root, without the trust-domain URI name
constraint of the issuing CAs: the stock Sigstore verifier builds the chain with cryptography's
x509 verification, which refuses URI name constraints ("unsupported name constraint"). The
trust-domain rule still holds at issuance (the evidence profile takes only the truck SPIFFE ID).

Issuance follows RFC 6962 §3.1: the CA signs a precertificate (the same TBSCertificate plus the
critical poison extension, last), the CT key signs an SCT over that TBSCertificate without the poison,
then the CA signs the final certificate with the SCT list extension in the poison's place. The final
certificate's TBS minus its SCT list is checked equal to what the SCT signed before it is returned.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPublicKeyTypes

from pki import der
from pki.ca import Issuer, ca_key_usage, ca_name, issued_by
from pki.errors import ProfileViolation
from pki.issue import LEAF, SIGN_ONLY, IssuerUrls
from pki.profiles import ProfileName, ValidatedRequest
from pki.sct import CtLog, Sct, sct_list_extension, spki_sha256
from pki.validity import window

OIDC_ISSUER_V1 = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.1")
OIDC_ISSUER_V2 = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.8")


def build_evidence_ca(
    root: Issuer,
    public_key: CertificateIssuerPublicKeyTypes,
    *,
    common_name: str,
    now: datetime,
    ttl: timedelta,
    serial: int,
) -> x509.Certificate:
    """The evidence CA under `root`: issues end-entity certificates only (path length 0)."""
    builder = (
        issued_by(root, ca_name(common_name), public_key, now=now, ttl=ttl, serial=serial)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(ca_key_usage(digital_signature=False), critical=True)
    )
    return builder.sign(root.signer.private_key(), root.signer.algorithm.signing_hash())


@dataclass(frozen=True)
class EvidenceCertificate:
    certificate: x509.Certificate
    precertificate: x509.Certificate
    sct: Sct


def _base(
    issuer: Issuer,
    request: ValidatedRequest,
    *,
    now: datetime,
    serial: int,
    urls: IssuerUrls | None,
    oidc_issuer: str,
) -> x509.CertificateBuilder:
    not_before, not_after = window(now, request.ttl, issuer.not_after)
    builder = (
        x509.CertificateBuilder()
        .issuer_name(issuer.certificate.subject)
        .subject_name(request.subject)
        .public_key(request.public_key)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(LEAF, critical=True)
        .add_extension(SIGN_ONLY, critical=True)
        .add_extension(request.profile.eku_extension, critical=False)
        .add_extension(request.subject_alternative_name, critical=len(request.subject) == 0)
        .add_extension(request.subject_key_identifier, critical=False)
        .add_extension(issuer.authority_key_identifier, critical=False)
        .add_extension(
            x509.UnrecognizedExtension(OIDC_ISSUER_V1, oidc_issuer.encode("utf-8")), critical=False
        )
        .add_extension(
            x509.UnrecognizedExtension(OIDC_ISSUER_V2, der.utf8_string(oidc_issuer)), critical=False
        )
    )
    if urls is not None and urls.crl_url:
        point = x509.DistributionPoint(
            full_name=[x509.UniformResourceIdentifier(urls.crl_url)],
            relative_name=None,
            reasons=None,
            crl_issuer=None,
        )
        builder = builder.add_extension(x509.CRLDistributionPoints([point]), critical=False)
    if urls is not None and urls.ocsp_url:
        access = x509.AccessDescription(
            x509.oid.AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(urls.ocsp_url)
        )
        builder = builder.add_extension(x509.AuthorityInformationAccess([access]), critical=False)
    return builder


def issue_evidence_certificate(
    issuer: Issuer,
    request: ValidatedRequest,
    ct_log: CtLog,
    *,
    now: datetime,
    serial: int,
    urls: IssuerUrls | None,
    oidc_issuer: str,
) -> EvidenceCertificate:
    """Precertificate, SCT, final certificate; see the module docstring."""
    if request.profile.name is not ProfileName.EVIDENCE:
        raise ProfileViolation(
            f"an evidence-signing certificate needs the evidence profile, not {request.profile.name}"
        )
    signer = issuer.signer
    algorithm = signer.algorithm.signing_hash()
    base = _base(issuer, request, now=now, serial=serial, urls=urls, oidc_issuer=oidc_issuer)
    precertificate = base.add_extension(x509.PrecertPoison(), critical=True).sign(
        signer.private_key(), algorithm
    )
    # The TBSCertificate without the poison: the same builder without it (the poison was last).
    unpoisoned = base.sign(signer.private_key(), algorithm).tbs_certificate_bytes
    timestamp_ms = int(now.timestamp() * 1000)
    sct = ct_log.sign_precertificate(
        timestamp_ms=timestamp_ms,
        issuer_key_hash=spki_sha256(issuer.certificate.public_key()),
        tbs=unpoisoned,
    )
    certificate = base.add_extension(sct_list_extension([sct]), critical=False).sign(
        signer.private_key(), algorithm
    )
    if certificate.tbs_precertificate_bytes != unpoisoned:
        raise ProfileViolation("the final certificate does not match the precertificate the SCT signed")
    return EvidenceCertificate(certificate=certificate, precertificate=precertificate, sct=sct)
