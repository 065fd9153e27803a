"""SQL tables (SQLModel). Times are stored as UTC; `UtcDateTime` restores tzinfo that SQLite drops."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import BigInteger, Dialect, Index, Integer, LargeBinary, Text, UniqueConstraint, false
from sqlalchemy.types import DateTime, TypeDecorator
from sqlmodel import Field, SQLModel


class UtcDateTime(TypeDecorator[datetime]):
    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime refused: pass an aware UTC datetime")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class CertificateAuthority(SQLModel, table=True):
    __tablename__ = "certificate_authorities"

    id: str = Field(primary_key=True, max_length=64)  # hex of the subject key identifier
    kind: str = Field(max_length=16)  # root | issuing
    status: str = Field(max_length=16)  # active | retired
    parent_id: str | None = Field(default=None, max_length=64)
    key_ref: str = Field(max_length=255)
    certificate_der: bytes = Field(sa_type=LargeBinary)
    not_before: datetime = Field(sa_type=UtcDateTime)
    not_after: datetime = Field(sa_type=UtcDateTime)
    created_at: datetime = Field(sa_type=UtcDateTime)


class IssuedCertificate(SQLModel, table=True):
    __tablename__ = "certificates"
    __table_args__ = (Index("ix_certificates_issuer_status", "issuer_id", "status"),)

    serial: str = Field(primary_key=True, max_length=42)  # lower-case hex, unique across replicas
    issuer_id: str = Field(foreign_key="certificate_authorities.id", max_length=64)
    profile: str = Field(max_length=32)
    subject: str = Field(max_length=512)  # the primary SAN, for lookups and audit
    not_before: datetime = Field(sa_type=UtcDateTime)
    not_after: datetime = Field(sa_type=UtcDateTime)
    certificate_der: bytes = Field(sa_type=LargeBinary)
    status: str = Field(default="valid", max_length=16)  # valid | revoked
    revoked_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    revocation_reason: str | None = Field(default=None, max_length=32)
    renewed_from: str | None = Field(default=None, max_length=42)
    created_at: datetime = Field(sa_type=UtcDateTime)


class CrlRecord(SQLModel, table=True):
    """The latest CRL per issuer; crl_number only grows (RFC 5280 §5.2.3)."""

    __tablename__ = "crls"

    issuer_id: str = Field(primary_key=True, foreign_key="certificate_authorities.id", max_length=64)
    crl_number: int
    crl_der: bytes = Field(sa_type=LargeBinary)
    this_update: datetime = Field(sa_type=UtcDateTime)
    next_update: datetime = Field(sa_type=UtcDateTime)
    stale: bool = Field(default=False)


class AuditEvent(SQLModel, table=True):
    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_at", "at"),)

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(sa_type=UtcDateTime)
    actor: str = Field(max_length=128)
    action: str = Field(max_length=64)
    target: str | None = Field(default=None, max_length=512)
    outcome: str = Field(max_length=16)  # ok | refused | error
    code: str | None = Field(default=None, max_length=64)
    detail: str | None = Field(default=None, sa_type=Text)
    request_id: str | None = Field(default=None, max_length=64)


class IdempotencyRecord(SQLModel, table=True):
    """The response to a mutating call made with an Idempotency-Key, stored in the same transaction as
    the change, so a retry replays it instead of repeating the change."""

    __tablename__ = "idempotency_records"

    actor: str = Field(primary_key=True, max_length=128)
    key: str = Field(primary_key=True, max_length=128)
    operation: str = Field(max_length=64)
    request_hash: str = Field(max_length=64)
    status_code: int
    response_body: bytes = Field(sa_type=LargeBinary)
    created_at: datetime = Field(sa_type=UtcDateTime)


class Fleet(SQLModel, table=True):
    __tablename__ = "fleets"

    id: str = Field(primary_key=True, max_length=64)
    name: str = Field(max_length=128)
    created_at: datetime = Field(sa_type=UtcDateTime)


class FleetInsurancePolicy(SQLModel, table=True):
    """An insurance policy number covering a fleet from `valid_from` until `valid_until` (None: open
    ended). A fleet may have several, a policy number may cover several fleets. The fleet's operator
    replaces the fleet's whole list at once (provision.coverage)."""

    __tablename__ = "fleet_insurance_policies"
    __table_args__ = (
        UniqueConstraint("fleet_id", "policy_number", "valid_from", name="uq_fleet_insurance_policies"),
        Index("ix_fleet_insurance_policies_fleet", "fleet_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    fleet_id: str = Field(foreign_key="fleets.id", max_length=64)
    policy_number: str = Field(max_length=64)
    valid_from: datetime = Field(sa_type=UtcDateTime)
    valid_until: datetime | None = Field(default=None, sa_type=UtcDateTime)
    recorded_by: str = Field(max_length=128)
    recorded_at: datetime = Field(sa_type=UtcDateTime)


class Truck(SQLModel, table=True):
    """A registered truck and its current hardware binding (EK, AK, identity key, certificate).

    `ek_sha256` is unique: one TPM is the hardware of at most one truck. The binding is replaced only by
    a new enrollment, and by one with another EK only after an approved hardware swap; every binding
    ever made stays in `truck_enrollments`.
    """

    __tablename__ = "trucks"
    __table_args__ = (Index("ix_trucks_fleet", "fleet_id"),)

    id: str = Field(primary_key=True, max_length=64)
    fleet_id: str = Field(foreign_key="fleets.id", max_length=64)
    vin: str = Field(max_length=17, unique=True)
    model: str = Field(max_length=128)
    state: str = Field(max_length=16)  # registered | enrolled
    expected_ek_sha256: str | None = Field(default=None, max_length=64)
    ek_sha256: str | None = Field(default=None, max_length=64, unique=True)
    ak_public: bytes | None = Field(default=None, sa_type=LargeBinary)
    ak_name: str | None = Field(default=None, max_length=98)
    identity_name: str | None = Field(default=None, max_length=98)
    certificate_serial: str | None = Field(default=None, max_length=42)
    enrolled_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    created_at: datetime = Field(sa_type=UtcDateTime)
    # The profile its fleet's operator sets (provision.fleets.set_truck_profile); Cedar reads both.
    autonomy_mode: str = Field(
        default="unknown", max_length=16, sa_column_kwargs={"server_default": "unknown"}
    )  # driverless | supervised | manual | unknown
    hazmat_certified: bool = Field(default=False, sa_column_kwargs={"server_default": false()})


class EnrollmentToken(SQLModel, table=True):
    """A minted enrollment token (the JWT itself is not stored): single use through `used_at`."""

    __tablename__ = "enrollment_tokens"

    jti: str = Field(primary_key=True, max_length=64)
    truck_id: str = Field(foreign_key="trucks.id", max_length=64)
    issued_by: str = Field(max_length=128)
    issued_at: datetime = Field(sa_type=UtcDateTime)
    expires_at: datetime = Field(sa_type=UtcDateTime)
    used_at: datetime | None = Field(default=None, sa_type=UtcDateTime)


class EnrollmentChallenge(SQLModel, table=True):
    """An issued MakeCredential challenge. Only the secret's SHA-256 is kept; `status` moves once from
    pending to activated or failed, so a challenge is answered at most once."""

    __tablename__ = "enrollment_challenges"

    id: str = Field(primary_key=True, max_length=64)
    truck_id: str = Field(foreign_key="trucks.id", max_length=64)
    token_jti: str = Field(foreign_key="enrollment_tokens.jti", max_length=64, unique=True)
    ek_sha256: str = Field(max_length=64)
    ek_certificate_der: bytes = Field(sa_type=LargeBinary)
    ak_public: bytes = Field(sa_type=LargeBinary)
    secret_sha256: bytes = Field(sa_type=LargeBinary)
    certify_nonce: bytes = Field(sa_type=LargeBinary)
    status: str = Field(max_length=16)  # pending | activated | failed
    failure_code: str | None = Field(default=None, max_length=64)
    created_at: datetime = Field(sa_type=UtcDateTime)
    expires_at: datetime = Field(sa_type=UtcDateTime)
    completed_at: datetime | None = Field(default=None, sa_type=UtcDateTime)


class TruckEnrollment(SQLModel, table=True):
    """Every binding truck ↔ EK ↔ AK ↔ identity key ever made, append-only."""

    __tablename__ = "truck_enrollments"
    __table_args__ = (Index("ix_truck_enrollments_truck", "truck_id"),)

    id: int | None = Field(default=None, primary_key=True)
    truck_id: str = Field(foreign_key="trucks.id", max_length=64)
    challenge_id: str = Field(foreign_key="enrollment_challenges.id", max_length=64, unique=True)
    ek_sha256: str = Field(max_length=64)
    ek_certificate_der: bytes = Field(sa_type=LargeBinary)
    ak_public: bytes = Field(sa_type=LargeBinary)
    ak_name: str = Field(max_length=98)
    identity_public: bytes = Field(sa_type=LargeBinary)
    identity_name: str = Field(max_length=98)
    certificate_serial: str = Field(max_length=42)
    hardware_swap_id: int | None = Field(default=None)
    enrolled_at: datetime = Field(sa_type=UtcDateTime)


class HardwareSwap(SQLModel, table=True):
    """An operator's approval for the truck's next enrollment to bind a different EK; used once."""

    __tablename__ = "hardware_swaps"
    __table_args__ = (Index("ix_hardware_swaps_truck", "truck_id"),)

    id: int | None = Field(default=None, primary_key=True)
    truck_id: str = Field(foreign_key="trucks.id", max_length=64)
    reason: str = Field(max_length=512)
    approved_by: str = Field(max_length=128)
    approved_at: datetime = Field(sa_type=UtcDateTime)
    consumed_at: datetime | None = Field(default=None, sa_type=UtcDateTime)


class TruckAttestation(SQLModel, table=True):
    """A truck's attestation state: the last accepted quote's clock (for ordering), the last result and
    quarantine. One row per truck, created by its first attestation."""

    __tablename__ = "truck_attestations"

    truck_id: str = Field(primary_key=True, foreign_key="trucks.id", max_length=64)
    status: str = Field(max_length=16)  # affirming | warning | contraindicated
    reasons: str = Field(sa_type=Text)  # JSON list
    release_id: str | None = Field(default=None, max_length=64)
    attested_at: datetime = Field(sa_type=UtcDateTime)
    attested_until: datetime | None = Field(default=None, sa_type=UtcDateTime)  # None unless passing
    reset_count: int
    restart_count: int
    clock: int = Field(sa_type=BigInteger)
    quarantined: bool = Field(default=False)
    quarantine_reason: str | None = Field(default=None, max_length=512)
    quarantined_at: datetime | None = Field(default=None, sa_type=UtcDateTime)


class AttestationNonce(SQLModel, table=True):
    """A nonce the authority issued for one truck and purpose (optionally one tender); used once."""

    __tablename__ = "attestation_nonces"
    __table_args__ = (Index("ix_attestation_nonces_truck", "truck_id"),)

    id: str = Field(primary_key=True, max_length=64)
    truck_id: str = Field(foreign_key="trucks.id", max_length=64)
    purpose: str = Field(max_length=16)  # attest | renew | dispatch
    tender_id: str | None = Field(default=None, max_length=128)
    nonce: bytes = Field(sa_type=LargeBinary)
    extra_data: bytes = Field(sa_type=LargeBinary)  # what the quote must carry in extraData
    bank: str = Field(max_length=16)
    pcrs: str = Field(max_length=128)  # the selection the authority asks for, e.g. "0,1,...,15"
    created_at: datetime = Field(sa_type=UtcDateTime)
    expires_at: datetime = Field(sa_type=UtcDateTime)
    consumed_at: datetime | None = Field(default=None, sa_type=UtcDateTime)


class AttestationResult(SQLModel, table=True):
    """Every appraisal made, with the token issued for it (append-only)."""

    __tablename__ = "attestation_results"
    __table_args__ = (Index("ix_attestation_results_truck", "truck_id"),)

    id: str = Field(primary_key=True, max_length=64)  # also the token's jti
    truck_id: str = Field(foreign_key="trucks.id", max_length=64)
    nonce_id: str = Field(foreign_key="attestation_nonces.id", max_length=64, unique=True)
    status: str = Field(max_length=16)
    trust_vector: str = Field(sa_type=Text)  # JSON
    reasons: str = Field(sa_type=Text)  # JSON list
    release_id: str | None = Field(default=None, max_length=64)
    rebooted: bool = Field(default=False)
    issued_at: datetime = Field(sa_type=UtcDateTime)
    expires_at: datetime = Field(sa_type=UtcDateTime)
    token: str = Field(sa_type=Text)


class TokenKey(SQLModel, table=True):
    """A signing key for the tokens the authority issues (attestation results), published in the JWKS
    while it is active or until the tokens it signed have expired."""

    __tablename__ = "token_keys"

    kid: str = Field(primary_key=True, max_length=64)
    purpose: str = Field(max_length=32)  # attestation-result
    key_ref: str = Field(max_length=255)
    status: str = Field(max_length=16)  # active | retired
    created_at: datetime = Field(sa_type=UtcDateTime)
    retired_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    # A retired key verifies and is published until then (its tokens' longest life plus clock skew).
    published_until: datetime | None = Field(default=None, sa_type=UtcDateTime)


class ReleaseKey(SQLModel, table=True):
    """A firmware release-signing key the operator registered (public key only)."""

    __tablename__ = "release_keys"

    id: str = Field(primary_key=True, max_length=64)  # RFC 7638 thumbprint
    name: str = Field(max_length=128)
    public_key_pem: str = Field(sa_type=Text)
    registered_by: str = Field(max_length=128)
    created_at: datetime = Field(sa_type=UtcDateTime)
    revoked_at: datetime | None = Field(default=None, sa_type=UtcDateTime)


class Release(SQLModel, table=True):
    """A golden firmware release of one truck model: the signed manifest as registered, and the PCR
    values it promises. Revoking it makes every truck that runs it stop appraising as good."""

    __tablename__ = "releases"
    __table_args__ = (UniqueConstraint("model", "version", name="uq_releases_model_version"),)

    id: str = Field(primary_key=True, max_length=64)  # SHA-256 of the signed manifest
    model: str = Field(max_length=128)
    version: str = Field(max_length=64)
    key_id: str = Field(foreign_key="release_keys.id", max_length=64)
    manifest: str = Field(sa_type=Text)  # the JWS exactly as registered
    bank: str = Field(max_length=16)
    pcrs: str = Field(sa_type=Text)  # JSON {"0": hex, ...}
    status: str = Field(max_length=16)  # active | revoked
    registered_by: str = Field(max_length=128)
    created_at: datetime = Field(sa_type=UtcDateTime)
    revoked_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    revocation_reason: str | None = Field(default=None, max_length=512)


class OAuthClient(SQLModel, table=True):
    """An OAuth2 client registered by the operator (RFC 6749 §2): its kind and attributes feed the
    policies; only a scrypt hash of its secret is kept."""

    __tablename__ = "oauth_clients"

    id: str = Field(primary_key=True, max_length=64)
    name: str = Field(max_length=128)
    kind: str = Field(max_length=16)  # operator | broker | tms | insurer
    organisation: str = Field(max_length=128)
    fleets: str = Field(sa_type=Text)  # JSON list of fleet ids (managed or contracted)
    insurer_policies: str = Field(sa_type=Text)  # JSON list
    global_admin: bool = Field(default=False)
    scopes: str = Field(max_length=1024)  # space-separated, as in the token's scope claim
    secret_hash: str = Field(max_length=255)  # empty for a private_key_jwt client
    registered_by: str = Field(max_length=128)
    created_at: datetime = Field(sa_type=UtcDateTime)
    disabled_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    # client_secret_basic | client_secret_post | private_key_jwt: the only way this client may authenticate
    token_endpoint_auth_method: str = Field(default="client_secret_basic", max_length=32)


class OAuthClientKey(SQLModel, table=True):
    """A public key of a private_key_jwt client (RFC 7523 §2.2), from the JWKS it registered."""

    __tablename__ = "oauth_client_keys"

    client_id: str = Field(primary_key=True, foreign_key="oauth_clients.id", max_length=64)
    kid: str = Field(primary_key=True, max_length=128)
    algorithms: str = Field(max_length=64)  # space-separated JWS algorithms this key may sign with
    public_jwk: str = Field(sa_type=Text)  # the public members only, as JSON
    created_at: datetime = Field(sa_type=UtcDateTime)


# --- transparency log -----------------------------------------------------------------------

# SQLite makes only an INTEGER PRIMARY KEY a rowid alias (autoincrement); PostgreSQL gets a BIGINT.
_BIG_ID = BigInteger().with_variant(Integer(), "sqlite")


class LogState(SQLModel, table=True):
    """The transparency log's one sequencer row (id 1): its origin and key, and the tree it has
    signed. Every sequencing transaction locks it first, so replicas append one after the other."""

    __tablename__ = "tlog_state"

    id: int = Field(primary_key=True)
    origin: str = Field(max_length=255)
    key_ref: str = Field(max_length=255)
    size: int = Field(sa_type=BigInteger)
    root_hash: bytes = Field(sa_type=LargeBinary)
    updated_at: datetime = Field(sa_type=UtcDateTime)


class LogEntry(SQLModel, table=True):
    """A sequenced entry. `leaf_hash` is unique (dedup by digest); `checkpoint_size` is the size of the
    checkpoint its batch signed, so the first receipt can be given again."""

    __tablename__ = "tlog_entries"

    idx: int = Field(sa_type=BigInteger, primary_key=True, sa_column_kwargs={"autoincrement": False})
    leaf_hash: bytes = Field(sa_type=LargeBinary, unique=True)
    entry: bytes = Field(sa_type=LargeBinary)
    kind: str = Field(max_length=64)
    checkpoint_size: int = Field(sa_type=BigInteger)
    created_at: datetime = Field(sa_type=UtcDateTime)


class LogPending(SQLModel, table=True):
    """An entry written in the same transaction as the change it records (e.g. a certificate), waiting
    for the sequencer: the event is durable with the change and logged shortly after."""

    __tablename__ = "tlog_pending"

    id: int | None = Field(default=None, sa_type=_BIG_ID, primary_key=True)
    entry: bytes = Field(sa_type=LargeBinary)
    kind: str = Field(max_length=64)
    created_at: datetime = Field(sa_type=UtcDateTime)


class LogTile(SQLModel, table=True):
    """A c2sp tlog-tiles hash tile: 32-byte hashes, rewritten while partial, never once full (256)."""

    __tablename__ = "tlog_tiles"

    level: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    idx: int = Field(sa_type=BigInteger, primary_key=True, sa_column_kwargs={"autoincrement": False})
    hashes: bytes = Field(sa_type=LargeBinary)


class LogCheckpoint(SQLModel, table=True):
    """Every signed checkpoint, one per sequenced batch."""

    __tablename__ = "tlog_checkpoints"

    size: int = Field(sa_type=BigInteger, primary_key=True, sa_column_kwargs={"autoincrement": False})
    root_hash: bytes = Field(sa_type=LargeBinary)
    note: str = Field(sa_type=Text)
    created_at: datetime = Field(sa_type=UtcDateTime)


class PolicyVersion(SQLModel, table=True):
    """Every policy set the operator uploaded (append-only); the latest is the active one on every
    replica. The files in policies/ are the set until the first upload."""

    __tablename__ = "policy_versions"

    id: int | None = Field(default=None, primary_key=True)
    version: str = Field(max_length=64)  # SHA-256 of the text
    text: str = Field(sa_type=Text)
    uploaded_by: str = Field(max_length=128)
    uploaded_at: datetime = Field(sa_type=UtcDateTime)


class SpentJti(SQLModel, table=True):
    """A single-use JWT id that was presented once (truck request JWTs, client assertions). Rows can be
    dropped once `expires_at` is past: the JWT itself is refused as expired from then on."""

    __tablename__ = "spent_jtis"

    purpose: str = Field(primary_key=True, max_length=32)
    jti: str = Field(primary_key=True, max_length=128)
    subject: str = Field(max_length=128)
    expires_at: datetime = Field(sa_type=UtcDateTime, index=True)


# --- truck statements -----------------------------------------------------------------------


class TruckStatementRow(SQLModel, table=True):
    """A truck statement accepted into its chain and the log: the exact signed bytes, the signature, the
    certificate chain it came with and that certificate's status at submission. Append-only."""

    __tablename__ = "truck_statements"
    __table_args__ = (UniqueConstraint("truck_id", "sequence", name="uq_truck_statements_truck_sequence"),)

    sha256: str = Field(primary_key=True, max_length=64)  # hex SHA-256 of `statement`
    truck_id: str = Field(foreign_key="trucks.id", max_length=64)
    sequence: int = Field(sa_type=BigInteger)
    kind: str = Field(max_length=32)
    statement: bytes = Field(sa_type=LargeBinary)
    signature: bytes = Field(sa_type=LargeBinary)
    certificate_chain_pem: str = Field(sa_type=Text)
    certificate_serial: str = Field(max_length=42)
    certificate_status: str = Field(max_length=16)  # good, as checked at submission
    checkpoint_size: int = Field(sa_type=BigInteger)  # the checkpoint the statement names
    leaf_hash: bytes = Field(sa_type=LargeBinary, unique=True)  # of its log entry
    issued_at: datetime = Field(sa_type=UtcDateTime)
    submitted_at: datetime = Field(sa_type=UtcDateTime)


class TruckStatementChain(SQLModel, table=True):
    """A truck's chain head: the last accepted sequence and its hash; `chain_broken_at` is set by the
    first fork the truck signed and never cleared."""

    __tablename__ = "truck_statement_chains"

    truck_id: str = Field(primary_key=True, foreign_key="trucks.id", max_length=64)
    sequence: int = Field(sa_type=BigInteger)
    head_sha256: str = Field(max_length=64)
    updated_at: datetime = Field(sa_type=UtcDateTime)
    chain_broken_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    forks: int = Field(default=0)


class TruckStatementFork(SQLModel, table=True):
    """A validly signed statement refused because it forks the truck's chain (append-only evidence)."""

    __tablename__ = "truck_statement_forks"
    __table_args__ = (Index("ix_truck_statement_forks_truck", "truck_id"),)

    id: int | None = Field(default=None, primary_key=True)
    truck_id: str = Field(foreign_key="trucks.id", max_length=64)
    sequence: int = Field(sa_type=BigInteger)
    refused_sha256: str = Field(max_length=64)
    held_sha256: str = Field(max_length=64)  # what the chain holds at that point (or its head)
    previous: str = Field(max_length=64)  # the refused statement's `previous`
    statement: bytes = Field(sa_type=LargeBinary)
    signature: bytes = Field(sa_type=LargeBinary)
    detected_at: datetime = Field(sa_type=UtcDateTime)


class TruckStatementSigstore(SQLModel, table=True):
    """What a truck statement's Sigstore bundle needs, fixed when it was submitted with an evidence
    certificate: the hashedrekord 0.0.2 body appended to the log in the statement's own transaction, and
    the RFC 3161 timestamp over its signature taken then (it dates the signature within the certificate's
    validity, so the bundle verifies after the certificate expires). Append-only."""

    __tablename__ = "truck_statement_sigstore"

    statement_sha256: str = Field(primary_key=True, foreign_key="truck_statements.sha256", max_length=64)
    evidence_serial: str = Field(foreign_key="certificates.serial", max_length=42)
    hashedrekord: bytes = Field(sa_type=LargeBinary)  # the log entry's exact bytes
    leaf_hash: bytes = Field(sa_type=LargeBinary, unique=True)
    timestamp: bytes = Field(sa_type=LargeBinary)  # TimeStampResp (DER)
    stamped_at: datetime = Field(sa_type=UtcDateTime)
