"""Endorsement-key (EK) certificate chain verification to a pinned TPM-manufacturer root.

cryptography's `x509.verification` implements the CA/B Forum (TLS) profile, which EK certificates
do not follow (critical directoryName SAN, TCG-only EKU, notAfter 9999). So the chain is built here,
with RFC 5280 §6.1's checks that matter for a pinned-root, no-revocation EK chain:

1. leaf → intermediates → root by issuer name and `verify_directly_issued_by` (signature);
2. the chain ends at one of `roots`, compared by full DER (a lookalike root does not count);
3. every certificate is valid at `now`;
4. every issuer has basicConstraints CA:true, keyUsage keyCertSign and a path length not exceeded;
5. the leaf is not a CA; no certificate has a critical extension this verifier does not handle.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtensionOID

from attest.errors import (
    EkCertificateExpired,
    EkCertificateNotYetValid,
    EkChainUntrusted,
    EkIssuerNotCa,
    EkKeyMismatch,
    EkLeafIsCa,
    EkRejected,
    EkUnhandledCriticalExtension,
    MalformedEkCertificate,
)
from attest.public import TpmtPublic

MAX_CHAIN_LENGTH = 6  # leaf + up to four intermediates + root

_HANDLED_CRITICAL = frozenset(
    {
        ExtensionOID.BASIC_CONSTRAINTS,
        ExtensionOID.KEY_USAGE,
        ExtensionOID.SUBJECT_ALTERNATIVE_NAME,  # EK profile: critical when the subject is empty
        ExtensionOID.EXTENDED_KEY_USAGE,
        ExtensionOID.CERTIFICATE_POLICIES,
    }
)


@dataclass(frozen=True)
class VerifiedEk:
    """An EK certificate with a verified chain to a pinned manufacturer root."""

    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]  # leaf first, pinned root last
    public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey

    @property
    def root(self) -> x509.Certificate:
        return self.chain[-1]


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def _describe(cert: x509.Certificate) -> str:
    return f"'{cert.subject.rfc4514_string()}' (serial {cert.serial_number:x})"


def _extensions(cert: x509.Certificate) -> x509.Extensions:
    try:
        return cert.extensions
    except ValueError as exc:
        raise MalformedEkCertificate(f"{_describe(cert)}: unparsable extensions: {exc}") from None


def _is_issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Names chain and `issuer`'s key verifies `cert`'s signature."""
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _candidate_paths(
    cert: x509.Certificate, pool: Sequence[x509.Certificate], roots: frozenset[bytes], seen: frozenset[bytes]
) -> list[list[x509.Certificate]]:
    """Every issuer path above `cert` (nearest issuer first) that ends at a pinned root."""
    if len(seen) >= MAX_CHAIN_LENGTH:
        return []
    paths: list[list[x509.Certificate]] = []
    for candidate in pool:
        der = _der(candidate)
        if der in seen or not _is_issued_by(cert, candidate):
            continue
        if der in roots:
            paths.append([candidate])
            continue
        for rest in _candidate_paths(candidate, pool, roots, seen | {der}):
            paths.append([candidate, *rest])
    return paths


def _check_certificate(cert: x509.Certificate, now: datetime) -> x509.Extensions:
    extensions = _extensions(cert)
    for ext in extensions:
        if ext.critical and ext.oid not in _HANDLED_CRITICAL:
            raise EkUnhandledCriticalExtension(
                f"{_describe(cert)}: critical extension {ext.oid.dotted_string} is not handled"
            )
    if now < cert.not_valid_before_utc:
        raise EkCertificateNotYetValid(
            f"{_describe(cert)} is valid from {cert.not_valid_before_utc.isoformat()}, "
            f"now is {now.isoformat()}"
        )
    if now > cert.not_valid_after_utc:
        raise EkCertificateExpired(
            f"{_describe(cert)} expired at {cert.not_valid_after_utc.isoformat()}, now is {now.isoformat()}"
        )
    return extensions


