"""Bodies of the release and attestation calls (msgspec; unknown fields are refused with a 400)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

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


Purpose = Annotated[str, Meta(pattern="^(attest|renew|dispatch)$", description="attest, renew or dispatch")]
TenderId = Annotated[str, Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")]


class NonceIn(_In):
    purpose: Purpose = "attest"
    tender: TenderId | None = None


class NonceOut(msgspec.Struct, kw_only=True):
    id: str
    truck: str
    purpose: str
    tender: str | None
    nonce: bytes
    extra_data: bytes  # what the quote's extraData must be: the nonce, or its tender binding
    bank: str
    pcrs: list[int]
    expires_at: datetime


class EvidenceIn(_In):
    nonce_id: Annotated[str, Meta(min_length=1, max_length=64)]
    quote: Annotated[bytes, Meta(min_length=1, max_length=4096, description="TPMS_ATTEST, base64")]
    signature: Annotated[bytes, Meta(min_length=1, max_length=1024, description="TPMT_SIGNATURE, base64")]
    pcr_values: Annotated[
        dict[Annotated[str, Meta(pattern=r"^[0-9]{1,2}$")], Annotated[bytes, Meta(max_length=64)]],
        Meta(max_length=24, description="PCR index → value, base64"),
    ]
    event_log: Annotated[
        bytes, Meta(min_length=1, max_length=1_000_000, description="TCG crypto-agile log, base64")
    ]


class ReleaseRef(msgspec.Struct, kw_only=True):
    id: str
    version: str


class ResultOut(msgspec.Struct, kw_only=True):
    id: str
    truck: str
    status: str
    release: ReleaseRef | None
    trust_vector: dict[str, int]
    reasons: list[str]
    rebooted: bool
    issued_at: datetime
    expires_at: datetime
    token: str


class StatusOut(msgspec.Struct, kw_only=True):
    truck: str
    status: str | None
    attested_at: datetime | None
    attested_until: datetime | None
    release_id: str | None
    reasons: list[str]
    quarantined: bool
    quarantine_reason: str | None
    quarantined_at: datetime | None


class LiftIn(_In):
    reason: Reason


class TruckRenewIn(_In):
    csr: Annotated[
        str, Meta(min_length=1, max_length=16384, description="PEM PKCS#10 signed by the identity key")
    ]


ScopeName = Annotated[str, Meta(pattern=r"^[a-z][a-z0-9:._-]{0,63}$")]
ClientKindName = Annotated[str, Meta(pattern="^(operator|broker|tms|insurer)$")]
AuthMethodName = Annotated[str, Meta(pattern="^(client_secret_basic|client_secret_post|private_key_jwt)$")]


class JwksIn(msgspec.Struct, kw_only=True):
    """A public JWKS (RFC 7517 §5); each key is checked by provision.client_keys."""

    keys: Annotated[
        list[dict[str, Any]],
        Meta(
            min_length=1,
            max_length=10,
            description="EC P-256/P-384 or RSA >= 2048 public keys, each with a kid; no private members",
        ),
    ]


class ClientIn(_In):
    name: Label
    kind: ClientKindName
    organisation: Label
    fleets: Annotated[list[Annotated[str, Meta(max_length=64)]], Meta(max_length=256)] = msgspec.field(
        default_factory=list
    )
    insurer_policies: Annotated[list[Annotated[str, Meta(max_length=64)]], Meta(max_length=256)] = (
        msgspec.field(default_factory=list)
    )
    global_admin: bool = False
    scopes: Annotated[list[ScopeName], Meta(max_length=32)] = msgspec.field(default_factory=list)
    # RFC 7591 §2: exactly one way to authenticate; private_key_jwt needs `jwks`, the others get a secret.
    token_endpoint_auth_method: AuthMethodName = "client_secret_basic"  # noqa: S105 (a method name)
    jwks: JwksIn | None = None


class ClientOut(msgspec.Struct, kw_only=True):
    client_id: str
    name: str
    kind: str
    organisation: str
    fleets: list[str]
    insurer_policies: list[str]
    global_admin: bool
    scopes: list[str]
    created_at: datetime
    token_endpoint_auth_method: str
    jwks: dict[str, list[dict[str, str]]] | None = None  # a private_key_jwt client's public keys


class RegisteredClientOut(ClientOut, kw_only=True):
    client_secret: str | None = None  # shown once; none for private_key_jwt


class KeyRotationOut(msgspec.Struct, kw_only=True):
    purpose: str
    kid: str  # signs every token from now on
    retired: list[str]  # still verify and stay in the JWKS until published_until
    published_until: datetime


class TenderIn(_In):
    id: TenderId
    hazmat: bool = False
    lanes: Annotated[list[Annotated[str, Meta(max_length=64)]], Meta(max_length=64)] = msgspec.field(
        default_factory=list
    )
    fleet: Annotated[str, Meta(max_length=64)] | None = None


GateAction = Annotated[str, Meta(pattern=r"^(dispatch|tender\.accept)$")]
TruckId = Annotated[str, Meta(min_length=1, max_length=64)]


class DecisionIn(_In):
    action: GateAction
    truck: TruckId
    tender: TenderIn | None = None


class BatchDecisionIn(_In):
    action: GateAction
    trucks: Annotated[list[TruckId], Meta(min_length=1, max_length=1000)]
    tender: TenderIn | None = None


class DecisionOut(msgspec.Struct, kw_only=True):
    truck: str
    decision: str  # allow | deny
    reasons: list[str]  # the policies that decided (permits for allow, forbids for deny; empty: default deny)
    evaluated: dict[str, Any]
    policy_version: str


class PolicyIn(_In):
    text: Annotated[str, Meta(min_length=1, max_length=262144, description="Cedar policies")]


class PolicyOut(msgspec.Struct, kw_only=True):
    version: str
    text: str
    uploaded_by: str | None
    uploaded_at: datetime | None
