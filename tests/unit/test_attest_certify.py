"""attest.attestation / attest.certify on the recorded Certify vectors (regenerate.py).

The good vectors verify; each negative mutates one field of a good vector and is named after it.
A mutation inside the signed TPMS_ATTEST is caught by the signature (step 1) before any later
check can see it, so the later checks are also exercised on statements re-signed by a software AK
(`resigned`): those show that each check fires on its own, not only because the signature broke.
"""

from __future__ import annotations

import hashlib
import struct

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils

import attest.errors as errors_module
from attest.ak import VerifiedAk, check_attestation_key
from attest.alg import Alg, Curve
from attest.attestation import (
    TPM_GENERATED_VALUE,
    AttestType,
    CertifyInfo,
    EcdsaSignature,
    QuoteInfo,
    RsassaSignature,
    parse_tpms_attest,
    parse_tpmt_signature,
    verify_attest_signature,
)
from attest.certify import VerifiedCertify, check_identity_key, verify_certify
from attest.errors import (
    AttestError,
    BadAttestSignature,
    CertifiedNameMismatch,
    CsrKeyMismatch,
    IdentityKeyCanDecrypt,
    IdentityKeyNotFixedParent,
    IdentityKeyNotFixedTpm,
    IdentityKeyNotSensitiveDataOrigin,
    IdentityKeyNotSigning,
    IdentityKeyNotTpmBound,
    IdentityKeyRejected,
    IdentityKeyRestricted,
    IdentityKeyWeak,
    IdentityKeyWeakNameAlg,
    MalformedStructure,
    NotTpmGenerated,
    QualifyingDataMismatch,
    SignatureSchemeMismatch,
    UnsupportedAlgorithm,
    UnsupportedAttestType,
    UnsupportedSignatureScheme,
    WrongAttestType,
)
from attest.marshal import tpm2b, u16, u32
from attest.public import ObjectAttributes, TpmtPublic, parse_tpmt_public
from tests.unit.vectors.attest.load import (
    ATTEST_TYPE_AT,
    MAGIC_AT,
    NAME_ALG_AT,
    SIG_ALG_AT,
    SIG_HASH_AT,
    SIG_R_AT,
    attest_offsets,
    certify_vector,
    flip,
    parameters_at,
    put_u8,
    put_u16,
    put_u32,
    set_tpmt_attributes,
)

KINDS = ["ecc", "rsa"]
# A software "AK" to re-sign mutated statements (deterministic: no randomness in the vectors).
SOFT_AK = ec.derive_private_key(0x5EED_0F_A7_7E57, ec.SECP256R1())
OTHER_KEY = ec.derive_private_key(0x07_4E_4B_E1, ec.SECP256R1())


def verify(
    v: dict[str, bytes],
    *,
    attest: bytes | None = None,
    signature: bytes | None = None,
    ak: VerifiedAk | None = None,
    nonce: bytes | None = None,
    identity: bytes | None = None,
    csr_key: ec.EllipticCurvePublicKey | None = None,
) -> VerifiedCertify:
    """verify_certify on vector `v`, with any one input replaced."""
    return verify_certify(
        v["attest"] if attest is None else attest,
        v["signature"] if signature is None else signature,
        ak=ak or check_attestation_key(parse_tpmt_public(v["ak_public"])),
        qualifying_data=v["nonce"] if nonce is None else nonce,
        identity=parse_tpmt_public(v["identity_public"] if identity is None else identity),
        csr_public_key=csr_key or x509.load_der_x509_csr(v["csr"]).public_key(),
    )


def soft_ak(v: dict[str, bytes]) -> VerifiedAk:
    """The recorded ECC AK's checks, but SOFT_AK's key: for statements re-signed in software."""
    real = check_attestation_key(parse_tpmt_public(v["ak_public"]))
    return VerifiedAk(
        public=real.public, name=real.name, scheme=Alg.ECDSA, hash_alg=Alg.SHA256, key=SOFT_AK.public_key()
    )


def sign(attest: bytes, key: ec.EllipticCurvePrivateKey = SOFT_AK, hash_alg: int = Alg.SHA256) -> bytes:
    """A TPMT_SIGNATURE (ECDSA) over `attest`, as a TPM would marshal it."""
    r, s = utils.decode_dss_signature(key.sign(attest, ec.ECDSA(hashes.SHA256())))
    size = (key.curve.key_size + 7) // 8
    return u16(Alg.ECDSA) + u16(hash_alg) + tpm2b(r.to_bytes(size, "big")) + tpm2b(s.to_bytes(size, "big"))


def resigned(v: dict[str, bytes], attest: bytes, identity: bytes | None = None) -> VerifiedCertify:
    """verify_certify of `attest` re-signed by SOFT_AK (and optionally another identity area)."""
    return verify(v, attest=attest, signature=sign(attest), ak=soft_ak(v), identity=identity)


# --- the good vectors -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_recorded_certify_verifies(kind: str) -> None:
    v = certify_vector(kind)
    verified = verify(v)
    identity = parse_tpmt_public(v["identity_public"])
    assert verified.certified.name == identity.name()
    assert verified.identity == identity
    assert verified.key == x509.load_der_x509_csr(v["csr"]).public_key()
    assert verified.attest.extra_data == v["nonce"]
    assert verified.attest.raw == v["attest"]
    expected = EcdsaSignature if kind == "ecc" else RsassaSignature
    assert isinstance(verified.signature, expected)
    assert verified.signature.hash_alg == Alg.SHA256


@pytest.mark.parametrize("kind", KINDS)
def test_recorded_attest_parses_field_by_field(kind: str) -> None:
    v = certify_vector(kind)
    attest = v["attest"]
    parsed = parse_tpms_attest(attest)
    at = attest_offsets(attest)
    assert int.from_bytes(attest[:4], "big") == TPM_GENERATED_VALUE
    assert parsed.type == AttestType.CERTIFY
    assert parsed.qualified_signer[:2] == u16(Alg.SHA256)
    assert len(parsed.qualified_signer) == 34
    assert parsed.extra_data == v["nonce"]
    assert parsed.clock_info.clock == int.from_bytes(attest[at["clock"] : at["clock"] + 8], "big")
    assert parsed.clock_info.reset_count == int.from_bytes(attest[at["reset_count"] : at["safe"] - 4], "big")
    assert parsed.clock_info.safe is bool(attest[at["safe"]])
    assert parsed.firmware_version == int.from_bytes(attest[at["firmware_version"] : at["name"]], "big")
    assert isinstance(parsed.attested, CertifyInfo)
    assert parsed.attested.name == parse_tpmt_public(v["identity_public"]).name()
    assert len(parsed.attested.qualified_name) == 34


def test_recorded_signatures_carry_the_pinned_scheme() -> None:
    for kind, scheme in (("ecc", Alg.ECDSA), ("rsa", Alg.RSASSA)):
        v = certify_vector(kind)
        signature = parse_tpmt_signature(v["signature"])
        ak = check_attestation_key(parse_tpmt_public(v["ak_public"]))
        assert signature.scheme == ak.scheme == scheme
        verify_attest_signature(v["attest"], signature, ak)


# --- TPMS_ATTEST: one field each ----------------------------------------------------------------


def test_magic() -> None:
    v = certify_vector()
    with pytest.raises(NotTpmGenerated) as caught:
        verify(v, attest=put_u32(v["attest"], MAGIC_AT, 0xFF544348))
    assert caught.value.code == "not-tpm-generated"


def test_type() -> None:
    v = certify_vector()
    # TPM_ST_ATTEST_NV: a real attestation type, but not one this verifier parses.
    with pytest.raises(UnsupportedAttestType):
        verify(v, attest=put_u16(v["attest"], ATTEST_TYPE_AT, AttestType.NV))


def test_type_unknown() -> None:
    v = certify_vector()
    with pytest.raises(UnsupportedAttestType):
        verify(v, attest=put_u16(v["attest"], ATTEST_TYPE_AT, 0x8001))


def test_type_quote_over_a_certify_body() -> None:
    # The certify body read as TPMS_QUOTE_INFO: TPML_PCR_SELECTION.count = 0x0022000b is absurd.
    v = certify_vector()
    with pytest.raises(MalformedStructure):
        verify(v, attest=put_u16(v["attest"], ATTEST_TYPE_AT, AttestType.QUOTE))


def test_trailing_byte() -> None:
    v = certify_vector()
    with pytest.raises(MalformedStructure, match="trailing"):
        verify(v, attest=v["attest"] + b"\x00")


@pytest.mark.parametrize("cut", [1, 34, 100])
def test_truncated(cut: int) -> None:
    v = certify_vector()
    with pytest.raises(MalformedStructure, match="truncated"):
        verify(v, attest=v["attest"][:-cut])


def test_truncated_to_nothing() -> None:
    with pytest.raises(MalformedStructure):
        parse_tpms_attest(b"")


def test_extra_data_byte() -> None:
    # extraData is signed: changing it breaks the signature (step 1) before step 3 compares it.
    v = certify_vector()
    mutated = flip(v["attest"], attest_offsets(v["attest"])["extra_data"] + 2)
    with pytest.raises(BadAttestSignature):
        verify(v, attest=mutated)
    with pytest.raises(QualifyingDataMismatch):
        resigned(v, attest=mutated)


def test_extra_data_length() -> None:
    # A shorter extraData (nonce prefix) with the rest intact: the sizes no longer add up.
    v = certify_vector()
    at = attest_offsets(v["attest"])["extra_data"]
    with pytest.raises(MalformedStructure):
        verify(v, attest=put_u16(v["attest"], at, 31))


def test_qualifying_data_is_another_nonce() -> None:
    v = certify_vector()
    with pytest.raises(QualifyingDataMismatch) as caught:
        verify(v, nonce=flip(v["nonce"], 0))
    assert caught.value.kind == "forbidden"
    with pytest.raises(QualifyingDataMismatch):
        verify(v, nonce=v["nonce"][:-1])
    with pytest.raises(QualifyingDataMismatch):
        verify(v, nonce=b"")


def test_attested_name_byte() -> None:
    v = certify_vector()
    mutated = flip(v["attest"], attest_offsets(v["attest"])["name"] + 2 + 5)
    with pytest.raises(BadAttestSignature):
        verify(v, attest=mutated)
    with pytest.raises(CertifiedNameMismatch):
        resigned(v, attest=mutated)


def test_clock_info_safe_2() -> None:
    # TPMI_YES_NO allows 0 and 1; the parse refuses 2 before the signature is looked at.
    v = certify_vector()
    with pytest.raises(MalformedStructure, match="safe"):
        verify(v, attest=put_u8(v["attest"], attest_offsets(v["attest"])["safe"], 2))


def test_clock_info_safe_0_parses() -> None:
    v = certify_vector()
    mutated = put_u8(v["attest"], attest_offsets(v["attest"])["safe"], 0)
    assert parse_tpms_attest(mutated).clock_info.safe is False


def test_qualified_signer_size_over_maximum() -> None:
    v = certify_vector()
    with pytest.raises(MalformedStructure, match="exceeds"):
        parse_tpms_attest(put_u16(v["attest"], 6, 67))


def test_quote_is_the_wrong_type_for_certify() -> None:
    # A correctly signed quote (by SOFT_AK) with the same nonce: every step before 2 passes.
    v = certify_vector()
    at = attest_offsets(v["attest"])
    head = put_u16(v["attest"][: at["name"]], ATTEST_TYPE_AT, AttestType.QUOTE)
    selection = u32(1) + u16(Alg.SHA256) + bytes([3, 0b1000_0001, 0, 0])
    quote = head + selection + tpm2b(hashlib.sha256(b"pcrs").digest())
    parsed = parse_tpms_attest(quote)
    assert isinstance(parsed.attested, QuoteInfo)
    assert parsed.attested.pcr_select[0].pcrs() == (0, 7)
    with pytest.raises(WrongAttestType):
        resigned(v, attest=quote)


def test_quote_selection_with_non_hash_bank() -> None:
    v = certify_vector()
    at = attest_offsets(v["attest"])
    head = put_u16(v["attest"][: at["name"]], ATTEST_TYPE_AT, AttestType.QUOTE)
    quote = head + u32(1) + u16(Alg.RSA) + bytes([3, 1, 0, 0]) + tpm2b(bytes(32))
    with pytest.raises(UnsupportedAlgorithm):
        parse_tpms_attest(quote)


# --- TPMT_SIGNATURE: one field each -------------------------------------------------------------


def test_signature_r_byte() -> None:
    v = certify_vector()
    with pytest.raises(BadAttestSignature) as caught:
        verify(v, signature=flip(v["signature"], SIG_R_AT + 2 + 3))
    assert caught.value.code == "bad-attest-signature"
    assert caught.value.kind == "forbidden"


def test_signature_rsassa_sig_byte() -> None:
    v = certify_vector("rsa")
    with pytest.raises(BadAttestSignature):
        verify(v, signature=flip(v["signature"], 6 + 100))


def test_signature_hash_alg() -> None:
    # SHA-384 in the structure while the AK pins SHA-256: refused by the pin, not tried with SHA-384.
    v = certify_vector()
    with pytest.raises(SignatureSchemeMismatch):
        verify(v, signature=put_u16(v["signature"], SIG_HASH_AT, Alg.SHA384))


