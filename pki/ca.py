"""The CA hierarchy: a self-signed root and issuing CAs name-constrained to the trust domain."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPublicKeyTypes
from cryptography.x509.oid import NameOID

from pki.signer import Signer
from pki.validity import window

ORGANIZATION = "weighstation"


@dataclass(frozen=True)
class Issuer:
    """A CA certificate with the signer for its key. `chain` holds the certificates above it (the root)."""

    certificate: x509.Certificate
    signer: Signer
    chain: tuple[x509.Certificate, ...]

    # Computed once per Issuer and reused on every issuance, CRL and OCSP response (the hot path).
    @cached_property
    def subject_key_identifier(self) -> x509.SubjectKeyIdentifier:
        return subject_key_identifier_of(self.certificate)

    @cached_property
    def authority_key_identifier(self) -> x509.AuthorityKeyIdentifier:
        """The AKI extension value for anything this issuer signs."""
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(self.subject_key_identifier)

    @cached_property
    def not_after(self) -> datetime:
        return self.certificate.not_valid_after_utc

    @cached_property
    def chain_with_self(self) -> tuple[x509.Certificate, ...]:
        """What a certificate this issuer signs is served with: this CA, then the ones above it."""
        return (self.certificate, *self.chain)


def subject_key_identifier_of(certificate: x509.Certificate) -> x509.SubjectKeyIdentifier:
    try:
        return certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.SubjectKeyIdentifier.from_public_key(certificate.public_key())


def ca_name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
        ]
    )


def build_root_ca(
    signer: Signer, *, common_name: str, now: datetime, ttl: timedelta, serial: int
) -> x509.Certificate:
    """A self-signed root: only signs issuing CAs and CRLs (RFC 5280 §4.2.1.3, §4.2.1.9)."""
    not_before, not_after = window(now, ttl, None)
    public_key = signer.public_key()
    name = ca_name(common_name)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(ca_key_usage(digital_signature=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    return builder.sign(signer.private_key(), signer.algorithm.signing_hash())


def issued_by(
    issuer: Issuer,
    subject: x509.Name,
    public_key: CertificateIssuerPublicKeyTypes,
    *,
    now: datetime,
    ttl: timedelta,
    serial: int,
) -> x509.CertificateBuilder:
    """A certificate of `subject` signed by `issuer`: names, key, serial, a validity window inside the
    issuer's, and both key identifiers; the caller adds its profile's extensions and signs."""
    not_before, not_after = window(now, ttl, issuer.not_after)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.certificate.subject)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(issuer.authority_key_identifier, critical=False)
    )


def build_issuing_ca(
    root: Issuer,
    public_key: CertificateIssuerPublicKeyTypes,
    *,
    common_name: str,
    trust_domain: str,
    now: datetime,
    ttl: timedelta,
    serial: int,
) -> x509.Certificate:
    """An issuing CA under `root`, able to sign only end-entity certificates within `trust_domain`."""
    builder = (
        issued_by(root, ca_name(common_name), public_key, now=now, ttl=ttl, serial=serial)
        # path_length=0: it may issue leaves only, never another CA.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        # digitalSignature lets it sign OCSP responses itself, without a delegated responder.
        .add_extension(ca_key_usage(digital_signature=True), critical=True)
        # Relying parties reject any URI SAN whose host is not the trust domain (RFC 5280 §4.2.1.10).
        .add_extension(
            x509.NameConstraints(
                permitted_subtrees=[x509.UniformResourceIdentifier(trust_domain)], excluded_subtrees=None
            ),
            critical=True,
        )
    )
    return builder.sign(root.signer.private_key(), root.signer.algorithm.signing_hash())


def ca_key_usage(*, digital_signature: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )
