from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509

from pki.errors import InvalidRevocationReason
from pki.revocation import (
    RevocationReason,
    RevokedEntry,
    build_crl,
    build_delta_crl,
    parse_reason,
    to_x509,
)
from tests.unit.pki_helpers import NOW, CaPair, make_ca


@pytest.fixture
def ca(tmp_path: Path) -> CaPair:
    return make_ca(tmp_path)


def test_every_reason_round_trips_and_maps_to_rfc5280() -> None:
    for reason in RevocationReason:
        assert parse_reason(reason.value) is reason
        assert to_x509(reason).name == reason.value
    assert to_x509(RevocationReason.KEY_COMPROMISE) is x509.ReasonFlags.key_compromise


@pytest.mark.parametrize("text", ["certificate_hold", "remove_from_crl", "keyCompromise", "", "stolen"])
def test_unknown_revocation_reason(text: str) -> None:
    with pytest.raises(InvalidRevocationReason):
        parse_reason(text)


def test_crl_contents(ca: CaPair) -> None:
    entries = [
        RevokedEntry(
            serial=0x30, revoked_at=NOW - timedelta(hours=2), reason=RevocationReason.KEY_COMPROMISE
        ),
        RevokedEntry(serial=0x10, revoked_at=NOW - timedelta(hours=1), reason=RevocationReason.UNSPECIFIED),
    ]
    crl = build_crl(ca.issuing, entries, crl_number=7, now=NOW, next_update=timedelta(hours=24))
    assert crl.is_signature_valid(ca.issuing.signer.public_key())
    assert crl.issuer == ca.issuing.certificate.subject
    assert crl.last_update_utc == NOW
    assert crl.next_update_utc == NOW + timedelta(hours=24)
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 7
    aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ca.issuing.subject_key_identifier.digest
    assert [r.serial_number for r in crl] == [0x10, 0x30]

    compromised = crl.get_revoked_certificate_by_serial_number(0x30)
    assert compromised is not None
    assert compromised.revocation_date_utc == NOW - timedelta(hours=2)
    assert compromised.extensions.get_extension_for_class(x509.CRLReason).value.reason is (
        x509.ReasonFlags.key_compromise
    )
    unspecified = crl.get_revoked_certificate_by_serial_number(0x10)
    assert unspecified is not None
    assert len(unspecified.extensions) == 0  # unspecified: reasonCode omitted (RFC 5280 §5.3.1)


def test_empty_crl(ca: CaPair) -> None:
    crl = build_crl(ca.issuing, [], crl_number=1, now=NOW, next_update=timedelta(hours=1))
    assert len(crl) == 0
    assert crl.is_signature_valid(ca.issuing.signer.public_key())


def test_delta_crl(ca: CaPair) -> None:
    entry = RevokedEntry(serial=0x50, revoked_at=NOW, reason=RevocationReason.SUPERSEDED)
    delta = build_delta_crl(
        ca.issuing, [entry], crl_number=9, base_crl_number=7, now=NOW, next_update=timedelta(hours=1)
    )
    indicator = delta.extensions.get_extension_for_class(x509.DeltaCRLIndicator)
    assert indicator.critical and indicator.value.crl_number == 7
    assert delta.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 9
    assert delta.is_signature_valid(ca.issuing.signer.public_key())


def test_delta_crl_number_must_exceed_base(ca: CaPair) -> None:
    with pytest.raises(ValueError, match="base"):
        build_delta_crl(
            ca.issuing, [], crl_number=7, base_crl_number=7, now=NOW, next_update=timedelta(hours=1)
        )
