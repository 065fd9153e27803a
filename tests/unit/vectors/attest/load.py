"""Loading the recorded attest vectors (see regenerate.py) and mutating one field of them.

Offsets are into the TPM2B_PUBLIC files as tpm2-tools wrote them: u16 size, then TPMT_PUBLIC:
type @2, nameAlg @4, objectAttributes @6, authPolicy (TPM2B) @10, then the parameters.
"""

from __future__ import annotations

import json
import struct
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