def test_signature_hash_alg_not_a_hash() -> None:
    v = certify_vector()
    with pytest.raises(UnsupportedAlgorithm):
        verify(v, signature=put_u16(v["signature"], SIG_HASH_AT, Alg.AES))


def test_signature_sig_alg() -> None:
    v = certify_vector()
    for scheme in (Alg.RSAPSS, Alg.ECDAA, Alg.SM2, Alg.ECSCHNORR, Alg.HMAC, Alg.NULL):
        with pytest.raises(UnsupportedSignatureScheme):
            verify(v, signature=put_u16(v["signature"], SIG_ALG_AT, scheme))


def test_signature_sig_alg_rsassa_on_an_ecdsa_body() -> None:
    # RSASSA reads hash + one TPM2B (r); s is left over.
    v = certify_vector()
    with pytest.raises(MalformedStructure, match="trailing"):
        verify(v, signature=put_u16(v["signature"], SIG_ALG_AT, Alg.RSASSA))


def test_signature_sig_alg_rsassa_against_an_ecdsa_ak() -> None:
    # A well-formed RSASSA signature (the recorded RSA one) for the ECC AK: scheme mismatch.
    v = certify_vector()
    with pytest.raises(SignatureSchemeMismatch):
        verify(v, signature=certify_vector("rsa")["signature"])


def test_signature_trailing_byte() -> None:
    v = certify_vector()
    with pytest.raises(MalformedStructure, match="trailing"):
        verify(v, signature=v["signature"] + b"\x00")


def test_signature_truncated() -> None:
    v = certify_vector()
    with pytest.raises(MalformedStructure, match="truncated"):
        verify(v, signature=v["signature"][:-1])


def test_signature_by_another_ak() -> None:
    v = certify_vector()
    with pytest.raises(BadAttestSignature):
        verify(v, ak=soft_ak(v))
    with pytest.raises(BadAttestSignature):
        verify(v, signature=sign(v["attest"], OTHER_KEY))


def test_signature_over_the_rsa_vector_with_the_ecc_ak() -> None:
    rsa_vector, ecc_vector = certify_vector("rsa"), certify_vector("ecc")
    ecc_ak = check_attestation_key(parse_tpmt_public(ecc_vector["ak_public"]))
    with pytest.raises(SignatureSchemeMismatch):
        verify(rsa_vector, ak=ecc_ak)


# --- the identity public area -------------------------------------------------------------------


def test_identity_public_without_fixed_tpm() -> None:
    v = certify_vector()
    mutated = set_tpmt_attributes(v["identity_public"], clear=ObjectAttributes.FIXED_TPM)
    # The name check (step 4) fires before the attribute check (step 5): the certified name is the
    # hash of the public area the TPM held, and editing one attribute bit without recomputing
    # anything changes that hash. The TPM never vouched for the edited area, so its attributes
    # are not looked at; CertifiedNameMismatch is the right answer, not IdentityKeyNotFixedTpm.
    with pytest.raises(CertifiedNameMismatch):
        verify(v, identity=mutated)
    # The attribute check fires on its own for that area ...
    with pytest.raises(IdentityKeyNotFixedTpm) as caught:
        check_identity_key(parse_tpmt_public(mutated))
    assert isinstance(caught.value, IdentityKeyNotTpmBound)
    assert caught.value.code == "identity-key-not-fixed-tpm"
    # ... and in verify_certify once a (software) AK has certified exactly that area's name.
    with pytest.raises(IdentityKeyNotFixedTpm):
        resigned(v, attest=with_certified_name(v["attest"], parse_tpmt_public(mutated)), identity=mutated)


def test_identity_public_with_restricted() -> None:
    v = certify_vector()
    mutated = set_tpmt_attributes(v["identity_public"], set_=ObjectAttributes.RESTRICTED)
    # As above: the edited area is not the certified one, so step 4 fires first.
    with pytest.raises(CertifiedNameMismatch):
        verify(v, identity=mutated)
    with pytest.raises(IdentityKeyRestricted):
        resigned(v, attest=with_certified_name(v["attest"], parse_tpmt_public(mutated)), identity=mutated)


def with_certified_name(attest: bytes, identity: TpmtPublic) -> bytes:
    """`attest` with TPMS_CERTIFY_INFO.name replaced by `identity`'s name (same size: nameAlg kept)."""
    at = attest_offsets(attest)["name"] + 2
    name = identity.name()
    return attest[:at] + name + attest[at + len(name) :]


