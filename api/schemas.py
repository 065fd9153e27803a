"""Request and response bodies (msgspec): unknown fields and wrong types are refused with a 400."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec
from msgspec import Meta

from pki.profiles import ProfileName
from pki.revocation import RevocationReason

Pem = Annotated[str, Meta(min_length=1, max_length=16384, description="PEM-encoded PKCS#10 request")]
San = Annotated[str, Meta(min_length=1, max_length=512)]
TtlSeconds = Annotated[int, Meta(ge=1, le=10 * 365 * 86400, description="Requested lifetime in seconds")]


class _In(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    pass


class IssueRequest(_In):
    profile: ProfileName
    csr: Pem
    uri_sans: Annotated[list[San], Meta(max_length=8)] | None = None
    dns_sans: Annotated[list[San], Meta(max_length=32)] | None = None
    ttl_seconds: TtlSeconds | None = None


class RenewRequest(_In):
    csr: Pem
    ttl_seconds: TtlSeconds | None = None


class RevokeRequest(_In):
    reason: RevocationReason = RevocationReason.UNSPECIFIED


class CertificateOut(msgspec.Struct, kw_only=True):
    serial: str
    profile: str
    issuer_id: str
    subject: str
    status: str
    not_before: datetime
    not_after: datetime
    revoked_at: datetime | None
    revocation_reason: str | None
    renewed_from: str | None
    certificate_pem: str
    chain_pem: str


class AuthorityOut(msgspec.Struct, kw_only=True):
    id: str
    kind: str
    status: str
    not_before: datetime
    not_after: datetime
    certificate_pem: str


class HealthOut(msgspec.Struct, kw_only=True):
    status: str


class ReadyOut(msgspec.Struct, kw_only=True):
    status: str
    checks: dict[str, str]
