"""Revocation reasons and CRLs (RFC 5280 §5). Revocation is final: no certificateHold, no removeFromCRL."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from cryptography import x509

from pki.ca import Issuer
from pki.errors import InvalidRevocationReason
from pki.validity import as_utc


class RevocationReason(StrEnum):
    UNSPECIFIED = "unspecified"
    KEY_COMPROMISE = "key_compromise"
    CA_COMPROMISE = "ca_compromise"
    AFFILIATION_CHANGED = "affiliation_changed"
    SUPERSEDED = "superseded"
    CESSATION_OF_OPERATION = "cessation_of_operation"
    PRIVILEGE_WITHDRAWN = "privilege_withdrawn"
    AA_COMPROMISE = "aa_compromise"


_TO_X509 = {
    RevocationReason.UNSPECIFIED: x509.ReasonFlags.unspecified,
    RevocationReason.KEY_COMPROMISE: x509.ReasonFlags.key_compromise,
    RevocationReason.CA_COMPROMISE: x509.ReasonFlags.ca_compromise,
    RevocationReason.AFFILIATION_CHANGED: x509.ReasonFlags.affiliation_changed,
    RevocationReason.SUPERSEDED: x509.ReasonFlags.superseded,
    RevocationReason.CESSATION_OF_OPERATION: x509.ReasonFlags.cessation_of_operation,
    RevocationReason.PRIVILEGE_WITHDRAWN: x509.ReasonFlags.privilege_withdrawn,
    RevocationReason.AA_COMPROMISE: x509.ReasonFlags.aa_compromise,
}


def parse_reason(text: str) -> RevocationReason:
    """One of the snake_case RFC 5280 reason names; anything else raises InvalidRevocationReason."""
    try:
        return RevocationReason(text)
    except ValueError:
        allowed = ", ".join(RevocationReason)
        raise InvalidRevocationReason(
            f"unknown revocation reason {text[:64]!r} (one of: {allowed})"
        ) from None


def to_x509(reason: RevocationReason) -> x509.ReasonFlags:
    return _TO_X509[reason]


@dataclass(frozen=True)
class RevokedEntry:
    serial: int
    revoked_at: datetime
    reason: RevocationReason


def build_crl(
    issuer: Issuer,
    revoked: Iterable[RevokedEntry],
    *,
    crl_number: int,
    now: datetime,
    next_update: timedelta,
) -> x509.CertificateRevocationList:
    """A full CRL signed by `issuer`; last_update = now, next_update = now + next_update."""
    return _sign(_builder(issuer, revoked, crl_number=crl_number, now=now, next_update=next_update), issuer)


def build_delta_crl(
    issuer: Issuer,
    revoked_since_base: Iterable[RevokedEntry],
    *,
    crl_number: int,
    base_crl_number: int,
    now: datetime,
    next_update: timedelta,
) -> x509.CertificateRevocationList:
    """A delta CRL (RFC 5280 §5.2.4): only revocations since the full CRL numbered `base_crl_number`."""
    if base_crl_number >= crl_number:
        raise ValueError("a delta CRL's number must be greater than its base CRL number")
    builder = _builder(issuer, revoked_since_base, crl_number=crl_number, now=now, next_update=next_update)
    builder = builder.add_extension(x509.DeltaCRLIndicator(base_crl_number), critical=True)
    return _sign(builder, issuer)


def _builder(
    issuer: Issuer,
    revoked: Iterable[RevokedEntry],
    *,
    crl_number: int,
    now: datetime,
    next_update: timedelta,
) -> x509.CertificateRevocationListBuilder:
    if next_update <= timedelta(0):
        raise ValueError("next_update must be positive")
    now = as_utc(now)
    # Entries go in through the constructor: add_revoked_certificate copies the list on every call.
    entries = [_revoked(entry) for entry in sorted(revoked, key=lambda e: e.serial)]
    return (
        x509.CertificateRevocationListBuilder(revoked_certificates=entries)
        .issuer_name(issuer.certificate.subject)
        .last_update(now)
        .next_update(now + next_update)
        .add_extension(x509.CRLNumber(crl_number), critical=False)
        .add_extension(issuer.authority_key_identifier, critical=False)
    )


def _revoked(entry: RevokedEntry) -> x509.RevokedCertificate:
    builder = (
        x509.RevokedCertificateBuilder().serial_number(entry.serial).revocation_date(as_utc(entry.revoked_at))
    )
    # RFC 5280 §5.3.1: the reasonCode entry extension is omitted rather than set to unspecified.
    if entry.reason is not RevocationReason.UNSPECIFIED:
        builder = builder.add_extension(x509.CRLReason(to_x509(entry.reason)), critical=False)
    return builder.build()


def _sign(builder: x509.CertificateRevocationListBuilder, issuer: Issuer) -> x509.CertificateRevocationList:
    return builder.sign(issuer.signer.private_key(), issuer.signer.algorithm.signing_hash())
