"""provision.attestation.enrolled_ak: the per-attestation AK lookup, cached by the stored bytes."""

from __future__ import annotations

import pytest

from attest.errors import AkNotRestricted
from provision.attestation import enrolled_ak
from tests.unit.vectors.attest.load import quote_vector, set_tpmt_attributes


def test_same_stored_bytes_same_verified_ak() -> None:
    stored = quote_vector().ak_public
    first = enrolled_ak(stored)
    assert enrolled_ak(bytes(bytearray(stored))) is first  # equal bytes from another row: one check
    assert first.name == enrolled_ak(stored).name


def test_re_enrolled_ak_is_checked_afresh() -> None:
    # A truck re-enrolled with another AK: its new stored bytes give its new key, never the old one.
    old = enrolled_ak(quote_vector("ecc").ak_public)
    new = enrolled_ak(quote_vector("ecc384").ak_public)
    assert new is not old
    assert new.name != old.name and new.hash_alg != old.hash_alg


def test_refused_ak_raises_every_time() -> None:
    stored = quote_vector().ak_public
    not_restricted = set_tpmt_attributes(stored, clear=1 << 16)
    for _ in range(2):  # not cached as anything
        with pytest.raises(AkNotRestricted):
            enrolled_ak(not_restricted)
