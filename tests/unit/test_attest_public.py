"""attest.public on TPM2B_PUBLIC vectors recorded from swtpm (tests/unit/vectors/attest)."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from attest.alg import Alg, Curve
from attest.errors import MalformedStructure, UnsupportedAlgorithm, UnsupportedKeyType
from attest.public import (
    EccParms,
    EccPoint,
    ObjectAttributes,
    RsaParms,
    parse_tpm2b_public,
    parse_tpmt_public,
)
from tests.unit.vectors.attest.load import (
    ATTRIBUTES_AT,
    NAME_ALG_AT,
    TYPE_AT,
    parameters_at,
    put_u16,
    raw,
    rewrap,
    u32_at,
)

EK_ATTRIBUTES = (
    ObjectAttributes.FIXED_TPM
    | ObjectAttributes.FIXED_PARENT
    | ObjectAttributes.SENSITIVE_DATA_ORIGIN
    | ObjectAttributes.ADMIN_WITH_POLICY
    | ObjectAttributes.RESTRICTED
    | ObjectAttributes.DECRYPT
)


@pytest.mark.parametrize("kind", ["rsa", "ecc"])
def test_ak_name_equals_what_tpm2_tools_wrote(kind: str) -> None:
    public = parse_tpm2b_public(raw(f"ak-{kind}.pub"))
    assert public.name() == raw(f"ak-{kind}.name")
    assert public.raw == raw(f"ak-{kind}.pub")[2:]


def test_rsa_ak_fields() -> None:
    public = parse_tpm2b_public(raw("ak-rsa.pub"))
    assert public.type == Alg.RSA
    assert isinstance(public.parameters, RsaParms)
    assert public.parameters.key_bits == 2048
    assert public.parameters.exponent == 0
    assert public.parameters.effective_exponent == 65537
    assert public.parameters.scheme.scheme == Alg.RSASSA
    assert public.parameters.scheme.hash_alg == Alg.SHA256
    assert public.parameters.symmetric.algorithm == Alg.NULL
    key = public.public_key()
    assert isinstance(key, rsa.RSAPublicKey)
    assert key.key_size == 2048
    assert key.public_numbers().e == 65537


def test_ecc_ak_fields() -> None:
    public = parse_tpm2b_public(raw("ak-ecc.pub"))
    assert public.type == Alg.ECC
    assert isinstance(public.parameters, EccParms)
    assert public.parameters.curve == Curve.NIST_P256
    assert public.parameters.scheme.scheme == Alg.ECDSA
    assert public.parameters.scheme.hash_alg == Alg.SHA256
    assert public.parameters.kdf.scheme == Alg.NULL
    assert isinstance(public.unique, EccPoint)
    assert len(public.unique.x) == len(public.unique.y) == 32
    assert isinstance(public.public_key(), ec.EllipticCurvePublicKey)


@pytest.mark.parametrize(
    ("kind", "name_alg", "sym_bits"), [("rsa", Alg.SHA256, 128), ("ecc", Alg.SHA384, 256)]
)
def test_ek_publics_are_the_tcg_templates(kind: str, name_alg: Alg, sym_bits: int) -> None:
    public = parse_tpm2b_public(raw(f"ek-{kind}.pub"))
    assert public.name_alg == name_alg
    assert public.attributes & EK_ATTRIBUTES == EK_ATTRIBUTES
    assert public.parameters.symmetric.algorithm == Alg.AES
    assert public.parameters.symmetric.mode == Alg.CFB
    assert public.parameters.symmetric.key_bits == sym_bits
    assert len(public.auth_policy) == len(public.name()) - 2


def test_tpmt_public_parses_the_tpm2b_body() -> None:
    data = raw("ek-rsa.pub")
    assert parse_tpmt_public(data[2:]) == parse_tpm2b_public(data)


@pytest.mark.parametrize("kind", ["rsa", "ecc"])
def test_truncated_public(kind: str) -> None:
    body = raw(f"ak-{kind}.pub")[2:-1]
    with pytest.raises(MalformedStructure, match="truncated"):
        parse_tpmt_public(body)
    with pytest.raises(MalformedStructure):
        parse_tpm2b_public(rewrap(body))


def test_tpm2b_size_larger_than_the_data() -> None:
    data = raw("ak-ecc.pub")
    with pytest.raises(MalformedStructure, match="truncated"):
        parse_tpm2b_public(put_u16(data, 0, len(data)))


@pytest.mark.parametrize("kind", ["rsa", "ecc"])
def test_trailing_byte(kind: str) -> None:
    data = raw(f"ak-{kind}.pub")
    with pytest.raises(MalformedStructure, match="trailing"):
        parse_tpm2b_public(data + b"\x00")
    with pytest.raises(MalformedStructure, match="trailing"):
        parse_tpm2b_public(rewrap(data[2:] + b"\x00"))
    with pytest.raises(MalformedStructure, match="trailing"):
        parse_tpmt_public(data[2:] + b"\x00")


def test_empty_tpm2b_public() -> None:
    with pytest.raises(MalformedStructure, match="empty"):
        parse_tpm2b_public(b"\x00\x00")


def test_unknown_key_type() -> None:
    with pytest.raises(UnsupportedKeyType) as caught:
        parse_tpm2b_public(put_u16(raw("ak-ecc.pub"), TYPE_AT, Alg.KEYEDHASH))
    assert caught.value.code == "unsupported-key-type"


def test_unknown_name_alg() -> None:
    with pytest.raises(UnsupportedAlgorithm):
        parse_tpm2b_public(put_u16(raw("ak-ecc.pub"), NAME_ALG_AT, 0x7777))


def test_null_name_alg() -> None:
    with pytest.raises(UnsupportedAlgorithm):
        parse_tpm2b_public(put_u16(raw("ak-ecc.pub"), NAME_ALG_AT, Alg.NULL))


def test_reserved_attribute_bit() -> None:
    data = raw("ak-ecc.pub")
    mutated = data[:ATTRIBUTES_AT] + (u32_at(data, ATTRIBUTES_AT) | 1 << 0).to_bytes(4, "big") + data[10:]
    with pytest.raises(MalformedStructure, match="reserved"):
        parse_tpm2b_public(mutated)


def test_unknown_scheme() -> None:
    data = raw("ak-ecc.pub")
    with pytest.raises(UnsupportedAlgorithm):
        parse_tpm2b_public(put_u16(data, parameters_at(data) + 2, Alg.RSASSA))


def test_rsa_modulus_not_matching_key_bits() -> None:
    data = raw("ak-rsa.pub")
    public = parse_tpm2b_public(put_u16(data, parameters_at(data) + 6, 3072))
    with pytest.raises(MalformedStructure, match="modulus"):
        public.public_key()


def test_ecc_point_not_on_curve() -> None:
    data = bytearray(raw("ak-ecc.pub"))
    data[-1] ^= 0x01  # last byte of y
    with pytest.raises(MalformedStructure, match="curve"):
        parse_tpm2b_public(bytes(data)).public_key()


def test_ecc_unsupported_curve_for_public_key() -> None:
    data = raw("ak-ecc.pub")
    public = parse_tpm2b_public(put_u16(data, parameters_at(data) + 6, Curve.BN_P256))
    with pytest.raises(UnsupportedAlgorithm):
        public.public_key()
