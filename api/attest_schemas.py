"""Bodies of the release and attestation calls (msgspec; unknown fields are refused with a 400)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec
from msgspec import Meta

from api.fleet_schemas import Label

Reason = Annotated[str, Meta(min_length=1, max_length=512)]


class _In(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    pass


class ReleaseKeyIn(_In):
    name: Label
    public_key_pem: Annotated[
        str, Meta(min_length=1, max_length=4096, description="EC P-256/P-384 public key")
    ]


class ReleaseKeyOut(msgspec.Struct, kw_only=True):
    id: str
    name: str
    public_key_pem: str
    created_at: datetime
    revoked_at: datetime | None


class ReleaseIn(_In):
    key_id: Annotated[str, Meta(min_length=1, max_length=64)]
    manifest: Annotated[str, Meta(min_length=1, max_length=65536, description="compact JWS release manifest")]


class ReleaseOut(msgspec.Struct, kw_only=True):
    id: str
    model: str
    version: str
    key_id: str
    bank: str
    pcrs: dict[str, str]
    status: str
    created_at: datetime
    revoked_at: datetime | None
    revocation_reason: str | None


class RevokeReleaseIn(_In):
    reason: Reason