@pytest.mark.parametrize(
    ("clear", "set_", "error"),
    [
        (ObjectAttributes.FIXED_TPM, 0, IdentityKeyNotFixedTpm),
        (ObjectAttributes.FIXED_PARENT, 0, IdentityKeyNotFixedParent),
        (ObjectAttributes.SENSITIVE_DATA_ORIGIN, 0, IdentityKeyNotSensitiveDataOrigin),
        (ObjectAttributes.SIGN, 0, IdentityKeyNotSigning),
        (0, ObjectAttributes.RESTRICTED, IdentityKeyRestricted),
        (0, ObjectAttributes.DECRYPT, IdentityKeyCanDecrypt),
    ],
    ids=["without_fixed_tpm", "without_fixed_parent", "without_sdo", "without_sign", "restricted", "decrypt"],
)
def test_identity_attribute_rule(clear: int, set_: int, error: type[IdentityKeyRejected]) -> None:
    v = certify_vector()
    mutated = set_tpmt_attributes(v["identity_public"], clear=clear, set_=set_)
    with pytest.raises(error):
        check_identity_key(parse_tpmt_public(mutated))
    with pytest.raises(error):
        resigned(v, attest=with_certified_name(v["attest"], parse_tpmt_public(mutated)), identity=mutated)


def test_identity_public_curve() -> None:
    v = certify_vector()
    public = v["identity_public"]
    # parameters_at counts in a TPM2B_PUBLIC; in the bare TPMT_PUBLIC they start 2 bytes earlier.
    # TPMS_ECC_PARMS: symmetric (NULL, 2 bytes), scheme (ECDSA + SHA256, 4 bytes), then curveID.
    curve_at = parameters_at(b"\x00\x00" + public) - 2 + 2 + 4
    assert int.from_bytes(public[curve_at : curve_at + 2], "big") == Curve.NIST_P256
    with pytest.raises(IdentityKeyWeak):
        check_identity_key(parse_tpmt_public(put_u16(public, curve_at, Curve.BN_P256)))


def test_identity_public_name_alg() -> None:
    v = certify_vector()
    mutated = put_u16(v["identity_public"], NAME_ALG_AT - 2, Alg.SHA1)
    with pytest.raises(IdentityKeyWeakNameAlg):
        check_identity_key(parse_tpmt_public(mutated))


def test_identity_public_is_the_ak() -> None:
    # The AK's own public area: certified name would differ, and on its own it is restricted.
    v = certify_vector()
    with pytest.raises(CertifiedNameMismatch):
        verify(v, identity=v["ak_public"])
    with pytest.raises(IdentityKeyRestricted):
        check_identity_key(parse_tpmt_public(v["ak_public"]))


# --- the CSR ------------------------------------------------------------------------------------


def test_csr_key_from_another_key() -> None:
    v = certify_vector()
    with pytest.raises(CsrKeyMismatch) as caught:
        verify(v, csr_key=OTHER_KEY.public_key())
    assert caught.value.code == "csr-key-mismatch"


def test_csr_key_is_the_ak() -> None:
    v = certify_vector()
    ak_key = parse_tpmt_public(v["ak_public"]).public_key()
    assert isinstance(ak_key, ec.EllipticCurvePublicKey)
    with pytest.raises(CsrKeyMismatch):
        verify(v, csr_key=ak_key)


# --- errors ---------------------------------------------------------------------------------------


def test_error_codes_are_unique_and_stable() -> None:
    classes = [c for c in vars(errors_module).values() if isinstance(c, type) and issubclass(c, AttestError)]
    codes = [c.code for c in classes]
    assert len(codes) == len(set(codes))
    assert SignatureSchemeMismatch.code == "signature-scheme-mismatch"
    assert WrongAttestType.code == "wrong-attest-type"
    assert IdentityKeyRestricted.code == "identity-key-restricted"
    assert issubclass(UnsupportedSignatureScheme, UnsupportedAlgorithm)


def test_tpmt_signature_ecdsa_layout() -> None:
    # sigAlg, hash, r, s: what `sign` writes is what the TPM wrote (same sizes, same header).
    v = certify_vector()
    ours = sign(v["attest"])
    assert ours[:4] == v["signature"][:4]
    assert len(ours) == len(v["signature"])
    assert struct.unpack_from(">H", ours, SIG_R_AT)[0] == 32
