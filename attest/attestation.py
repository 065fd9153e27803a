"""TPMS_ATTEST and TPMT_SIGNATURE (TPM 2.0 Part 2 §10.12, §11.3.4), parsed strictly, and the check
that an enrolled AK signed a TPMS_ATTEST.

Parsing never guesses: a truncated structure, a trailing byte, a magic other than
TPM_GENERATED_VALUE or a value a field's type does not allow raises. `TpmsAttest.raw` keeps the exact
bytes it came from; the signature is always checked over those bytes, never a re-marshalled copy.

`verify_attest_signature` uses the scheme and hash pinned in the `VerifiedAk`; the scheme and hash
named inside the TPMT_SIGNATURE are only compared with them, never used to choose how to verify.

Two readers, one set of rules: `parse_tpms_attest` (a `Reader`, field by field, with an error that
names the field) is the reference; `scan_quote` is the quote verifier's hot path, one `struct` read per
fixed run and no objects. `scan_quote` accepts exactly the QUOTEs the reference accepts and returns
None for anything else, and its caller then runs the reference for the precise error, so a malformed
input gets the same error either way (tests/unit/test_attest_quote.py checks every truncation and
byte flip of the recorded quotes). `parse_tpmt_signature` reads the same way, falling back to the
field-by-field reader for anything it does not accept.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import utils

from attest.ak import VerifiedAk
from attest.alg import HASH_ALGS, Alg, alg_name, hash_for
from attest.errors import (
    BadAttestSignature,
    MalformedStructure,
    NotTpmGenerated,
    SignatureSchemeMismatch,
    UnsupportedAlgorithm,
    UnsupportedAttestType,
    UnsupportedSignatureScheme,
)
from attest.marshal import Reader

TPM_GENERATED_VALUE = 0xFF544347

# Largest TPM2B contents (Part 2 §10.5.3 TPM2B_NAME = sizeof(TPMU_NAME) = sizeof(TPMT_HA) = 2 + 64,
# §10.4.3 TPM2B_DATA = sizeof(TPMT_HA), §10.4.2 TPM2B_DIGEST = sizeof(TPMU_HA) = 64,
# §11.2.5.1 TPM2B_ECC_PARAMETER = MAX_ECC_KEY_BYTES = 128, §11.2.4.5 TPM2B_PUBLIC_KEY_RSA = 512).
_MAX_NAME = 66
_MAX_DATA = 66
_MAX_DIGEST = 64
_MAX_ECC_PARAMETER = 128
_MAX_RSA_SIGNATURE = 512
# TPML_PCR_SELECTION (§10.9.7): at most HASH_COUNT banks; a bank selects at most PCR_SELECT_MAX bytes.
# Generous bounds on both: the quote verifier compares the selection with the one it asked for.
_MAX_PCR_BANKS = 16
_MAX_PCR_SELECT = 32

# The fixed runs of the hot-path readers (big-endian, no padding).
_ATTEST_HEAD = struct.Struct(">IHH")  # magic, type, qualifiedSigner.size
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
# clockInfo (clock, resetCount, restartCount, safe), firmwareVersion, then a TPML_PCR_SELECTION's count
# and its first bank's hash and sizeofSelect: the fixed run of a quote selecting one bank.
_QUOTE_BODY = struct.Struct(">QIIBQIHB")
_SIGNATURE_HEAD = struct.Struct(">HHH")  # sigAlg, hash, size of the first TPM2B (r, or the RSA sig)
# DER: short-form lengths only below 128 bytes; longer ECDSA (r, s) go through cryptography's encoder.
_DER_SHORT_FORM = 128


class AttestType(enum.IntEnum):
    """TPMI_ST_ATTEST (Part 2 §6.9 TPM_ST): the attestation structure types."""

    NV = 0x8014
    COMMAND_AUDIT = 0x8015
    SESSION_AUDIT = 0x8016
    CERTIFY = 0x8017
    QUOTE = 0x8018
    TIME = 0x8019
    CREATION = 0x801A
    NV_DIGEST = 0x801C


@dataclass(frozen=True)
class ClockInfo:
    """TPMS_CLOCK_INFO (§10.11.1)."""

    clock: int
    reset_count: int
    restart_count: int
    safe: bool


@dataclass(frozen=True)
class CertifyInfo:
    """TPMS_CERTIFY_INFO (§10.12.3): the certified object's name and qualified name."""

    name: bytes
    qualified_name: bytes


