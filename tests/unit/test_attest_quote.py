"""attest.quote on the recorded quote vectors (regenerate.py: quote-*.json).

The good vectors verify, one per step of a swtpm's life (boot, same-boot, resume, reboot, power
loss). Each negative changes one thing and is named after it. A change inside the signed
TPMS_ATTEST is caught by the signature (step 2) before any later check sees it, so those are also
re-signed by a software key registered as the AK (`resigned`): that shows the check under test
fires on its own, not only because the signature broke.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Iterator
from types import MappingProxyType

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils

import attest.errors as errors_module
from attest.ak import VerifiedAk, check_attestation_key
from attest.alg import Alg
from attest.attestation import (
    AttestType,
    EcdsaSignature,
    QuoteInfo,
    RsassaSignature,
    ScannedQuote,
    ScannedSignature,
    TpmsAttest,
    _read_tpmt_signature,
    ecdsa_der,
    parse_tpms_attest,
    parse_tpmt_signature,
    scan_quote,
    scan_signature,
)
from attest.errors import (
    AkUnsupportedScheme,
    AttestError,
    BadAttestSignature,
    ClockWentBackwards,
    MalformedStructure,
    NotTpmGenerated,
    PcrDigestMismatch,
    PcrSelectionMismatch,
    PcrValuesMismatch,
    QualifyingDataMismatch,
    SignatureSchemeMismatch,
    UnsupportedAttestType,
    WrongAttestType,
)
from attest.marshal import tpm2b, u16, u32
from attest.public import parse_tpmt_public
from attest.quote import (
    BootTransition,
    PcrRequest,
    QuoteClock,
    QuoteWarning,
    VerifiedQuote,
    verify_quote,
)
from tests.unit.vectors.attest.load import (
    ATTEST_TYPE_AT,
    MAGIC_AT,
    QUOTE_KINDS,
    QUOTE_STEPS,
    SIG_HASH_AT,
    QuoteVector,
    attest_offsets,
    certify_vector,
    flip,
    put_u8,
    put_u16,
    put_u32,
    quote_offsets,
    quote_vector,
    quote_vectors,
)

# A software "AK" to re-sign mutated quotes (deterministic: no randomness in the vectors).
SOFT_AK = ec.derive_private_key(0x0_51_6E_ED_A7, ec.SECP256R1())


def request(v: QuoteVector) -> PcrRequest:
    return PcrRequest(v.bank, v.pcrs)


def enrolled_ak(v: QuoteVector) -> VerifiedAk:
    return check_attestation_key(parse_tpmt_public(v.ak_public))


def clock_of(v: QuoteVector) -> QuoteClock:
    return QuoteClock.of(parse_tpms_attest(v.attest).clock_info)


def verify(
    v: QuoteVector,
    *,
    attest: bytes | None = None,
    signature: bytes | None = None,
    ak: VerifiedAk | None = None,
    nonce: bytes | None = None,
    selection: PcrRequest | None = None,
    pcr_values: dict[int, bytes] | None = None,
    previous: QuoteClock | None = None,
) -> VerifiedQuote:
    """verify_quote on vector `v` as its first quote (no previous), with any one input replaced."""
    return verify_quote(
        v.attest if attest is None else attest,
        v.signature if signature is None else signature,
        ak=ak or enrolled_ak(v),
        nonce=v.nonce if nonce is None else nonce,
        selection=selection or request(v),
        pcr_values=v.pcr_values if pcr_values is None else pcr_values,
        previous=previous,
    )


def soft_ak(v: QuoteVector) -> VerifiedAk:
    """The recorded ECC AK's checks, but SOFT_AK's key: for quotes re-signed in software."""
    return dataclasses.replace(enrolled_ak(v), key=SOFT_AK.public_key())


def sign(attest: bytes, hash_alg: int = Alg.SHA256) -> bytes:
    """A TPMT_SIGNATURE (ECDSA) by SOFT_AK over `attest`, as a TPM would marshal it."""
    algorithm: hashes.HashAlgorithm = hashes.SHA1() if hash_alg == Alg.SHA1 else hashes.SHA256()
    r, s = utils.decode_dss_signature(SOFT_AK.sign(attest, ec.ECDSA(algorithm)))
    return u16(Alg.ECDSA) + u16(hash_alg) + tpm2b(r.to_bytes(32, "big")) + tpm2b(s.to_bytes(32, "big"))


def resigned(
    v: QuoteVector,
    attest: bytes,
    *,
    pcr_values: dict[int, bytes] | None = None,
    previous: QuoteClock | None = None,
) -> VerifiedQuote:
    """verify_quote of `attest` re-signed by SOFT_AK, registered as the truck's AK."""
    return verify(
        v, attest=attest, signature=sign(attest), ak=soft_ak(v), pcr_values=pcr_values, previous=previous
    )