def _validate_path(chain: Sequence[x509.Certificate], now: datetime) -> None:
    """Steps 3-5 on one signature-valid path, leaf first."""
    for position, cert in enumerate(chain):
        extensions = _check_certificate(cert, now)
        try:
            basic: x509.BasicConstraints | None = extensions.get_extension_for_class(
                x509.BasicConstraints
            ).value
        except x509.ExtensionNotFound:
            basic = None
        if position == 0:
            if basic is not None and basic.ca:
                raise EkLeafIsCa(f"EK certificate {_describe(cert)} has basicConstraints CA:true")
            continue
        if basic is None or not basic.ca:
            raise EkIssuerNotCa(f"issuer {_describe(cert)} lacks basicConstraints CA:true")
        try:
            usage = extensions.get_extension_for_class(x509.KeyUsage).value
        except x509.ExtensionNotFound:
            raise EkIssuerNotCa(f"issuer {_describe(cert)} has no keyUsage extension") from None
        if not usage.key_cert_sign:
            raise EkIssuerNotCa(f"issuer {_describe(cert)} keyUsage lacks keyCertSign")
        # Intermediate CAs between this issuer and the leaf (RFC 5280 §4.2.1.9).
        below = position - 1
        if basic.path_length is not None and below > basic.path_length:
            raise EkIssuerNotCa(
                f"issuer {_describe(cert)} allows pathLen {basic.path_length}, {below} CA(s) follow it"
            )


def verify_ek_certificate(
    ek_cert_der: bytes,
    *,
    intermediates: Sequence[x509.Certificate],
    roots: Sequence[x509.Certificate],
    now: datetime,
) -> VerifiedEk:
    """Verify a DER EK certificate up to one of the pinned manufacturer `roots` at time `now`."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    try:
        leaf = x509.load_der_x509_certificate(ek_cert_der)
    except ValueError as exc:
        raise MalformedEkCertificate(f"EK certificate is not a DER X.509 certificate: {exc}") from None
    try:
        key = leaf.public_key()
    except (ValueError, TypeError) as exc:
        raise MalformedEkCertificate(f"EK certificate public key unreadable: {exc}") from None
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise MalformedEkCertificate(f"EK certificate key is {type(key).__name__}, not RSA or ECC")

    root_ders = frozenset(_der(root) for root in roots)
    pool: list[x509.Certificate] = []
    pool_ders: set[bytes] = set()
    for cert in (*intermediates, *roots):
        der = _der(cert)
        if der not in pool_ders:
            pool_ders.add(der)
            pool.append(cert)

    # Steps 1-2: signature paths from the leaf to a pinned root.
    paths = _candidate_paths(leaf, pool, root_ders, frozenset({ek_cert_der}))
    if not paths:
        raise EkChainUntrusted(
            f"no chain of valid signatures from EK certificate {_describe(leaf)} "
            f"(issuer '{leaf.issuer.rfc4514_string()}') to a pinned manufacturer root"
        )
    # Steps 3-5 on each path; the first that passes wins, else the first path's failure is reported.
    first_error: EkRejected | None = None
    for path in paths:
        chain = (leaf, *path)
        try:
            _validate_path(chain, now)
        except EkRejected as exc:
            first_error = first_error or exc
            continue
        return VerifiedEk(certificate=leaf, chain=chain, public_key=key)
    assert first_error is not None
    raise first_error


def _spki(key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def check_ek_matches(verified: VerifiedEk, ek_public: TpmtPublic) -> None:
    """Raise EkKeyMismatch unless the EK public area holds the key the EK certificate certifies."""
    tpm_key = ek_public.public_key()
    if _spki(tpm_key) != _spki(verified.public_key):
        raise EkKeyMismatch(
            f"EK public area key (name {ek_public.name().hex()}) is not the key in EK certificate "
            f"{_describe(verified.certificate)}"
        )
