"""Bodies of the truck statement calls (msgspec; unknown fields are refused with a 400). Binary fields
are standard base64; hashes in the receipt are base64 as in checkpoints, statement hashes hex as in
the statement itself."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from tlog.statement import MAX_STATEMENT_BYTES


class StatementIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    statement: Annotated[
        bytes,
        Meta(
            min_length=1,
            max_length=MAX_STATEMENT_BYTES,
            description="the statement's exact RFC 8785 canonical bytes, base64",
        ),
    ]
    signature: Annotated[
        bytes, Meta(min_length=8, max_length=256, description="ECDSA P-256/SHA-256 over them, DER, base64")
    ]
    certificate_chain_pem: Annotated[
        str,
        Meta(
            min_length=1,
            max_length=16384,
            description="the truck's current identity certificate first, then (optionally) our CAs",
        ),
    ]
    evidence_certificate_pem: (
        Annotated[
            str,
            Meta(
                min_length=1,
                max_length=16384,
                description="optional: the truck's current evidence-signing certificate for the same key; "
                "the statement is then also logged as a hashedrekord entry and timestamped, so its "
                "Sigstore bundle can be exported",
            ),
        ]
        | None
    ) = None


class ReceiptOut(msgspec.Struct, kw_only=True):
    index: int
    leaf_hash: str
    inclusion_proof: list[str]
    checkpoint: str
    log_key: str
    entry: str


class StatementOut(msgspec.Struct, kw_only=True):
    truck: str
    sequence: int
    kind: str
    statement_sha256: str
    status: Literal["sequenced", "pending"]
    receipt: ReceiptOut | None
    receipt_url: str
    statement: bytes
    signature: bytes
    certificate_chain_pem: str
    certificate_serial: str
    certificate_status: str
    submitted_at: datetime


class ForkOut(msgspec.Struct, kw_only=True):
    sequence: int
    refused_sha256: str
    held_sha256: str
    previous: str
    detected_at: datetime


class ChainOut(msgspec.Struct, kw_only=True):
    truck: str
    sequence: int
    head_sha256: str
    updated_at: datetime | None
    chain_broken_at: datetime | None
    forks: list[ForkOut]