@dataclass(frozen=True)
class PcrSelection:
    """TPMS_PCR_SELECTION (§10.6.2): one bank and its bitmap (bit n of byte n // 8 = PCR n)."""

    hash_alg: int
    select: bytes

    def pcrs(self) -> tuple[int, ...]:
        return tuple(i for i in range(len(self.select) * 8) if self.select[i // 8] & (1 << (i % 8)))


@dataclass(frozen=True)
class QuoteInfo:
    """TPMS_QUOTE_INFO (§10.12.4): the selected PCRs and the digest of their values."""

    pcr_select: tuple[PcrSelection, ...]
    pcr_digest: bytes


@dataclass(frozen=True)
class TpmsAttest:
    """A parsed TPMS_ATTEST (§10.12.12). `raw` is exactly the signed bytes."""

    type: AttestType
    qualified_signer: bytes
    extra_data: bytes
    clock_info: ClockInfo
    firmware_version: int
    attested: CertifyInfo | QuoteInfo
    raw: bytes


@dataclass(frozen=True)
class EcdsaSignature:
    """TPMT_SIGNATURE with sigAlg TPM_ALG_ECDSA: TPMS_SIGNATURE_ECDSA (§11.3.2)."""

    scheme: ClassVar[Alg] = Alg.ECDSA
    hash_alg: int
    r: bytes
    s: bytes


@dataclass(frozen=True)
class RsassaSignature:
    """TPMT_SIGNATURE with sigAlg TPM_ALG_RSASSA: TPMS_SIGNATURE_RSA (§11.3.1)."""

    scheme: ClassVar[Alg] = Alg.RSASSA
    hash_alg: int
    sig: bytes


Signature = EcdsaSignature | RsassaSignature


def _hash_alg(r: Reader, field: str) -> int:
    value = r.u16()
    if value not in HASH_ALGS:
        raise UnsupportedAlgorithm(f"{r.what}: {field} {alg_name(value)} is not a hash algorithm")
    return value


def _clock_info(r: Reader) -> ClockInfo:
    clock = r.u64()
    reset_count = r.u32()
    restart_count = r.u32()
    safe = r.u8()
    if safe not in (0, 1):
        raise MalformedStructure(f"{r.what}: clockInfo.safe is {safe}; TPMI_YES_NO allows only 0 and 1")
    return ClockInfo(clock, reset_count, restart_count, bool(safe))


def _quote_info(r: Reader) -> QuoteInfo:
    count = r.u32()
    if count > _MAX_PCR_BANKS:
        raise MalformedStructure(f"{r.what}: TPML_PCR_SELECTION count {count} exceeds {_MAX_PCR_BANKS}")
    banks = []
    for _ in range(count):
        hash_alg = _hash_alg(r, "pcrSelect hash")
        size = r.u8()
        if size > _MAX_PCR_SELECT:
            raise MalformedStructure(f"{r.what}: sizeofSelect {size} exceeds {_MAX_PCR_SELECT}")
        banks.append(PcrSelection(hash_alg, r.take(size)))
    return QuoteInfo(tuple(banks), r.tpm2b(_MAX_DIGEST))


def parse_tpms_attest(data: bytes) -> TpmsAttest:
    """Parse a marshalled TPMS_ATTEST of type CERTIFY or QUOTE; no trailing bytes allowed."""
    r = Reader(data, "TPMS_ATTEST")
    # Part 2 §10.12.12: magic, type, qualifiedSigner, extraData, clockInfo, firmwareVersion, attested.
    magic = r.u32()
    if magic != TPM_GENERATED_VALUE:
        raise NotTpmGenerated(f"TPMS_ATTEST: magic is 0x{magic:08x}, not TPM_GENERATED_VALUE")
    raw_type = r.u16()
    if raw_type not in (AttestType.CERTIFY, AttestType.QUOTE):
        raise UnsupportedAttestType(f"TPMS_ATTEST: type 0x{raw_type:04x} is neither CERTIFY nor QUOTE")
    attest_type = AttestType(raw_type)
    qualified_signer = r.tpm2b(_MAX_NAME)
    extra_data = r.tpm2b(_MAX_DATA)
    clock_info = _clock_info(r)
    firmware_version = r.u64()
    attested: CertifyInfo | QuoteInfo
    if attest_type == AttestType.CERTIFY:
        attested = CertifyInfo(name=r.tpm2b(_MAX_NAME), qualified_name=r.tpm2b(_MAX_NAME))
    else:
        attested = _quote_info(r)
    r.finish()
    return TpmsAttest(
        type=attest_type,
        qualified_signer=qualified_signer,
        extra_data=extra_data,
        clock_info=clock_info,
        firmware_version=firmware_version,
        attested=attested,
        raw=bytes(data),
    )


class ScannedQuote(NamedTuple):
    """The fields of a well-formed QUOTE TPMS_ATTEST as `scan_quote` reads them: plain values."""

    extra_data: bytes
    clock: int
    reset_count: int
    restart_count: int
    safe: bool
    firmware_version: int
    banks: tuple[tuple[int, bytes], ...]  # TPMS_PCR_SELECTION: (hash, bitmap), in list order
    pcr_digest: bytes

    @classmethod
    def of(cls, parsed: TpmsAttest) -> ScannedQuote:
        """The same fields from the reference parse of a QUOTE."""
        quote = parsed.attested
        assert isinstance(quote, QuoteInfo)
        clock = parsed.clock_info
        return cls(
            parsed.extra_data,
            clock.clock,
            clock.reset_count,
            clock.restart_count,
            clock.safe,
            parsed.firmware_version,
            tuple((bank.hash_alg, bank.select) for bank in quote.pcr_select),
            quote.pcr_digest,
        )


def scan_quote(data: bytes) -> ScannedQuote | None:
    """Read a TPMS_ATTEST of type QUOTE selecting one bank, with every check of `parse_tpms_attest`;
    None for anything else (the caller runs `parse_tpms_attest`, for the error or the other shapes)."""
    try:
        # Part 2 §10.12.12: magic, type, qualifiedSigner, extraData, clockInfo, firmwareVersion, then
        # §10.12.4 TPMS_QUOTE_INFO: pcrSelect (u32 count, per bank hash, sizeofSelect, bitmap), pcrDigest.
        magic, attest_type, size = _ATTEST_HEAD.unpack_from(data)
        if magic != TPM_GENERATED_VALUE or attest_type != AttestType.QUOTE or size > _MAX_NAME:
            return None
        at = 8 + size
        (size,) = _U16.unpack_from(data, at)
        if size > _MAX_DATA:
            return None
        at += 2
        extra_data = data[at : at + size]
        at += size
        clock, reset_count, restart_count, safe, firmware, count, hash_alg, size = _QUOTE_BODY.unpack_from(
            data, at
        )
        if safe > 1 or count != 1 or hash_alg not in HASH_ALGS or size > _MAX_PCR_SELECT:
            return None
        at += _QUOTE_BODY.size
        bitmap = data[at : at + size]
        at += size
        # A slice cut short by the end above leaves `at` past the end: this read then fails.
        (size,) = _U16.unpack_from(data, at)
        at += 2
        if size > _MAX_DIGEST or at + size != len(data):
            return None
    except struct.error:
        return None
    return ScannedQuote(
        extra_data, clock, reset_count, restart_count, safe == 1, firmware, ((hash_alg, bitmap),), data[at:]
    )


def ecdsa_der(r: bytes, s: bytes) -> bytes:
    """The DER ECDSA-Sig-Value of big-endian r and s (what `encode_dss_signature` makes of them as
    integers), without the round trip through Python ints."""
    r = r.lstrip(b"\0") or b"\0"
    s = s.lstrip(b"\0") or b"\0"
    if r[0] & 0x80:
        r = b"\0" + r
    if s[0] & 0x80:
        s = b"\0" + s
    body = len(r) + len(s) + 4
    if body >= _DER_SHORT_FORM:
        return utils.encode_dss_signature(int.from_bytes(r, "big"), int.from_bytes(s, "big"))
    return bytes((0x30, body, 0x02, len(r))) + r + bytes((0x02, len(s))) + s


class ScannedSignature(NamedTuple):
    """A TPMT_SIGNATURE as `scan_signature` reads it: ECDSA (r, s) or RSASSA (sig, b"")."""

    sig_alg: int
    hash_alg: int
    first: bytes  # signatureR, or the RSA signature
    second: bytes  # signatureS, or b"" for RSASSA

    @classmethod
    def of(cls, signature: Signature) -> ScannedSignature:
        """The same fields from the reference parse."""
        if isinstance(signature, EcdsaSignature):
            return cls(Alg.ECDSA, signature.hash_alg, signature.r, signature.s)
        return cls(Alg.RSASSA, signature.hash_alg, signature.sig, b"")


def scan_signature(data: bytes) -> ScannedSignature | None:
    """Read an ECDSA or RSASSA TPMT_SIGNATURE with every check of `parse_tpmt_signature`; None for
    anything else (the caller runs `parse_tpmt_signature` for the error)."""
    try:
        # Part 2 §11.3.4: sigAlg, then TPMS_SIGNATURE_ECDSA (hash, r, s) or _RSA (hash, sig).
        sig_alg, hash_alg, size = _SIGNATURE_HEAD.unpack_from(data)
        at = 6 + size
        if hash_alg in HASH_ALGS:
            if sig_alg == Alg.ECDSA and size <= _MAX_ECC_PARAMETER:
                (s_size,) = _U16.unpack_from(data, at)
                if s_size <= _MAX_ECC_PARAMETER and at + 2 + s_size == len(data):
                    return ScannedSignature(sig_alg, hash_alg, data[6:at], data[at + 2 :])
            elif sig_alg == Alg.RSASSA and size <= _MAX_RSA_SIGNATURE and at == len(data):
                return ScannedSignature(sig_alg, hash_alg, data[6:], b"")
    except struct.error:
        pass
    return None


def parse_tpmt_signature(data: bytes) -> Signature:
    """Parse a marshalled TPMT_SIGNATURE (ECDSA or RSASSA only); no trailing bytes allowed."""
    data = bytes(data)
    scanned = scan_signature(data)
    if scanned is None:
        # Anything the fast read did not accept: the field-by-field reader says why.
        return _read_tpmt_signature(data)
    if scanned.sig_alg == Alg.ECDSA:
        return EcdsaSignature(scanned.hash_alg, scanned.first, scanned.second)
    return RsassaSignature(scanned.hash_alg, scanned.first)


def _read_tpmt_signature(data: bytes) -> Signature:
    r = Reader(data, "TPMT_SIGNATURE")
    # Part 2 §11.3.4: sigAlg, then TPMU_SIGNATURE selected by it.
    sig_alg = r.u16()
    signature: Signature
    if sig_alg == Alg.ECDSA:
        hash_alg = _hash_alg(r, "hash")
        signature = EcdsaSignature(hash_alg, r.tpm2b(_MAX_ECC_PARAMETER), r.tpm2b(_MAX_ECC_PARAMETER))
    elif sig_alg == Alg.RSASSA:
        hash_alg = _hash_alg(r, "hash")
        signature = RsassaSignature(hash_alg, r.tpm2b(_MAX_RSA_SIGNATURE))
    else:
        raise UnsupportedSignatureScheme(
            f"TPMT_SIGNATURE: sigAlg {alg_name(sig_alg)}; only ECDSA and RSASSA are accepted"
        )
    r.finish()
    return signature


def verify_attest_signature(attest: bytes, signature: Signature, ak: VerifiedAk) -> None:
    """Check that `ak` signed exactly `attest`; raise SignatureSchemeMismatch or BadAttestSignature."""
    verify_scanned_signature(attest, ScannedSignature.of(signature), ak)


def verify_scanned_signature(attest: bytes, signature: ScannedSignature, ak: VerifiedAk) -> None:
    """`verify_attest_signature` of a scanned TPMT_SIGNATURE."""
    # 1. Scheme and hash are the AK's pinned ones: the structure's own claim chooses nothing.
    sig_alg = signature.sig_alg
    if sig_alg != ak.scheme or signature.hash_alg != ak.hash_alg:
        raise SignatureSchemeMismatch(
            f"signature is {alg_name(sig_alg)}/{alg_name(signature.hash_alg)}; "
            f"the AK is pinned to {alg_name(ak.scheme)}/{alg_name(ak.hash_alg)}"
        )
    if ak.ecdsa is None and ak.rsa_hash is None:
        hash_for(ak.hash_alg)  # a pinned hash this module cannot compute: raises UnsupportedAlgorithm
    # 2. Verify over H_pinned(attest) with the AK's key (algorithm objects made once per AK).
    try:
        if sig_alg == Alg.ECDSA:
            if ak.ecdsa is None or ak.ec_key is None:
                raise SignatureSchemeMismatch("ECDSA signature but the AK is not an ECC key")
            ak.ec_key.verify(ecdsa_der(signature.first, signature.second), attest, ak.ecdsa)
        else:
            if ak.rsa_hash is None or ak.rsa_key is None:
                raise SignatureSchemeMismatch("RSASSA signature but the AK is not an RSA key")
            ak.rsa_key.verify(signature.first, attest, ak.rsa_padding, ak.rsa_hash)
    except InvalidSignature:
        raise BadAttestSignature("the TPMS_ATTEST signature does not verify with the enrolled AK") from None
