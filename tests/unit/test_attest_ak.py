"""attest.ak: each enrollment rule on the recorded AKs, negatives mutating one field each."""

from __future__ import annotations

import pytest

from attest.ak import check_attestation_key
from attest.alg import Alg, Curve
from attest.errors import (
    AkCanDecrypt,
    AkNotFixedParent,
    AkNotFixedTpm,
    AkNotRestricted,
    AkNotSensitiveDataOrigin,
    AkNotSigning,
    AkRejected,
    AkSchemeNotPinned,
    AkUnsupportedScheme,
    AkWeakKey,
    AkWeakNameAlg,
    MalformedStructure,
)
from attest.public import ObjectAttributes, parse_tpm2b_public
from tests.unit.vectors.attest.load import NAME_ALG_AT, parameters_at, put_u16, raw, rewrap, set_attributes

KINDS = ["rsa", "ecc"]


def check(data: bytes) -> None:
    check_attestation_key(parse_tpm2b_public(data))


@pytest.mark.parametrize("kind", KINDS)
def test_recorded_aks_pass(kind: str) -> None:
    verified = check_attestation_key(parse_tpm2b_public(raw(f"ak-{kind}.pub")))
    assert verified.name == raw(f"ak-{kind}.name")
    assert verified.scheme == (Alg.RSASSA if kind == "rsa" else Alg.ECDSA)
    assert verified.hash_alg == Alg.SHA256


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("flag", "error"),
    [
        (ObjectAttributes.RESTRICTED, AkNotRestricted),
        (ObjectAttributes.SIGN, AkNotSigning),
        (ObjectAttributes.FIXED_TPM, AkNotFixedTpm),
        (ObjectAttributes.FIXED_PARENT, AkNotFixedParent),
        (ObjectAttributes.SENSITIVE_DATA_ORIGIN, AkNotSensitiveDataOrigin),
    ],
    ids=["without_restricted", "without_sign", "without_fixed_tpm", "without_fixed_parent", "without_sdo"],
)
def test_ak_without_required_attribute(kind: str, flag: ObjectAttributes, error: type[AkRejected]) -> None:
    with pytest.raises(error) as caught:
        check(set_attributes(raw(f"ak-{kind}.pub"), clear=flag))
    assert caught.value.code.startswith("ak-")
    assert caught.value.kind == "invalid"


@pytest.mark.parametrize("kind", KINDS)
def test_ak_with_decrypt(kind: str) -> None:
    with pytest.raises(AkCanDecrypt):
        check(set_attributes(raw(f"ak-{kind}.pub"), set_=ObjectAttributes.DECRYPT))


def test_ak_rsa_1024() -> None:
    data = raw("ak-rsa.pub")
    # TPMS_RSA_PARMS: symmetric (NULL, 2) | scheme (2) + hash (2) | keyBits (2) | exponent (4)
    with pytest.raises(AkWeakKey, match="RSA-1024"):
        check(put_u16(data, parameters_at(data) + 6, 1024))


def test_ak_ecc_p192() -> None:
    data = raw("ak-ecc.pub")
    # TPMS_ECC_PARMS: symmetric (NULL, 2) | scheme (2) + hash (2) | curveID (2) | kdf (2)
    with pytest.raises(AkWeakKey):
        check(put_u16(data, parameters_at(data) + 6, Curve.NIST_P192))


def test_ak_ecc_bn_p256() -> None:
    data = raw("ak-ecc.pub")
    with pytest.raises(AkWeakKey):
        check(put_u16(data, parameters_at(data) + 6, Curve.BN_P256))


@pytest.mark.parametrize("kind", KINDS)
def test_ak_name_alg_sha1(kind: str) -> None:
    with pytest.raises(AkWeakNameAlg):
        check(put_u16(raw(f"ak-{kind}.pub"), NAME_ALG_AT, Alg.SHA1))


@pytest.mark.parametrize("kind", KINDS)
def test_ak_name_alg_sha384_is_accepted(kind: str) -> None:
    verified = check_attestation_key(
        parse_tpm2b_public(put_u16(raw(f"ak-{kind}.pub"), NAME_ALG_AT, Alg.SHA384))
    )
    assert verified.name[:2] == b"\x00\x0c"
    assert len(verified.name) == 2 + 48


@pytest.mark.parametrize("kind", KINDS)
def test_ak_scheme_null(kind: str) -> None:
    data = raw(f"ak-{kind}.pub")
    at = parameters_at(data) + 2
    # scheme NULL carries no hash: drop the two hash bytes.
    tpmt = (put_u16(data, at, Alg.NULL)[: at + 2] + data[at + 4 :])[2:]
    with pytest.raises(AkSchemeNotPinned):
        check(rewrap(tpmt))


@pytest.mark.parametrize("kind", KINDS)
def test_ak_scheme_hash_sha1(kind: str) -> None:
    data = raw(f"ak-{kind}.pub")
    with pytest.raises(AkUnsupportedScheme):
        check(put_u16(data, parameters_at(data) + 4, Alg.SHA1))


def test_ak_rsa_scheme_pss_is_not_the_pinned_scheme() -> None:
    data = raw("ak-rsa.pub")
    with pytest.raises(AkUnsupportedScheme):
        check(put_u16(data, parameters_at(data) + 2, Alg.RSAPSS))


def test_ak_ecc_scheme_ecdaa_is_not_the_pinned_scheme() -> None:
    data = raw("ak-ecc.pub")
    at = parameters_at(data) + 2
    # ECDAA details are hash + count: insert a u16 count after the hash.
    mutated = put_u16(data, at, Alg.ECDAA)
    tpmt = (mutated[: at + 4] + b"\x00\x01" + mutated[at + 4 :])[2:]
    with pytest.raises(AkUnsupportedScheme):
        check(rewrap(tpmt))


def test_ak_ecc_point_off_curve_is_malformed() -> None:
    data = bytearray(raw("ak-ecc.pub"))
    data[-1] ^= 0x01
    with pytest.raises(MalformedStructure):
        check(bytes(data))


@pytest.mark.parametrize("kind", KINDS)
def test_ek_is_not_an_ak(kind: str) -> None:
    # An EK is restricted but a decryption key: refused on the first rule it breaks.
    with pytest.raises(AkNotSigning):
        check(raw(f"ek-{kind}.pub"))
