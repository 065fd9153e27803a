"""End-entity issuance and renewal. The hot path: everything per-issuer or per-profile is precomputed."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import AuthorityInformationAccessOID

from pki.ca import Issuer
from pki.errors import ProfileViolation
from pki.profiles import Profile, ValidatedRequest, validate_request
from pki.validity import window

LEAF = x509.BasicConstraints(ca=False, path_length=None)


def _key_usage(*, key_encipherment: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=key_encipherment,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


SIGN_ONLY = _key_usage(key_encipherment=False)
_SIGN_AND_ENCIPHER = _key_usage(key_encipherment=True)


@dataclass(frozen=True)
class IssuerUrls:
    """Where relying parties find revocation status; embedded in every certificate issued."""

    crl_url: str | None = None
    ocsp_url: str | None = None


@lru_cache(maxsize=64)
def _url_extensions(
    urls: IssuerUrls,
) -> tuple[x509.CRLDistributionPoints | None, x509.AuthorityInformationAccess | None]:
    crl = None
    if urls.crl_url:
        point = x509.DistributionPoint(
            full_name=[x509.UniformResourceIdentifier(urls.crl_url)],
            relative_name=None,
            reasons=None,
            crl_issuer=None,
        )
        crl = x509.CRLDistributionPoints([point])
    aia = None
    if urls.ocsp_url:
        aia = x509.AuthorityInformationAccess(
            [
                x509.AccessDescription(
                    AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(urls.ocsp_url)
                )
            ]
        )
    return crl, aia


def issue_certificate(
    issuer: Issuer,
    request: ValidatedRequest,
    *,
    now: datetime,
    serial: int,
    urls: IssuerUrls | None = None,
) -> x509.Certificate:
    """Sign `request` (already validated against its profile) with the issuing CA."""
    not_before, not_after = window(now, request.ttl, issuer.not_after)
    key_encipherment = request.profile.rsa_key_encipherment and isinstance(
        request.public_key, rsa.RSAPublicKey
    )
    builder = (
        x509.CertificateBuilder()
        .issuer_name(issuer.certificate.subject)
        .subject_name(request.subject)
        .public_key(request.public_key)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(LEAF, critical=True)
        .add_extension(_SIGN_AND_ENCIPHER if key_encipherment else SIGN_ONLY, critical=True)
        .add_extension(request.profile.eku_extension, critical=False)
        # RFC 5280 §4.2.1.6: with an empty subject the identity lives only in the SAN, so it is critical.
        .add_extension(request.subject_alternative_name, critical=len(request.subject) == 0)
        .add_extension(request.subject_key_identifier, critical=False)
        .add_extension(issuer.authority_key_identifier, critical=False)
    )
    if urls is not None:
        crl, aia = _url_extensions(urls)
        if crl is not None:
            builder = builder.add_extension(crl, critical=False)
        if aia is not None:
            builder = builder.add_extension(aia, critical=False)
    signer = issuer.signer
    return builder.sign(signer.private_key(), signer.algorithm.signing_hash())


def renewal_request(
    old: x509.Certificate,
    profile: Profile,
    csr: x509.CertificateSigningRequest,
    *,
    trust_domain: str,
    ttl: timedelta | None = None,
) -> ValidatedRequest:
    """Same identity (the old certificate's SANs), possibly a new key (the CSR's), checked again."""
    try:
        san = old.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise ProfileViolation("the certificate being renewed has no SAN") from None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    dns = san.get_values_for_type(x509.DNSName)
    return validate_request(profile, csr, trust_domain=trust_domain, uri_sans=uris, dns_sans=dns, ttl=ttl)
