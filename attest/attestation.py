"""TPMS_ATTEST and TPMT_SIGNATURE (TPM 2.0 Part 2 §10.12, §11.3.4), parsed strictly, and the check
that an enrolled AK signed a TPMS_ATTEST.

Parsing never guesses: a truncated structure, a trailing byte, a magic other than
TPM_GENERATED_VALUE or a value a field's type does not allow raises. `TpmsAttest.raw` keeps the exact
bytes it came from; the signature is always checked over those bytes, never a re-marshalled copy.

`verify_attest_signature` uses the scheme and hash pinned in the `VerifiedAk`; the scheme and hash
named inside the TPMT_SIGNATURE are only compared with them, never used to choose how to verify.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import ClassVar

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

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


def parse_tpmt_signature(data: bytes) -> Signature:
    """Parse a marshalled TPMT_SIGNATURE (ECDSA or RSASSA only); no trailing bytes allowed."""
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
    # 1. Scheme and hash are the AK's pinned ones: the structure's own claim chooses nothing.
    if signature.scheme != ak.scheme or signature.hash_alg != ak.hash_alg:
        raise SignatureSchemeMismatch(
            f"signature is {alg_name(signature.scheme)}/{alg_name(signature.hash_alg)}; "
            f"the AK is pinned to {alg_name(ak.scheme)}/{alg_name(ak.hash_alg)}"
        )
    algorithm = hash_for(ak.hash_alg)
    # 2. Verify over H_pinned(attest) with the AK's key.
    try:
        if isinstance(signature, EcdsaSignature):
            if not isinstance(ak.key, ec.EllipticCurvePublicKey):
                raise SignatureSchemeMismatch("ECDSA signature but the AK is not an ECC key")
            der = utils.encode_dss_signature(
                int.from_bytes(signature.r, "big"), int.from_bytes(signature.s, "big")
            )
            ak.key.verify(der, attest, ec.ECDSA(algorithm))
        else:
            if not isinstance(ak.key, rsa.RSAPublicKey):
                raise SignatureSchemeMismatch("RSASSA signature but the AK is not an RSA key")
            ak.key.verify(signature.sig, attest, padding.PKCS1v15(), algorithm)
    except InvalidSignature:
        raise BadAttestSignature("the TPMS_ATTEST signature does not verify with the enrolled AK") from None
