"""Attestation before dispatch: nonces, quote verification, event-log appraisal, golden releases, the
signed result token, the truck's attestation status and quarantine.

nonce:  single use, 256 bits from the OS CSPRNG, short TTL, bound to one truck and a purpose and,
        optionally, one tender: the quote must then carry H(nonce ‖ tender ‖ 0x00 ‖ truck) as extraData,
        so it proves the truck's state for that tender only. Stored, and consumed by a conditional update,
        so it works across replicas.
attest: the nonce is claimed first (a replay is refused even if everything else is fine); the quote is
        verified with the AK enrolled for the truck (never a key the request carries) over the PCR
        selection the authority chose; the event log is replayed to the quoted values; the values are
        appraised against the model's releases; the result is signed (EAR-style JWT) and stored.

Refusals before the quote is proven to come from the truck's TPM for this nonce (unknown, used, expired
or foreign nonce; a bad signature) change nothing about the truck: anyone can send those. Failures of
evidence the truck's AK did sign (PCR values or event log that do not match the quote, a clock going
backwards, a revoked release) quarantine the truck, with the reason. A later passing attestation lifts
the quarantine only when the operator's setting allows it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import secrets
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import Engine, bindparam, select, update
from sqlmodel import Session, SQLModel, col

from attest.ak import VerifiedAk, check_attestation_key
from attest.alg import Alg
from attest.appraise import Appraisal, GoldenRelease, Status, appraise
from attest.binding import expected_extra_data
from attest.errors import (
    ClockWentBackwards,
    EventLogAlgorithmMismatch,
    EventLogReplayMismatch,
    MalformedEventLog,
    MissingSeparator,
    PcrDigestMismatch,
    PcrSelectionMismatch,
    PcrValuesMismatch,
    PcrWithoutEvents,
)
from attest.log_cache import AppraisedLogCache
from attest.public import parse_tpmt_public
from attest.quote import PcrRequest, QuoteClock, VerifiedQuote, verify_quote
from pki.jws import b64url, sign_compact
from provision import audit
from provision.audit import Actor
from provision.db import writer_lock
from provision.errors import (
    AttestationNonceExpired,
    AttestationNonceUsed,
    AttestationNonceWrongTruck,
    AttestationRequired,
    ReleaseRevokedFirmware,
    TruckNotEnrolled,
    TruckNotQuarantined,
    TruckQuarantined,
    UnknownAttestationNonce,
    UnknownTruck,
)
from provision.fleets import spiffe_id
from provision.releases import Releases, golden_releases
from provision.single_use import PendingJti, spend_pending
from provision.tables import (
    AttestationNonce,
    AttestationResult,
    AuditEvent,
    Truck,
    TruckAttestation,
)
from provision.tlog_store import event as tlog_event
from provision.token_keys import RESULTS, TokenKeys

_NONCE_BYTES = 32
_NONCES = SQLModel.metadata.tables[AttestationNonce.__tablename__]
_RESULTS = SQLModel.metadata.tables[AttestationResult.__tablename__]
_STATES = SQLModel.metadata.tables[TruckAttestation.__tablename__]
_AUDIT = SQLModel.metadata.tables[AuditEvent.__tablename__]
# The nonce with the asking truck and its attestation state, in one read (outer joins: either may be
# missing, and the nonce may name another truck).
_OPEN = (
    select(
        _NONCES.c.id,
        _NONCES.c.truck_id,
        _NONCES.c.purpose,
        _NONCES.c.tender_id,
        _NONCES.c.nonce,
        _NONCES.c.extra_data,
        _NONCES.c.bank,
        _NONCES.c.pcrs,
        _NONCES.c.expires_at,
        _NONCES.c.consumed_at,
        col(Truck.fleet_id),
        col(Truck.model),
        col(Truck.ak_public),
        _STATES.c.reset_count,
        _STATES.c.restart_count,
        _STATES.c.clock,
    )
    .select_from(_NONCES)
    .outerjoin(Truck, col(Truck.id) == bindparam("truck"))
    .outerjoin(_STATES, _STATES.c.truck_id == bindparam("truck"))
    .where(_NONCES.c.id == bindparam("nonce"))
)
# SET clauses come from the execute parameters (the columns named there).
_UPDATE_STATE = update(_STATES).where(_STATES.c.truck_id == bindparam("truck"))
# Mark the nonce used unless it already is: rowcount 1 only for the one claim that wins.
_CLAIM_NONCE = update(_NONCES).where(_NONCES.c.id == bindparam("claimed_id"), _NONCES.c.consumed_at.is_(None))
_QUARANTINED = select(_STATES.c.quarantined).where(_STATES.c.truck_id == bindparam("truck"))
_AK_OF_TRUCK = select(col(Truck.ak_public)).where(col(Truck.id) == bindparam("truck"))
# Appraised event logs of this process (attest.log_cache): keyed by the log and the quoted values.
_APPRAISED_LOGS = AppraisedLogCache(1024)
_BANKS = {"sha256": Alg.SHA256, "sha384": Alg.SHA384}
EAR_PROFILE = "tag:github.com,2023:veraison/ear"
PURPOSES = ("attest", "renew", "dispatch")
# The purpose of the nonce an enrolling truck's first quote carries (issued by the enrollment's start).
ENROLL_PURPOSE = "enroll"
# Failures that verify_quote reaches only after the signature by the truck's AK and the nonce held, and
# failures of what that signed quote vouches for: the truck's own evidence condemns it.
SIGNED_EVIDENCE_FAILURES = (
    PcrSelectionMismatch,
    PcrValuesMismatch,
    PcrDigestMismatch,
    ClockWentBackwards,
    MalformedEventLog,
    EventLogAlgorithmMismatch,
    PcrWithoutEvents,
    MissingSeparator,
    EventLogReplayMismatch,
    ReleaseRevokedFirmware,
)


@functools.lru_cache(maxsize=4096)
def enrolled_ak(ak_public: bytes) -> VerifiedAk:
    """The checked AK of a truck's stored TPMT_PUBLIC. Keyed by the stored bytes themselves, so a
    re-enrolled truck (new AK bytes) is checked afresh and no entry can answer for other bytes; the
    VerifiedAk is immutable and carries the loaded key and its per-AK verify state. A refused AK
    raises and is not cached."""
    return check_attestation_key(parse_tpmt_public(ak_public))


@functools.lru_cache(maxsize=64)
def _selection(bank: str, pcrs: str) -> PcrRequest:
    """The PcrRequest of a stored nonce's bank and PCR list (few distinct ones: the policy's)."""
    return PcrRequest.of(_BANKS[bank], (int(p) for p in pcrs.split(",")))


@dataclass(frozen=True)
class AttestationPolicy:
    bank: str
    pcrs: tuple[int, ...]
    nonce_ttl: timedelta
    result_ttl: timedelta
    auto_lift_quarantine: bool
    trust_domain: str
    issuer: str


@dataclass(frozen=True)
class NonceView:
    id: str
    truck: str
    purpose: str
    tender: str | None
    nonce: bytes
    extra_data: bytes
    bank: str
    pcrs: tuple[int, ...]
    expires_at: datetime


def _nonce_values(view: NonceView, created_at: datetime) -> dict[str, object]:
    return {
        "id": view.id,
        "truck_id": view.truck,
        "purpose": view.purpose,
        "tender_id": view.tender,
        "nonce": view.nonce,
        "extra_data": view.extra_data,
        "bank": view.bank,
        "pcrs": ",".join(str(p) for p in view.pcrs),
        "created_at": created_at,
        "expires_at": view.expires_at,
    }


def _nonce_row(view: NonceView, created_at: datetime) -> AttestationNonce:
    return AttestationNonce(
        id=view.id,
        truck_id=view.truck,
        purpose=view.purpose,
        tender_id=view.tender,
        nonce=view.nonce,
        extra_data=view.extra_data,
        bank=view.bank,
        pcrs=",".join(str(p) for p in view.pcrs),
        created_at=created_at,
        expires_at=view.expires_at,
    )


class NonceFacts(Protocol):
    """What verification and the result need of a nonce (a stored AttestationNonce, or `OpenNonce`)."""

    @property
    def id(self) -> str: ...
    @property
    def purpose(self) -> str: ...
    @property
    def tender_id(self) -> str | None: ...
    @property
    def nonce(self) -> bytes: ...
    @property
    def extra_data(self) -> bytes: ...
    @property
    def bank(self) -> str: ...
    @property
    def pcrs(self) -> str: ...


class TruckFacts(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def fleet_id(self) -> str: ...


@dataclass(frozen=True)
class OpenNonce:
    id: str
    purpose: str
    tender_id: str | None
    nonce: bytes
    extra_data: bytes
    bank: str
    pcrs: str  # comma-separated, as stored


@dataclass(frozen=True)
class OpenTruck:
    id: str
    fleet_id: str
    model: str
    ak_public: bytes


@dataclass(frozen=True)
class Evidence:
    quote: bytes
    signature: bytes
    pcr_values: Mapping[int, bytes]
    event_log: bytes


@dataclass(frozen=True)
class ResultView:
    id: str
    truck: str
    status: str
    release_id: str | None
    release_version: str | None
    trust_vector: dict[str, int]
    reasons: tuple[str, ...]
    rebooted: bool
    issued_at: datetime
    expires_at: datetime
    token: str


@dataclass(frozen=True)
class StatusView:
    truck: str
    status: str | None
    attested_at: datetime | None
    attested_until: datetime | None
    release_id: str | None
    reasons: tuple[str, ...]
    quarantined: bool
    quarantine_reason: str | None
    quarantined_at: datetime | None


class Attestation:
    def __init__(
        self,
        engine: Engine,
        releases: Releases,
        token_keys: TokenKeys,
        policy: AttestationPolicy,
        *,
        clock: Callable[[], datetime],
    ) -> None:
        self._engine = engine
        self._releases = releases
        self._token_keys = token_keys
        self._policy = policy
        self._clock = clock
        self._selection = PcrRequest.of(_BANKS[policy.bank], policy.pcrs)
        # Writers on one SQLite file queue on a flock instead of SQLite's sleeping busy handler.
        self._write_lock = writer_lock(engine)
        # Wakes this process's log sequencer after a commit (set by the service when it runs one).
        self.log_wake: Callable[[], None] = lambda: None

    # -- nonces ----------------------------------------------------------------------------------

    def nonce(
        self,
        actor: Actor,
        truck_id: str,
        purpose: str,
        tender: str | None = None,
        *,
        request_jti: PendingJti | None = None,
    ) -> NonceView:
        """A new nonce for the truck; `request_jti` (the verified request JWT's, not yet spent) is
        spent in the same transaction (JwtReplayed if it was spent before)."""
        now = self._clock()
        nonce = secrets.token_bytes(_NONCE_BYTES)
        extra = expected_extra_data(nonce, tender, truck_id)
        view = NonceView(
            id=secrets.token_urlsafe(24),
            truck=truck_id,
            purpose=purpose,
            tender=tender,
            nonce=nonce,
            extra_data=extra,
            bank=self._policy.bank,
            pcrs=self._selection.pcrs,
            expires_at=now + self._policy.nonce_ttl,
        )
        with self._engine.connect() as conn:
            ak_public = conn.execute(_AK_OF_TRUCK, {"truck": truck_id}).first()
            if ak_public is None:
                raise UnknownTruck(f"no truck {truck_id[:64]!r}")
            if ak_public[0] is None:
                raise TruckNotEnrolled(f"truck {truck_id} has not enrolled; there is no AK to quote with")
            # One write transaction: the request JWT's jti and the nonce commit together.
            with self._write_lock():
                if request_jti is not None:
                    spend_pending(conn, request_jti, now)
                conn.execute(_NONCES.insert(), _nonce_values(view, now))
                conn.commit()
        return view

    # -- attest ----------------------------------------------------------------------------------

    def attest(
        self,
        actor: Actor,
        truck_id: str,
        nonce_id: str,
        evidence: Evidence,
        *,
        request_jti: PendingJti | None = None,
    ) -> ResultView:
        """Verify and appraise the evidence, then claim the nonce, spend `request_jti` (the verified
        request JWT's, not yet spent) and store the result in one write transaction. The claim is a
        conditional update: of two attempts with one nonce, on any replica, only one commits. A refused
        attempt spends the nonce too (`_burn`)."""
        with self._refusals(actor, "attestation.verify", truck_id):
            nonce, truck_row, previous, golden = self._open(truck_id, nonce_id)
            try:
                quote, appraisal = self.verify_evidence(
                    enrolled_ak(truck_row.ak_public), nonce, evidence, golden=golden, previous=previous
                )
            except BaseException:
                self._burn(nonce.id)
                raise
            return self._store(actor, truck_row, nonce, quote, appraisal, request_jti=request_jti)

    def verify_evidence(
        self,
        ak: VerifiedAk,
        nonce: NonceFacts,
        evidence: Evidence,
        *,
        golden: Sequence[GoldenRelease],
        previous: QuoteClock | None,
    ) -> tuple[VerifiedQuote, Appraisal]:
        """The quote by `ak` over the claimed nonce's extraData and selection, its event log replayed to
        the quoted values, and those appraised against `golden`; a revoked release refuses."""
        selection = _selection(nonce.bank, nonce.pcrs)
        quote = verify_quote(
            evidence.quote,
            evidence.signature,
            ak=ak,
            nonce=nonce.extra_data,
            selection=selection,
            pcr_values=evidence.pcr_values,
            previous=previous,
        )
        appraised_log = _APPRAISED_LOGS.appraise(evidence.event_log, selection.bank, quote.pcr_values)
        appraisal = appraise(
            nonce.bank, appraised_log.pcr_values, golden, warnings=[str(w) for w in quote.warnings]
        )
        if appraisal.status is Status.CONTRAINDICATED:
            raise ReleaseRevokedFirmware("; ".join(appraisal.reasons))
        return quote, appraisal

    def golden(self, model: str) -> list[GoldenRelease]:
        """Every release of `model`, revoked ones included (what appraisal weighs)."""
        return self._releases.golden(model)

    def enrollment_nonce(
        self, session: Session, truck_id: str, nonce_id: str, expires_at: datetime
    ) -> NonceView:
        """Add, in the caller's transaction, the nonce an enrolling truck's first quote must carry:
        purpose "enroll", the policy's selection, answered only through its enrollment (`nonce_id` is
        the enrollment's id), never at the attestation endpoint."""
        nonce = secrets.token_bytes(_NONCE_BYTES)
        view = NonceView(
            id=nonce_id,
            truck=truck_id,
            purpose=ENROLL_PURPOSE,
            tender=None,
            nonce=nonce,
            extra_data=nonce,
            bank=self._policy.bank,
            pcrs=self._selection.pcrs,
            expires_at=expires_at,
        )
        session.add(_nonce_row(view, self._clock()))
        return view

    def _open(
        self, truck_id: str, nonce_id: str
    ) -> tuple[OpenNonce, OpenTruck, QuoteClock | None, list[GoldenRelease]]:
        """The unused, unexpired nonce issued to this truck for an attestation, the truck, its last
        quote's clock and its model's releases as they stand now: reads only (the claim is written with
        the result, `_store`)."""
        now = self._clock()
        with self._engine.connect() as conn:
            row = conn.execute(_OPEN, {"nonce": nonce_id[:64], "truck": truck_id}).first()
            golden = [] if row is None else golden_releases(conn, row.model)
        if row is None:
            raise UnknownAttestationNonce(f"no attestation nonce {nonce_id[:64]!r}")
        if row.truck_id != truck_id:
            raise AttestationNonceWrongTruck("the nonce was issued to another truck")
        if row.purpose == ENROLL_PURPOSE:
            raise UnknownAttestationNonce(
                f"{row.id} is an enrollment's first-quote nonce; it is answered only at activation"
            )
        if row.consumed_at is not None:
            raise AttestationNonceUsed("the nonce was already used; ask for a new one")
        if row.expires_at <= now:
            raise AttestationNonceExpired(f"the nonce expired at {row.expires_at.isoformat()}")
        if row.fleet_id is None or row.ak_public is None:
            raise TruckNotEnrolled(f"truck {truck_id} has not enrolled")
        nonce = OpenNonce(
            id=row.id,
            purpose=row.purpose,
            tender_id=row.tender_id,
            nonce=bytes(row.nonce),
            extra_data=bytes(row.extra_data),
            bank=row.bank,
            pcrs=row.pcrs,
        )
        truck = OpenTruck(truck_id, row.fleet_id, row.model, bytes(row.ak_public))
        # reset_count is never NULL in a stored state: NULL here means the truck has none yet.
        previous = (
            None if row.reset_count is None else QuoteClock(row.reset_count, row.restart_count, row.clock)
        )
        return nonce, truck, previous, golden

    def _burn(self, nonce_id: str) -> None:
        """Mark the nonce used after a refused attempt: its evidence was seen, it is not asked again."""
        with self._write_lock(), self._engine.begin() as conn:
            conn.execute(_CLAIM_NONCE, {"claimed_id": nonce_id, "consumed_at": self._clock()})

    def _store(
        self,
        actor: Actor,
        truck: TruckFacts,
        nonce: NonceFacts,
        quote: VerifiedQuote,
        appraisal: Appraisal,
        *,
        request_jti: PendingJti | None,
    ) -> ResultView:
        with self._write_lock(), Session(self._engine) as session:
            conn = session.connection()
            if request_jti is not None:
                spend_pending(conn, request_jti, self._clock())
            claimed = conn.execute(_CLAIM_NONCE, {"claimed_id": nonce.id, "consumed_at": self._clock()})
            if claimed.rowcount != 1:
                raise AttestationNonceUsed("the nonce was already used; ask for a new one")
            view = self.record(
                session, actor=actor, truck=truck, nonce=nonce, quote=quote, appraisal=appraisal
            )
            session.commit()
        self.log_wake()
        return view

    def record(
        self,
        session: Session,
        *,
        actor: Actor,
        truck: TruckFacts,
        nonce: NonceFacts,
        quote: VerifiedQuote,
        appraisal: Appraisal,
    ) -> ResultView:
        """Sign the result of a verified quote and write it, the truck's attestation state, the audit row
        and the log entry in the caller's transaction; the caller commits, then calls `log_wake` (the
        enrollment stores its first quote with the certificate it issues, in one transaction)."""
        now = self._clock()
        expires = now + self._policy.result_ttl
        result_id = secrets.token_urlsafe(18)
        release = appraisal.release
        claims = {
            "iss": self._policy.issuer,
            "sub": spiffe_id(self._policy.trust_domain, truck.fleet_id, truck.id),
            "jti": result_id,
            "iat": int(now.timestamp()),
            "exp": int(expires.timestamp()),
            "eat_profile": EAR_PROFILE,
            "eat_nonce": b64url(nonce.nonce),
            "ear.verifier-id": {"developer": "weighstation", "build": "weighstation-0.1"},
            "submods": {
                "truck": {
                    "ear.status": appraisal.status.value,
                    "ear.trustworthiness-vector": appraisal.trust_vector,
                    "ear.appraisal-policy-id": f"release:{release.id}" if release else "release:unknown",
                }
            },
            "weighstation": {
                "truck": truck.id,
                "fleet": truck.fleet_id,
                "purpose": nonce.purpose,
                "tender": nonce.tender_id,
                "release": {"id": release.id, "version": release.version} if release else "unknown",
                "rebooted": quote.rebooted,
            },
        }
        kid, signer = self._token_keys.active(RESULTS)
        token = sign_compact(signer, claims, kid=kid)
        reasons = list(appraisal.reasons)
        # Core on the caller's connection: no ORM objects to build, flush or expire. Anything the
        # caller's session holds pending (the enrollment's rows) is flushed first, for the foreign keys.
        session.flush()
        conn = session.connection()
        conn.execute(
            _RESULTS.insert(),
            {
                "id": result_id,
                "truck_id": truck.id,
                "nonce_id": nonce.id,
                "status": appraisal.status.value,
                "trust_vector": json.dumps(appraisal.trust_vector),
                "reasons": json.dumps(reasons),
                "release_id": release.id if release else None,
                "rebooted": quote.rebooted,
                "issued_at": now,
                "expires_at": expires,
                "token": token,
            },
        )
        clock = quote.clock
        state: dict[str, object] = {
            "status": appraisal.status.value,
            "reasons": json.dumps(reasons),
            "attested_at": now,
            "attested_until": expires,
            "release_id": release.id if release else None,
            "reset_count": clock.reset_count,
            "restart_count": clock.restart_count,
            "clock": clock.clock,
        }
        quarantined = conn.execute(_QUARANTINED, {"truck": truck.id}).first()
        lifted = quarantined is not None and bool(quarantined[0]) and self._policy.auto_lift_quarantine
        if lifted:
            state.update(quarantined=False, quarantine_reason=None, quarantined_at=None)
        if quarantined is None:
            conn.execute(_STATES.insert(), {"truck_id": truck.id, "quarantined": False, **state})
        else:
            conn.execute(_UPDATE_STATE, {"truck": truck.id, **state})
        detail: dict[str, object] = {
            "result": result_id,
            "status": appraisal.status.value,
            "release": release.version if release else "unknown",
            "nonce": nonce.id,
            "transition": quote.transition.value,
        }
        if lifted:
            detail["quarantine_lifted"] = True
        conn.execute(
            _AUDIT.insert(), audit.values(actor, "attestation.verify", at=now, target=truck.id, detail=detail)
        )
        logged = {
            "truck": truck.id,
            "result": result_id,
            "status": appraisal.status.value,
            "release": release.id if release else None,
            "purpose": nonce.purpose,
            "tender": nonce.tender_id,
            "expires_at": expires.isoformat(),
            "token_sha256": hashlib.sha256(token.encode()).hexdigest(),
        }
        table, row = tlog_event("attestation.result", logged, now)
        conn.execute(table.insert(), row)
        return ResultView(
            id=result_id,
            truck=truck.id,
            status=appraisal.status.value,
            release_id=release.id if release else None,
            release_version=release.version if release else None,
            trust_vector=appraisal.trust_vector,
            reasons=tuple(reasons),
            rebooted=quote.rebooted,
            issued_at=now,
            expires_at=expires,
            token=token,
        )

    # -- status and quarantine -------------------------------------------------------------------

    def status(self, truck_id: str) -> StatusView:
        with Session(self._engine) as session:
            if session.get(Truck, truck_id) is None:
                raise UnknownTruck(f"no truck {truck_id[:64]!r}")
            state = session.get(TruckAttestation, truck_id)
        if state is None:
            return StatusView(truck_id, None, None, None, None, (), False, None, None)
        passing = state.status in {Status.AFFIRMING, Status.WARNING} and not state.quarantined
        return StatusView(
            truck=truck_id,
            status=state.status,
            attested_at=state.attested_at,
            attested_until=state.attested_until if passing else None,
            release_id=state.release_id,
            reasons=tuple(json.loads(state.reasons)),
            quarantined=state.quarantined,
            quarantine_reason=state.quarantine_reason,
            quarantined_at=state.quarantined_at,
        )

    def require_passing(self, truck_id: str, window: timedelta) -> StatusView:
        """The truck's status, if it is not quarantined and its last attestation affirmed within
        `window`; else a typed refusal (renewal and, later, dispatch depend on it)."""
        status = self.status(truck_id)
        if status.quarantined:
            raise TruckQuarantined(f"truck {truck_id} is quarantined: {status.quarantine_reason}")
        recent = status.attested_at is not None and status.attested_at >= self._clock() - window
        if status.status != Status.AFFIRMING or not recent:
            raise AttestationRequired(
                f"truck {truck_id} has no affirming attestation in the last {window}; attest first"
            )
        return status

    def lift_quarantine(self, actor: Actor, truck_id: str, reason: str) -> StatusView:
        now = self._clock()
        with Session(self._engine) as session:
            state = session.get(TruckAttestation, truck_id)
            if state is None or not state.quarantined:
                if session.get(Truck, truck_id) is None:
                    raise UnknownTruck(f"no truck {truck_id[:64]!r}")
                raise TruckNotQuarantined(f"truck {truck_id} is not quarantined")
            detail = {"reason": reason, "was": state.quarantine_reason}
            state.quarantined, state.quarantine_reason, state.quarantined_at = False, None, None
            state.attested_until = None  # the next attestation decides again
            session.add(state)
            audit.record(
                session, audit.values(actor, "truck.quarantine.lift", at=now, target=truck_id, detail=detail)
            )
            session.commit()
        return self.status(truck_id)

    def _quarantine(self, actor: Actor, truck_id: str, code: str, reason: str) -> None:
        now = self._clock()
        with Session(self._engine) as session:
            state = session.get(TruckAttestation, truck_id)
            if state is None:
                state = TruckAttestation(
                    truck_id=truck_id,
                    status="",
                    reasons="[]",
                    attested_at=now,
                    reset_count=0,
                    restart_count=0,
                    clock=0,
                )
            state.status, state.reasons, state.attested_at = (
                Status.CONTRAINDICATED.value,
                json.dumps([reason]),
                now,
            )
            state.attested_until = None
            state.quarantined, state.quarantine_reason, state.quarantined_at = (
                True,
                f"{code}: {reason}"[:512],
                now,
            )
            session.add(state)
            audit.record(
                session,
                audit.values(
                    actor, "truck.quarantine", at=now, target=truck_id, code=code, detail={"reason": reason}
                ),
            )
            session.commit()

    @contextmanager
    def _refusals(self, actor: Actor, action: str, truck: str) -> Iterator[None]:
        """Audit a refusal once; quarantine the truck when it is about evidence its TPM signed."""
        try:
            with audit.refusals(self._engine, actor, action, target=truck, clock=self._clock):
                yield
        except SIGNED_EVIDENCE_FAILURES as exc:
            self._quarantine(actor, truck, exc.code, exc.reason)
            raise
