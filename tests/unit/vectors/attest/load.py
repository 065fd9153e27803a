"""Loading the recorded attest vectors (see regenerate.py) and mutating one field of them.

Offsets are into the TPM2B_PUBLIC files as tpm2-tools wrote them: u16 size, then TPMT_PUBLIC:
type @2, nameAlg @4, objectAttributes @6, authPolicy (TPM2B) @10, then the parameters.

The certify-*.json vectors hold hex: the AK and identity key as bare TPMT_PUBLIC (no size prefix,
so objectAttributes @4), the TPMS_ATTEST and TPMT_SIGNATURE the TPM returned, the nonce and the CSR.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography import x509

HERE = Path(__file__).resolve().parent

TYPE_AT = 2
NAME_ALG_AT = 4
ATTRIBUTES_AT = 6
AUTH_POLICY_AT = 10


def raw(name: str) -> bytes:
    return (HERE / name).read_bytes()


def certificate(name: str) -> x509.Certificate:
    data = raw(name)
    if name.endswith(".pem"):
        return x509.load_pem_x509_certificate(data)
    return x509.load_der_x509_certificate(data)


def now() -> datetime:
    """A time inside the validity of every recorded certificate."""
    meta: dict[str, str] = json.loads(raw("meta.json"))
    return datetime.fromisoformat(meta["now"])


def credential_vector() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(raw("credential-ecc.json"))
    return loaded


def parameters_at(tpm2b_public: bytes) -> int:
    """Offset of the parameters (just past authPolicy)."""
    policy_size: int = struct.unpack_from(">H", tpm2b_public, AUTH_POLICY_AT)[0]
    return AUTH_POLICY_AT + 2 + policy_size


def put_u16(data: bytes, offset: int, value: int) -> bytes:
    return data[:offset] + struct.pack(">H", value) + data[offset + 2 :]


def put_u32(data: bytes, offset: int, value: int) -> bytes:
    return data[:offset] + struct.pack(">I", value) + data[offset + 4 :]


def u32_at(data: bytes, offset: int) -> int:
    value: int = struct.unpack_from(">I", data, offset)[0]
    return value


def set_attributes(tpm2b_public: bytes, *, clear: int = 0, set_: int = 0) -> bytes:
    attributes = (u32_at(tpm2b_public, ATTRIBUTES_AT) & ~clear) | set_
    return put_u32(tpm2b_public, ATTRIBUTES_AT, attributes)


def rewrap(tpmt: bytes) -> bytes:
    """A TPM2B_PUBLIC around `tpmt` (for mutations that change the length)."""
    return struct.pack(">H", len(tpmt)) + tpmt


# --- certify vectors ------------------------------------------------------------------------

TPMT_ATTRIBUTES_AT = ATTRIBUTES_AT - 2  # in a bare TPMT_PUBLIC

# TPMS_ATTEST (Part 2 §10.12.12): magic @0, type @4, qualifiedSigner (TPM2B) @6, then the rest.
MAGIC_AT = 0
ATTEST_TYPE_AT = 4
QUALIFIED_SIGNER_AT = 6

# TPMT_SIGNATURE with ECDSA (§11.3.4): sigAlg @0, hash @2, signatureR (TPM2B) @4.
SIG_ALG_AT = 0
SIG_HASH_AT = 2
SIG_R_AT = 4


def certify_vector(kind: str = "ecc") -> dict[str, bytes]:
    """certify-<kind>.json decoded: nonce, ak_public, identity_public, attest, signature, csr."""
    loaded: dict[str, str] = json.loads(raw(f"certify-{kind}.json"))
    return {key: bytes.fromhex(value) for key, value in loaded.items()}


def u16_at(data: bytes, offset: int) -> int:
    value: int = struct.unpack_from(">H", data, offset)[0]
    return value


def attest_offsets(attest: bytes) -> dict[str, int]:
    """Offsets of the TPMS_ATTEST fields after the variable-length qualifiedSigner.

    extra_data, name and qualified_name point at the TPM2B size; the others at the value.
    """
    at = QUALIFIED_SIGNER_AT
    at += 2 + u16_at(attest, at)
    offsets = {"extra_data": at}
    at += 2 + u16_at(attest, at)
    # TPMS_CLOCK_INFO: clock u64, resetCount u32, restartCount u32, safe u8; then firmwareVersion u64.
    offsets |= {"clock": at, "reset_count": at + 8, "restart_count": at + 12, "safe": at + 16}
    at += 17
    offsets["firmware_version"] = at
    at += 8
    offsets["name"] = at  # TPMS_CERTIFY_INFO.name (for a CERTIFY attest)
    at += 2 + u16_at(attest, at)
    offsets["qualified_name"] = at
    return offsets


def put_u8(data: bytes, offset: int, value: int) -> bytes:
    return data[:offset] + bytes([value]) + data[offset + 1 :]


def flip(data: bytes, offset: int) -> bytes:
    """`data` with every bit of the byte at `offset` inverted."""
    return put_u8(data, offset, data[offset] ^ 0xFF)


def set_tpmt_attributes(tpmt_public: bytes, *, clear: int = 0, set_: int = 0) -> bytes:
    attributes = (u32_at(tpmt_public, TPMT_ATTRIBUTES_AT) & ~clear) | set_
    return put_u32(tpmt_public, TPMT_ATTRIBUTES_AT, attributes)


# --- quote vectors --------------------------------------------------------------------------

# quote-<kind>.json (see regenerate.QUOTE_VECTORS): one AK, one bank and PCR list, and one quote per
# step of the TPM's life (regenerate.QUOTE_STEPS). quote-sha1.json holds one "boot" quote.
QUOTE_KINDS = ("ecc", "rsa", "ecc384")
QUOTE_STEPS = ("boot", "same-boot", "resume", "reboot", "power-loss")
_BANKS = {"sha1": 0x0004, "sha256": 0x000B, "sha384": 0x000C}


@dataclass(frozen=True)
class QuoteVector:
    """One recorded TPM2_Quote with what the authority needs to verify it."""

    step: str
    ak_public: bytes  # bare TPMT_PUBLIC
    bank: int  # TPM_ALG_ID of the quoted PCR bank
    pcrs: tuple[int, ...]  # the selection asked for
    nonce: bytes
    pcr_values: dict[int, bytes]  # as read from the TPM just before the quote
    attest: bytes  # TPMS_ATTEST
    signature: bytes  # TPMT_SIGNATURE


def quote_vectors(kind: str = "ecc") -> dict[str, QuoteVector]:
    """quote-<kind>.json decoded, by step."""
    loaded: dict[str, Any] = json.loads(raw(f"quote-{kind}.json"))
    return {
        q["step"]: QuoteVector(
            step=q["step"],
            ak_public=bytes.fromhex(loaded["ak_public"]),
            bank=_BANKS[loaded["bank"]],
            pcrs=tuple(loaded["pcrs"]),
            nonce=bytes.fromhex(q["nonce"]),
            pcr_values={int(pcr): bytes.fromhex(value) for pcr, value in q["pcr_values"].items()},
            attest=bytes.fromhex(q["attest"]),
            signature=bytes.fromhex(q["signature"]),
        )
        for q in loaded["quotes"]
    }


def quote_vector(kind: str = "ecc", step: str = "boot") -> QuoteVector:
    return quote_vectors(kind)[step]


def quote_offsets(attest: bytes) -> dict[str, int]:
    """Offsets into a QUOTE TPMS_ATTEST, besides those of `attest_offsets`.

    TPMS_QUOTE_INFO (§10.12.4): pcrSelect (TPML_PCR_SELECTION: u32 count, then per bank hash u16,
    sizeofSelect u8, bitmap) and pcrDigest (TPM2B). pcr_select_count points at the count, bank_hash
    / select_size / select at the first bank's fields, pcr_digest at the TPM2B size.
    """
    at = attest_offsets(attest)["name"]  # the attested union starts where a Certify's name would
    offsets = {"pcr_select_count": at, "bank_hash": at + 4, "select_size": at + 6, "select": at + 7}
    count = u32_at(attest, at)
    at += 4
    for _ in range(count):
        at += 3 + attest[at + 2]
    offsets["pcr_digest"] = at
    return offsets