def with_quote_info(attest: bytes, pcr_select: bytes, pcr_digest: bytes | None = None) -> bytes:
    """`attest` with TPMS_QUOTE_INFO replaced: a marshalled TPML_PCR_SELECTION and pcrDigest."""
    at = quote_offsets(attest)
    if pcr_digest is None:
        pcr_digest = attest[at["pcr_digest"] + 2 :]
    return attest[: at["pcr_select_count"]] + pcr_select + tpm2b(pcr_digest)


def selection_of(*banks: tuple[int, bytes]) -> bytes:
    """A marshalled TPML_PCR_SELECTION of (hash, bitmap) banks."""
    return u32(len(banks)) + b"".join(u16(alg) + bytes([len(bitmap)]) + bitmap for alg, bitmap in banks)


def bitmap(pcrs: tuple[int, ...], size: int = 3) -> bytes:
    out = bytearray(size)
    for pcr in pcrs:
        out[pcr // 8] |= 1 << (pcr % 8)
    return bytes(out)


def concat(v: QuoteVector, pcrs: tuple[int, ...] | None = None) -> bytes:
    return b"".join(v.pcr_values[p] for p in (pcrs or v.pcrs))


# --- the good vectors ---------------------------------------------------------------------------


@pytest.mark.parametrize("step", QUOTE_STEPS)
@pytest.mark.parametrize("kind", QUOTE_KINDS)
def test_recorded_quote_verifies(kind: str, step: str) -> None:
    v = quote_vector(kind, step)
    verified = verify(v)
    parsed = parse_tpms_attest(v.attest)
    assert verified.attest.raw == v.attest
    assert verified.selection.pcrs == v.pcrs == (0, 1, 2, 3, 7, 8, 9, 14)
    assert dict(verified.pcr_values) == v.pcr_values
    assert verified.pcr_values[14] == bytes(32)  # never extended
    assert verified.firmware_version == parsed.firmware_version
    assert verified.clock == clock_of(v)
    assert verified.transition is BootTransition.FIRST
    assert verified.requires_full_appraisal


@pytest.mark.parametrize("kind", QUOTE_KINDS)
def test_recorded_lifecycle_transitions(kind: str) -> None:
    # Each quote verified against the one before it, as the authority stores them.
    previous = None
    seen = []
    for v in quote_vectors(kind).values():
        verified = verify(v, previous=previous)
        seen.append((verified.transition, verified.warnings, verified.rebooted, verified.safe))
        previous = verified.clock
    assert seen == [
        (BootTransition.FIRST, (), False, True),
        (BootTransition.SAME_BOOT, (), False, True),
        (BootTransition.RESUMED, (), False, True),
        (BootTransition.REBOOTED, (), True, True),
        # Power cut without TPM2_Shutdown: a reset, and the clock no longer known to be safe.
        (BootTransition.REBOOTED, (QuoteWarning.CLOCK_NOT_SAFE,), True, False),
    ]


def test_recorded_counters_move_as_the_steps_say() -> None:
    clocks = {step: clock_of(v) for step, v in quote_vectors().items()}
    assert clocks["same-boot"].reset_count == clocks["boot"].reset_count
    assert clocks["same-boot"].clock > clocks["boot"].clock
    assert clocks["resume"].restart_count == clocks["same-boot"].restart_count + 1
    assert clocks["reboot"].reset_count == clocks["resume"].reset_count + 1
    assert clocks["power-loss"].reset_count == clocks["reboot"].reset_count + 1


def test_same_boot_does_not_require_full_appraisal() -> None:
    vectors = quote_vectors()
    verified = verify(vectors["same-boot"], previous=clock_of(vectors["boot"]))
    assert not verified.requires_full_appraisal
    assert not verified.rebooted


@pytest.mark.parametrize("kind", ["ecc", "rsa"])
def test_pcr_digest_is_the_signing_hash_over_the_values_in_pcr_order(kind: str) -> None:
    v = quote_vector(kind)
    quote = parse_tpms_attest(v.attest).attested
    assert isinstance(quote, QuoteInfo)
    assert quote.pcr_digest == hashlib.sha256(concat(v)).digest()
    # Not in any other order.
    assert quote.pcr_digest != hashlib.sha256(concat(v, tuple(reversed(v.pcrs)))).digest()


def test_pcr_digest_uses_the_ak_hash_not_the_bank_hash() -> None:
    # P-384 AK pinned to ECDSA-SHA384 quoting the sha256 bank: the TPM hashed with SHA-384.
    v = quote_vector("ecc384")
    quote = parse_tpms_attest(v.attest).attested
    assert isinstance(quote, QuoteInfo)
    assert quote.pcr_select[0].hash_alg == Alg.SHA256
    assert quote.pcr_digest == hashlib.sha384(concat(v)).digest()
    assert enrolled_ak(v).hash_alg == Alg.SHA384
    assert len(verify(v).pcr_digest) == 48


def test_recorded_selection_is_one_sha256_bank_of_three_bytes() -> None:
    v = quote_vector()
    at = quote_offsets(v.attest)
    assert int.from_bytes(v.attest[at["pcr_select_count"] : at["bank_hash"]], "big") == 1
    assert int.from_bytes(v.attest[at["bank_hash"] : at["select_size"]], "big") == Alg.SHA256
    assert v.attest[at["select_size"]] == 3
    assert v.attest[at["select"] : at["select"] + 3] == bitmap(v.pcrs)


def test_values_and_request_in_any_order() -> None:
    v = quote_vector()
    values = dict(reversed(list(v.pcr_values.items())))
    verified = verify(v, pcr_values=values, selection=PcrRequest(Alg.SHA256, tuple(reversed(v.pcrs))))
    assert tuple(verified.pcr_values) == v.pcrs


def test_verified_quote_is_read_only() -> None:
    v = quote_vector()
    values = dict(v.pcr_values)
    verified = verify(v, pcr_values=values)
    attribute = "safe"
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(verified, attribute, False)
    assert isinstance(verified.pcr_values, MappingProxyType)
    values[0] = bytes(32)  # the caller's dict is copied, not kept
    assert verified.pcr_values[0] == v.pcr_values[0]


# --- 1. strict parse ----------------------------------------------------------------------------


def test_magic() -> None:
    v = quote_vector()
    with pytest.raises(NotTpmGenerated) as caught:
        verify(v, attest=put_u32(v.attest, MAGIC_AT, 0xFF544348))
    assert caught.value.code == "not-tpm-generated"


def test_attest_trailing_byte() -> None:
    v = quote_vector()
    with pytest.raises(MalformedStructure, match="trailing"):
        verify(v, attest=v.attest + b"\x00")


def test_signature_trailing_byte() -> None:
    v = quote_vector()
    with pytest.raises(MalformedStructure, match="trailing"):
        verify(v, signature=v.signature + b"\x00")


@pytest.mark.parametrize("cut", [1, 32, 40, len(quote_vector().attest) - 1])
def test_attest_truncated(cut: int) -> None:
    v = quote_vector()
    with pytest.raises(MalformedStructure, match="truncated"):
        verify(v, attest=v.attest[:-cut])


def test_signature_truncated() -> None:
    v = quote_vector("rsa")
    with pytest.raises(MalformedStructure, match="truncated"):
        verify(v, signature=v.signature[:-1])


def test_type_nv() -> None:
    v = quote_vector()
    with pytest.raises(UnsupportedAttestType):
        verify(v, attest=put_u16(v.attest, ATTEST_TYPE_AT, AttestType.NV))


def test_pcr_select_size_over_maximum() -> None:
    # sizeofSelect 200: refused by the parse, before anything is compared.
    v = quote_vector()
    with pytest.raises(MalformedStructure, match="sizeofSelect"):
        verify(v, attest=put_u8(v.attest, quote_offsets(v.attest)["select_size"], 200))


# --- 2. signature by the enrolled AK, pinned scheme and hash -------------------------------------


def test_signature_by_another_ak() -> None:
    # Another real P-256 ECDSA-SHA256 AK (the certify vector's): same scheme, wrong key.
    v = quote_vector()
    other = check_attestation_key(parse_tpmt_public(certify_vector()["ak_public"]))
    with pytest.raises(BadAttestSignature) as caught:
        verify(v, ak=other)
    assert caught.value.kind == "forbidden"
    with pytest.raises(BadAttestSignature):
        verify(v, ak=soft_ak(v))


def test_signature_from_the_rsa_quote_for_the_ecc_ak() -> None:
    v = quote_vector()
    with pytest.raises(SignatureSchemeMismatch):
        verify(v, signature=quote_vector("rsa").signature)


def test_signature_r_byte() -> None:
    v = quote_vector()
    with pytest.raises(BadAttestSignature):
        verify(v, signature=flip(v.signature, 4 + 2 + 7))


def test_signature_hash_sha1() -> None:
    # The recorded signature relabelled SHA-1: refused by the pin, never tried with SHA-1.
    v = quote_vector()
    with pytest.raises(SignatureSchemeMismatch) as caught:
        verify(v, signature=put_u16(v.signature, SIG_HASH_AT, Alg.SHA1))
    assert caught.value.code == "signature-scheme-mismatch"


def test_signature_sha1_valid() -> None:
    # A genuine ECDSA-SHA1 signature by the registered (software) AK: still refused, by the pin.
    v = quote_vector()
    signature = sign(v.attest, Alg.SHA1)
    parsed = parse_tpmt_signature(signature)
    assert parsed.hash_alg == Alg.SHA1
    with pytest.raises(SignatureSchemeMismatch):
        verify(v, signature=signature, ak=soft_ak(v))


def test_sha1_quote_recorded_on_swtpm() -> None:
    # A real TPM quote by an AK pinned to ECDSA-SHA1 (quote-sha1.json).
    v = quote_vector("sha1")
    public = parse_tpmt_public(v.ak_public)
    signature = parse_tpmt_signature(v.signature)
    assert signature.hash_alg == Alg.SHA1
    # It is a genuine SHA-1 signature, and the TPM hashed the PCRs with SHA-1 too (the scheme's hash).
    key = public.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    assert isinstance(signature, EcdsaSignature)
    der = utils.encode_dss_signature(int.from_bytes(signature.r, "big"), int.from_bytes(signature.s, "big"))
    key.verify(der, v.attest, ec.ECDSA(hashes.SHA1()))
    quote = parse_tpms_attest(v.attest).attested
    assert isinstance(quote, QuoteInfo)
    assert quote.pcr_digest == hashlib.sha1(concat(v)).digest()
    # Such an AK is never enrolled ...
    with pytest.raises(AkUnsupportedScheme):
        check_attestation_key(public)
    # ... a VerifiedAk made by hand pinning SHA-1 is refused by verify_quote itself ...
    sha1_pinned = VerifiedAk(public=public, name=public.name(), scheme=Alg.ECDSA, hash_alg=Alg.SHA1, key=key)
    with pytest.raises(AkUnsupportedScheme):
        verify(v, ak=sha1_pinned)
    # ... and with the key registered as a SHA-256 AK, the SHA-1 signature breaks the pin.
    with pytest.raises(SignatureSchemeMismatch):
        verify(v, ak=dataclasses.replace(sha1_pinned, hash_alg=Alg.SHA256))


# --- 3. type QUOTE --------------------------------------------------------------------------------


def test_type_certify() -> None:
    # The enrollment Certify (signed by its truck's AK, for its nonce) passed off as a quote.
    c = certify_vector()
    v = quote_vector()
    ak = check_attestation_key(parse_tpmt_public(c["ak_public"]))
    with pytest.raises(WrongAttestType) as caught:
        verify(v, attest=c["attest"], signature=c["signature"], ak=ak, nonce=c["nonce"])
    assert caught.value.code == "wrong-attest-type"


def test_type_certify_over_a_quote_body() -> None:
    # The quote body read as TPMS_CERTIFY_INFO: the sizes no longer add up.
    v = quote_vector()
    with pytest.raises(MalformedStructure):
        verify(v, attest=put_u16(v.attest, ATTEST_TYPE_AT, AttestType.CERTIFY))


# --- 4. extraData ---------------------------------------------------------------------------------


def test_extra_data_byte() -> None:
    v = quote_vector()
    mutated = flip(v.attest, attest_offsets(v.attest)["extra_data"] + 2)
    with pytest.raises(BadAttestSignature):
        verify(v, attest=mutated)
    with pytest.raises(QualifyingDataMismatch):
        resigned(v, mutated)


def test_nonce_of_another_quote() -> None:
    v = quote_vector()
    with pytest.raises(QualifyingDataMismatch) as caught:
        verify(v, nonce=quote_vector(step="same-boot").nonce)
    assert caught.value.kind == "forbidden"


def test_nonce_prefix() -> None:
    v = quote_vector()
    with pytest.raises(QualifyingDataMismatch):
        verify(v, nonce=v.nonce[:-1])


def test_nonce_too_short_is_the_callers_error() -> None:
    v = quote_vector()
    with pytest.raises(ValueError, match="nonce"):
        verify(v, nonce=v.nonce[:15])


# --- 5. pcrSelect exactly the request -------------------------------------------------------------


def test_pcr_select_shifted_relabels_the_values() -> None:
    # CVE-2024-29039 class: the same values (so the same pcrDigest) under other PCR numbers. The
    # truck quotes PCRs {1,2,3,4,8,9,10,15} and labels their values as the requested PCRs.
    v = quote_vector()
    shifted = tuple(p + 1 for p in v.pcrs)
    mutated = with_quote_info(v.attest, selection_of((Alg.SHA256, bitmap(shifted))))
    quote = parse_tpms_attest(mutated).attested
    assert isinstance(quote, QuoteInfo)
    assert quote.pcr_select[0].pcrs() == shifted
    assert quote.pcr_digest == hashlib.sha256(concat(v)).digest()  # the values would match
    with pytest.raises(BadAttestSignature):
        verify(v, attest=mutated)
    with pytest.raises(PcrSelectionMismatch) as caught:
        resigned(v, mutated)
    assert caught.value.code == "pcr-selection-mismatch"
    assert caught.value.kind == "forbidden"


def test_pcr_select_other_bank() -> None:
    v = quote_vector()
    mutated = put_u16(v.attest, quote_offsets(v.attest)["bank_hash"], Alg.SHA384)
    with pytest.raises(PcrSelectionMismatch, match="SHA384"):
        resigned(v, mutated)


def test_pcr_select_extra_bank() -> None:
    # The requested bank plus a second one that selects nothing: still not the selection asked for.
    v = quote_vector()
    mutated = with_quote_info(v.attest, selection_of((Alg.SHA256, bitmap(v.pcrs)), (Alg.SHA384, bytes(3))))
    with pytest.raises(PcrSelectionMismatch, match="2 banks"):
        resigned(v, mutated)


def test_pcr_select_same_bank_twice() -> None:
    v = quote_vector()
    half = (Alg.SHA256, bitmap(v.pcrs[:4])), (Alg.SHA256, bitmap(v.pcrs[4:]))
    with pytest.raises(PcrSelectionMismatch):
        resigned(v, with_quote_info(v.attest, selection_of(*half)))


def test_pcr_select_no_bank() -> None:
    v = quote_vector()
    with pytest.raises(PcrSelectionMismatch):
        resigned(v, with_quote_info(v.attest, selection_of()))


def test_pcr_select_extra_pcr() -> None:
    v = quote_vector()
    at = quote_offsets(v.attest)["select"] + 1  # PCRs 8..15
    with pytest.raises(PcrSelectionMismatch, match=r"extra \[15\]"):
        resigned(v, put_u8(v.attest, at, v.attest[at] | 0x80))


def test_pcr_select_missing_pcr() -> None:
    v = quote_vector()
    at = quote_offsets(v.attest)["select"] + 1
    with pytest.raises(PcrSelectionMismatch, match=r"missing \[14\]"):
        resigned(v, put_u8(v.attest, at, v.attest[at] & ~0x40))


def test_pcr_select_longer_bitmap_same_pcrs_is_accepted() -> None:
    # Decision: sizeofSelect is encoding, not meaning. A 4-byte bitmap selecting the same PCRs
    # covers the same values in the same order, so it is the same selection.
    v = quote_vector()
    mutated = with_quote_info(v.attest, selection_of((Alg.SHA256, bitmap(v.pcrs, size=4))))
    assert resigned(v, mutated).selection.pcrs == v.pcrs


def test_request_for_other_pcrs() -> None:
    # The verifier asked for something else than the truck quoted (untouched, TPM-signed vector).
    v = quote_vector()
    with pytest.raises(PcrSelectionMismatch):
        verify(v, selection=PcrRequest(Alg.SHA256, v.pcrs[:-1]))
    with pytest.raises(PcrSelectionMismatch):
        verify(v, selection=PcrRequest(Alg.SHA256, (*v.pcrs, 15)))


def test_request_for_another_bank() -> None:
    v = quote_vector()
    with pytest.raises(PcrSelectionMismatch):
        verify(v, selection=PcrRequest(Alg.SHA384, v.pcrs))


# --- 6. supplied PCR values exactly the selected ones ---------------------------------------------


def test_pcr_values_missing() -> None:
    v = quote_vector()
    values = {p: d for p, d in v.pcr_values.items() if p != 14}
    with pytest.raises(PcrValuesMismatch, match=r"missing \[14\]") as caught:
        verify(v, pcr_values=values)
    assert caught.value.code == "pcr-values-mismatch"
    assert caught.value.kind == "invalid"


def test_pcr_values_extra() -> None:
    v = quote_vector()
    with pytest.raises(PcrValuesMismatch, match=r"extra \[15\]"):
        verify(v, pcr_values={**v.pcr_values, 15: bytes(32)})


def test_pcr_value_size() -> None:
    v = quote_vector()
    with pytest.raises(PcrValuesMismatch, match="PCR 7"):
        verify(v, pcr_values={**v.pcr_values, 7: v.pcr_values[7][:-1]})
    with pytest.raises(PcrValuesMismatch, match="PCR 7"):
        verify(v, pcr_values={**v.pcr_values, 7: v.pcr_values[7] + bytes(16)})


# --- 7. pcrDigest recomputed ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", QUOTE_KINDS)
def test_pcr_value_byte(kind: str) -> None:
    v = quote_vector(kind)
    with pytest.raises(PcrDigestMismatch) as caught:
        verify(v, pcr_values={**v.pcr_values, 7: flip(v.pcr_values[7], 0)})
    assert caught.value.code == "pcr-digest-mismatch"
    assert caught.value.kind == "forbidden"


def test_pcr_values_swapped() -> None:
    v = quote_vector()
    values = {**v.pcr_values, 7: v.pcr_values[8], 8: v.pcr_values[7]}
    with pytest.raises(PcrDigestMismatch):
        verify(v, pcr_values=values)


def test_pcr_values_of_another_quote() -> None:
    # PCR 9 was extended again between boot and same-boot.
    v = quote_vector()
    with pytest.raises(PcrDigestMismatch):
        verify(v, pcr_values=quote_vector(step="same-boot").pcr_values)


def test_pcr_digest_byte() -> None:
    v = quote_vector()
    mutated = flip(v.attest, quote_offsets(v.attest)["pcr_digest"] + 2 + 5)
    with pytest.raises(BadAttestSignature):
        verify(v, attest=mutated)
    with pytest.raises(PcrDigestMismatch):
        resigned(v, mutated)


def test_pcr_digest_of_the_bank_hash_for_a_sha384_ak() -> None:
    # A SHA-384 AK's quote carrying SHA-256(values) (the bank's hash): not what the TPM computes.
    v = quote_vector()
    ak = dataclasses.replace(soft_ak(v), hash_alg=Alg.SHA384)
    mutated = with_quote_info(
        v.attest, selection_of((Alg.SHA256, bitmap(v.pcrs))), hashlib.sha256(concat(v)).digest()
    )
    r, s = utils.decode_dss_signature(SOFT_AK.sign(mutated, ec.ECDSA(hashes.SHA384())))
    signature = u16(Alg.ECDSA) + u16(Alg.SHA384) + tpm2b(r.to_bytes(32, "big")) + tpm2b(s.to_bytes(32, "big"))
    with pytest.raises(PcrDigestMismatch, match="SHA384"):
        verify(v, attest=mutated, signature=signature, ak=ak)


# --- 8. clock ordering ---------------------------------------------------------------------------


def with_clock(
    attest: bytes, *, clock: int | None = None, reset: int | None = None, restart: int | None = None
) -> bytes:
    at = attest_offsets(attest)
    if clock is not None:
        attest = attest[: at["clock"]] + clock.to_bytes(8, "big") + attest[at["clock"] + 8 :]
    if reset is not None:
        attest = put_u32(attest, at["reset_count"], reset)
    if restart is not None:
        attest = put_u32(attest, at["restart_count"], restart)
    return attest


def test_clock_backwards_same_reset_count() -> None:
    # Recorded: the boot quote presented after the same-boot quote was accepted.
    vectors = quote_vectors()
    with pytest.raises(ClockWentBackwards) as caught:
        verify(vectors["boot"], previous=clock_of(vectors["same-boot"]))
    assert caught.value.code == "clock-went-backwards"
    assert caught.value.kind == "forbidden"


def test_clock_field_one_millisecond_back() -> None:
    v = quote_vector()
    now = clock_of(v)
    mutated = with_clock(v.attest, clock=now.clock - 1)
    with pytest.raises(BadAttestSignature):
        verify(v, attest=mutated, previous=now)
    with pytest.raises(ClockWentBackwards):
        resigned(v, mutated, previous=now)


def test_clock_equal_is_not_backwards() -> None:
    v = quote_vector()
    assert verify(v, previous=clock_of(v)).transition is BootTransition.SAME_BOOT


def test_restart_count_backwards() -> None:
    # A later clock does not help: restartCount is compared first.
    v = quote_vector()
    previous = clock_of(v)
    mutated = with_clock(v.attest, clock=previous.clock + 10_000)
    previous = dataclasses.replace(previous, restart_count=previous.restart_count + 1)
    with pytest.raises(ClockWentBackwards):
        resigned(v, mutated, previous=previous)
    # Recorded: the same-boot quote presented after the resume quote was accepted.
    vectors = quote_vectors()
    with pytest.raises(ClockWentBackwards):
        verify(vectors["same-boot"], previous=clock_of(vectors["resume"]))


def test_reset_count_backwards() -> None:
    vectors = quote_vectors()
    with pytest.raises(ClockWentBackwards):
        verify(vectors["boot"], previous=clock_of(vectors["reboot"]))


def test_reset_count_jump_is_a_reboot() -> None:
    # resetCount several steps on and the clock far behind: a reboot (clock may lag after power loss).
    v = quote_vector()
    previous = dataclasses.replace(clock_of(v), clock=10**9)
    mutated = with_clock(v.attest, reset=previous.reset_count + 5, clock=1)
    verified = resigned(v, mutated, previous=previous)
    assert verified.transition is BootTransition.REBOOTED
    assert verified.rebooted
    assert verified.requires_full_appraisal


def test_restart_count_step_is_a_resume() -> None:
    v = quote_vector()
    previous = clock_of(v)
    verified = resigned(v, with_clock(v.attest, restart=previous.restart_count + 1), previous=previous)
    assert verified.transition is BootTransition.RESUMED
    assert not verified.rebooted
    assert verified.requires_full_appraisal  # a TPM Restart resets PCRs too


def test_safe_no_is_a_warning() -> None:
    v = quote_vector()
    mutated = put_u8(v.attest, attest_offsets(v.attest)["safe"], 0)
    with pytest.raises(BadAttestSignature):
        verify(v, attest=mutated)
    verified = resigned(v, mutated)
    assert verified.safe is False
    assert verified.warnings == (QuoteWarning.CLOCK_NOT_SAFE,)
    assert [str(w) for w in verified.warnings] == ["clock-not-safe"]


def test_recorded_power_loss_is_safe_no() -> None:
    v = quote_vector(step="power-loss")
    verified = verify(v)
    assert not verified.safe
    assert verified.warnings == (QuoteWarning.CLOCK_NOT_SAFE,)


# --- PcrRequest -----------------------------------------------------------------------------------


def test_pcr_request_is_sorted_and_unique() -> None:
    assert PcrRequest(Alg.SHA256, (7, 0, 7, 3)).pcrs == (0, 3, 7)
    assert PcrRequest.of(Alg.SHA256, [14, 1]) == PcrRequest(Alg.SHA256, (1, 14))


@pytest.mark.parametrize(
    ("bank", "pcrs"),
    [(Alg.SHA1, (0,)), (Alg.RSA, (0,)), (Alg.SHA256, ()), (Alg.SHA256, (24,)), (Alg.SHA256, (-1,))],
    ids=["sha1-bank", "not-a-hash", "empty", "pcr-24", "pcr-minus-1"],
)
def test_pcr_request_refuses(bank: int, pcrs: tuple[int, ...]) -> None:
    with pytest.raises(ValueError):
        PcrRequest(bank, pcrs)


# --- errors ---------------------------------------------------------------------------------------


def test_quote_error_codes() -> None:
    classes = [c for c in vars(errors_module).values() if isinstance(c, type) and issubclass(c, AttestError)]
    codes = [c.code for c in classes]
    assert len(codes) == len(set(codes))
    for error, code, kind in (
        (PcrSelectionMismatch, "pcr-selection-mismatch", "forbidden"),
        (PcrValuesMismatch, "pcr-values-mismatch", "invalid"),
        (PcrDigestMismatch, "pcr-digest-mismatch", "forbidden"),
        (ClockWentBackwards, "clock-went-backwards", "forbidden"),
    ):
        assert issubclass(error, AttestError)
        assert (error.code, error.kind) == (code, kind)
        assert error.__doc__


# --- the hot-path readers agree with the reference parse -------------------------------------------


def _outcome(call: Callable[..., object], *args: object, **kwargs: object) -> tuple[str, str] | object:
    """The value, or (error type, message) of what `call(*args, **kwargs)` raised."""
    try:
        return call(*args, **kwargs)
    except AttestError as exc:
        return (type(exc).__name__, str(exc))


def _attest_mutations(attest: bytes) -> Iterator[bytes]:
    """Every truncation, one trailing byte, and every byte flipped to 0x00, 0xFF and itself ^ 0x01."""
    for cut in range(len(attest)):
        yield attest[:cut]
    yield attest + b"\x00"
    for at in range(len(attest)):
        for value in {0x00, 0xFF, attest[at] ^ 0x01} - {attest[at]}:
            yield put_u8(attest, at, value)


@pytest.mark.parametrize("kind", QUOTE_KINDS)
def test_scan_quote_accepts_exactly_what_the_reference_parses_as_a_one_bank_quote(kind: str) -> None:
    v = quote_vector(kind)
    certify = certify_vector()["attest"]
    two_banks = with_quote_info(v.attest, selection_of((Alg.SHA256, bitmap(v.pcrs)), (Alg.SHA384, bytes(3))))
    for mutated in (v.attest, certify, two_banks, *_attest_mutations(v.attest)):
        scanned = scan_quote(mutated)
        reference = _outcome(parse_tpms_attest, mutated)
        if scanned is None:
            # The reference refuses it, or reads what the hot path leaves to it (another type, banks != 1).
            assert not isinstance(reference, TpmsAttest) or not (
                reference.type == AttestType.QUOTE
                and isinstance(reference.attested, QuoteInfo)
                and len(reference.attested.pcr_select) == 1
            ), mutated.hex()
        else:
            assert isinstance(reference, TpmsAttest), mutated.hex()
            assert scanned == ScannedQuote.of(reference)


@pytest.mark.parametrize("kind", QUOTE_KINDS)
def test_malformed_quotes_get_the_reference_error(kind: str) -> None:
    # verify_quote on every mutation of the signed bytes: the same error as the reference parse, or
    # (for bytes it parses) a refusal by the signature.
    v = quote_vector(kind)
    for mutated in _attest_mutations(v.attest):
        reference = _outcome(parse_tpms_attest, mutated)
        got = _outcome(verify, v, attest=mutated)
        if isinstance(reference, TpmsAttest):
            assert got == (
                "BadAttestSignature",
                "the TPMS_ATTEST signature does not verify with the enrolled AK",
            )
        else:
            assert got == reference, mutated.hex()


@pytest.mark.parametrize("kind", [*QUOTE_KINDS, "sha1"])
def test_scan_signature_agrees_with_the_reference(kind: str) -> None:
    signature = quote_vector(kind).signature
    for cut in range(len(signature)):
        mutations = [signature[:cut], signature + b"\x00"]
        mutations += [
            put_u8(signature, cut, value) for value in {0x00, 0xFF, signature[cut] ^ 0x01} - {signature[cut]}
        ]
        for mutated in mutations:
            scanned = scan_signature(mutated)
            reference = _outcome(_read_tpmt_signature, mutated)
            if scanned is None:
                assert not isinstance(reference, EcdsaSignature | RsassaSignature), mutated.hex()
                assert _outcome(parse_tpmt_signature, mutated) == reference
            else:
                assert isinstance(reference, EcdsaSignature | RsassaSignature), mutated.hex()
                assert scanned == ScannedSignature.of(reference)
                assert parse_tpmt_signature(mutated) == reference


@pytest.mark.parametrize(
    ("r", "s"),
    [
        (b"", b"\x01"),
        (bytes(32), bytes(32)),
        (b"\x00\x00\x7f" + bytes(29), b"\x80" + bytes(31)),
        (b"\xff" * 32, b"\x00\x80" + bytes(30)),
        (b"\x01" * 48, b"\xff" * 48),
        (b"\xff" * 62, b"\x01" * 62),  # 63 + 63 + 4: the largest short-form body is 127
        (b"\xff" * 63, b"\x01" * 62),  # body 128: long form
        (b"\xff" * 128, b"\xff" * 128),  # TPM2B_ECC_PARAMETER maximum
    ],
    ids=["empty-r", "zeros", "leading-zeros", "high-bit", "p384", "short-form-edge", "long-form", "max"],
)
def test_ecdsa_der_is_the_integer_encoding(r: bytes, s: bytes) -> None:
    expected = utils.encode_dss_signature(int.from_bytes(r, "big"), int.from_bytes(s, "big"))
    assert ecdsa_der(r, s) == expected


def test_verified_quote_is_an_ordinary_dataclass_instance() -> None:
    v = quote_vector()
    verified = verify(v)
    assert dataclasses.replace(verified) == verified  # the same fields as __init__ would set
    assert verified.signature == parse_tpmt_signature(v.signature)
    assert verified.attest == parse_tpms_attest(v.attest)
    assert verified.attest is verified.attest  # parsed once, when first asked for


def test_pcr_request_bitmap_and_digest_size() -> None:
    assert PcrRequest(Alg.SHA256, (0, 1, 2, 3, 7, 8, 9, 14)).bitmap == bytes([0x8F, 0x43])
    assert PcrRequest(Alg.SHA384, (23,)).bitmap == bytes([0, 0, 0x80])
    assert PcrRequest(Alg.SHA384, (23,)).digest_size == 48


def test_verified_ak_precomputes_its_verify_state() -> None:
    ecc = enrolled_ak(quote_vector())
    assert isinstance(ecc.ecdsa, ec.ECDSA) and isinstance(ecc.ecdsa.algorithm, hashes.SHA256)
    assert ecc.ec_key is ecc.key and ecc.rsa_key is None and ecc.rsa_hash is None
    rsa_ak = enrolled_ak(quote_vector("rsa"))
    assert rsa_ak.rsa_key is rsa_ak.key and rsa_ak.ec_key is None and rsa_ak.ecdsa is None
    assert isinstance(rsa_ak.rsa_hash, hashes.SHA256)
    p384 = enrolled_ak(quote_vector("ecc384"))
    assert p384.pcr_hash is not None and p384.pcr_hash(b"x") == hashlib.sha384(b"x").digest()
    # dataclasses.replace recomputes it from the new fields.
    swapped = dataclasses.replace(ecc, key=SOFT_AK.public_key())
    assert swapped.ec_key is not ecc.ec_key
