"""The decision API's use case: may this client dispatch (or accept a tender for) these trucks, now?

The principal is the authenticated client, never one the request names; its attributes come from its
registration. Each truck's entity is built from live state at the moment of the decision: fleet, attestation
status and attested-until (none while quarantined), the release it last appraised against and whether that
release is revoked, its identity certificate's status, and the profile its operator set (autonomy mode,
hazmat certification). Cedar decides (policies/); every decision is audited with the state it saw, and
dispatch and tender decisions are appended to the transparency log. The rows go through a group commit
(provision.writer): concurrent requests share one transaction, and each answer is given only after the
commit that holds its rows.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, TypeVar

from sqlalchemy import Connection, Engine, Table, bindparam, select
from sqlmodel import Session, SQLModel, col

from policies.engine import Decision, EntitySet, PolicyEngine
from policies.entities import (
    ClientKind,
    ClientPrincipal,
    EntityJson,
    EntityRef,
    FleetState,
    ReleaseState,
    TenderState,
    TruckState,
    gate_context,
)
from provision import audit
from provision.audit import Actor
from provision.errors import ClientAuthenticationFailed, UnknownTruck
from provision.policy_store import PolicyStore
from provision.tables import (
    AuditEvent,
    Fleet,
    IssuedCertificate,
    OAuthClient,
    Release,
    ReleaseKey,
    Truck,
    TruckAttestation,
)
from provision.tlog_store import event as tlog_event
from provision.writer import BatchWriter, Rows

GATE_ACTIONS = ("dispatch", "tender.accept")
MAX_BATCH = 1000
_AUDIT = SQLModel.metadata.tables[AuditEvent.__tablename__]

# Built once (the compiled form is cached too): Core selects, with more columns than sqlmodel's typed
# select takes and no ORM objects to build from them.
_TRUCK_STATE = (
    select(
        col(Truck.id),
        col(Truck.fleet_id),
        col(Truck.certificate_serial),
        col(TruckAttestation.status),
        col(TruckAttestation.release_id),
        col(TruckAttestation.attested_until),
        col(TruckAttestation.quarantined),
        col(IssuedCertificate.status),
        col(IssuedCertificate.not_after),
        col(Release.id),
        col(Release.status),
        col(Release.model),
        col(ReleaseKey.revoked_at),
        col(Fleet.name),
        col(Truck.autonomy_mode),
        col(Truck.hazmat_certified),
    )
    .select_from(Truck)
    .join(Fleet, col(Fleet.id) == col(Truck.fleet_id))
    .outerjoin(TruckAttestation, col(TruckAttestation.truck_id) == col(Truck.id))
    .outerjoin(IssuedCertificate, col(IssuedCertificate.serial) == col(Truck.certificate_serial))
    .outerjoin(Release, col(Release.id) == col(TruckAttestation.release_id))
    .outerjoin(ReleaseKey, col(ReleaseKey.id) == col(Release.key_id))
)
_TRUCKS_QUERY = _TRUCK_STATE.where(col(Truck.id).in_(bindparam("ids", expanding=True)))
# One truck (a single decision, a route's resource): a plain parameter, so the compiled statement is reused
# as is rather than re-rendered for the length of an expanding IN list.
_TRUCK_QUERY = _TRUCK_STATE.where(col(Truck.id) == bindparam("id"))
_CLIENT_QUERY = select(
    col(OAuthClient.kind),
    col(OAuthClient.organisation),
    col(OAuthClient.fleets),
    col(OAuthClient.insurer_policies),
    col(OAuthClient.global_admin),
    col(OAuthClient.disabled_at),
).where(col(OAuthClient.id) == bindparam("client_id"))


K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Stated(Hashable, Protocol):
    """A frozen live-state record (policies.entities) that renders its Cedar entity."""

    def entity(self) -> EntityJson: ...


class EntityMemo:
    """Parsed entity sets by their exact JSON text. The records hold every attribute as read from the
    database for this request, so a reused set is the very set this request's records parse to: a
    changed row is another key, and nothing read earlier decides anything. What it saves is Cedar's
    parse and schema check of records that recur (the guard's client on the authority, a truck whose
    state has not changed). Bounded: cleared when full, and when the policy engine is replaced.

    Context-free decisions (the route guard's) are memoized the same way: Cedar's answer is a function
    of the policy set, the request and the entities and of nothing else, so the key is the active set's
    version, principal, action, resource and the records' exact text."""

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._engine: PolicyEngine | None = None
        self._sets: dict[str, EntitySet] = {}
        self._decisions: dict[tuple[str, EntityRef, str, EntityRef, str], Decision] = {}
        self._by_state: dict[tuple[Stated, ...], EntitySet] = {}

    def entities(self, engine: PolicyEngine, records: Sequence[EntityJson]) -> EntitySet:
        return self._parsed(engine, json.dumps(records, separators=(",", ":")), records)

    def entities_of(self, engine: PolicyEngine, states: Sequence[Stated]) -> EntitySet:
        """The set of these states' entities, keyed by the states themselves: frozen records whose
        entity is a function of their fields, so equal states are the same records without building
        or serialising them again."""
        key = tuple(states)
        hit = self._by_state.get(key)
        if hit is not None and self._engine is engine:
            return hit
        records = [state.entity() for state in states]
        parsed = self._parsed(engine, json.dumps(records, separators=(",", ":")), records)
        self._remember(engine, self._by_state, key, parsed)
        return parsed

    def decide(
        self,
        engine: PolicyEngine,
        principal: EntityRef,
        action: str,
        resource: EntityRef,
        records: Sequence[EntityJson],
    ) -> Decision:
        text = json.dumps(records, separators=(",", ":"))
        known = self._decisions.get((engine.version, principal, action, resource, text))
        if known is not None and self._engine is engine:
            return known
        decision = engine.decide(principal, action, resource, None, self._parsed(engine, text, records))
        # Under the version that decided: a reload racing this call files it under the old one.
        self._remember(
            engine, self._decisions, (decision.policy_version, principal, action, resource, text), decision
        )
        return decision

    def _parsed(self, engine: PolicyEngine, text: str, records: Sequence[EntityJson]) -> EntitySet:
        hit = self._sets.get(text)
        if hit is not None and self._engine is engine:
            return hit
        parsed = engine.entities(records)
        with self._lock:
            if self._engine is not engine:  # another engine: nothing kept answers for it
                self._sets.clear()
                self._decisions.clear()
                self._by_state.clear()
                self._engine = engine
        self._remember(engine, self._sets, text, parsed)
        return parsed

    def _remember(self, engine: PolicyEngine, table: dict[K, V], key: K, value: V) -> None:
        """Keep `value` (computed with `engine`) unless the memo has moved to another engine since;
        a full table starts over."""
        with self._lock:
            if self._engine is engine:
                if len(table) >= self._size:
                    table.clear()
                table[key] = value


@dataclass(frozen=True)
class DecisionView:
    truck: str
    allowed: bool
    reasons: tuple[str, ...]
    evaluated: dict[str, object]
    policy_version: str


def _principal(
    client_id: str, kind: str, organisation: str, fleets: str, insurer_policies: str, *, global_admin: bool
) -> ClientPrincipal:
    kinds: dict[str, ClientKind] = {
        "operator": "operator",
        "broker": "broker",
        "tms": "tms",
        "insurer": "insurer",
    }
    return ClientPrincipal(
        id=client_id,
        kind=kinds[kind],
        organisation=organisation,
        fleets=frozenset(json.loads(fleets)),
        insurer_policies=frozenset(json.loads(insurer_policies)),
        global_admin=global_admin,
    )


def client_principal(row: OAuthClient) -> ClientPrincipal:
    return _principal(
        row.id, row.kind, row.organisation, row.fleets, row.insurer_policies, global_admin=row.global_admin
    )


def read_client(conn: Connection, client_id: str) -> ClientPrincipal:
    """The client's registration as a principal, read now (one Core query, no ORM object); a client that
    is gone or disabled is refused."""
    client = conn.execute(_CLIENT_QUERY, {"client_id": client_id}).first()
    if client is None or client.disabled_at is not None:
        raise ClientAuthenticationFailed("the client is not registered or is disabled")
    return _principal(
        client_id,
        client.kind,
        client.organisation,
        client.fleets,
        client.insurer_policies,
        global_admin=bool(client.global_admin),
    )


class Decisions:
    def __init__(self, engine: Engine, policies: PolicyStore, *, clock: Callable[[], datetime]) -> None:
        self._engine = engine
        self._policies = policies
        self._clock = clock
        self._writer = BatchWriter(engine)
        self._entities = EntityMemo()
        # SQLite reads are in-process CPU work: on the event loop they run inline (no thread hop, fewer
        # GIL hand-offs); a networked database is read in a worker thread so the loop keeps serving.
        self._inline = engine.dialect.name == "sqlite"
        # Wakes this process's log sequencer after a commit (set by the service when it runs one).
        self.log_wake: Callable[[], None] = lambda: None

    def close(self) -> None:
        self._writer.close()

    def decide(
        self,
        actor: Actor,
        client: str | ClientPrincipal,
        action: str,
        trucks: Sequence[str],
        tender: TenderState | None,
    ) -> list[DecisionView]:
        """Decide, and return once the audit rows and log entries are committed (blocks this thread)."""
        views, rows = self.prepare(actor, client, action, trucks, tender)
        self._writer.write(rows)
        self._committed(action)
        return views

    async def decide_async(
        self,
        actor: Actor,
        client: str | ClientPrincipal,
        action: str,
        trucks: Sequence[str],
        tender: TenderState | None,
    ) -> list[DecisionView]:
        """`decide` for the event loop: reads and Cedar in a worker thread, then the commit awaited
        without holding a thread, so many requests wait on one group commit together."""
        if self._inline:
            views, rows = self.prepare(actor, client, action, trucks, tender)
        else:
            views, rows = await asyncio.to_thread(self.prepare, actor, client, action, trucks, tender)
        await asyncio.wrap_future(self._writer.submit(rows))
        self._committed(action)
        return views

    def _committed(self, action: str) -> None:
        if action in GATE_ACTIONS:
            self.log_wake()

    def prepare(
        self,
        actor: Actor,
        client: str | ClientPrincipal,
        action: str,
        trucks: Sequence[str],
        tender: TenderState | None,
    ) -> tuple[list[DecisionView], Rows]:
        """The decisions and the rows that record them (audit; log entries for gate actions).

        `client` is a client id, whose registration is read now, or the principal the route guard read
        from the database for this same request (so it is not read twice)."""
        now = self._clock()
        # Read-only: one query for the client (unless given), one for every truck's state.
        with self._engine.connect() as conn:
            principal = read_client(conn, client) if isinstance(client, str) else client
            live = LiveState.read(conn, trucks)
        client_id = principal.id
        states = [live.truck_state(truck_id, now) for truck_id in trucks]
        recorded: list[Stated] = [principal]
        recorded += [FleetState(fleet, name) for fleet, name in live.fleets.items()]
        recorded += [ReleaseState(r, m, revoked) for r, (m, revoked) in live.releases.items()]
        recorded += live.unique(states)
        if tender is not None:
            recorded.append(tender)
        policies = self._policies.engine
        entities = self._entities.entities_of(policies, recorded)
        decisions = policies.decide_batch(
            principal.ref, action, [s.ref for s in states], gate_context(now, tender), entities
        )
        views = [_view(state, decision) for state, decision in zip(states, decisions, strict=True)]
        return views, _rows(actor, client_id=client_id, action=action, tender=tender, views=views, now=now)


def _rows(
    actor: Actor,
    *,
    client_id: str,
    action: str,
    tender: TenderState | None,
    views: Sequence[DecisionView],
    now: datetime,
) -> Rows:
    """Every decision audited with the state it saw; dispatch and tender decisions also go to the
    transparency log (sequenced after the commit), so an insurer can later check the truck was attested
    when it was dispatched."""
    rows: Rows = []
    for position, view in enumerate(views):
        detail = {
            "client": client_id,
            "allowed": view.allowed,
            "reasons": list(view.reasons),
            "tender": tender.id if tender else None,
            "policy_version": view.policy_version,
            **view.evaluated,
        }
        rows.append(
            (_AUDIT, audit.values(actor, f"decision.{action}", at=now, target=view.truck, detail=detail))
        )
        if action in GATE_ACTIONS:
            # Time, request id and position keep two identical answers apart: the log dedups entries by
            # leaf hash, and each decision must be its own entry.
            document = {
                **detail,
                "truck": view.truck,
                "decision": "allow" if view.allowed else "deny",
                "decided_at": now.isoformat(),
                "request_id": actor.request_id,
                "position": position,  # a batch may name a truck twice
            }
            table: Table
            table, row = tlog_event(f"decision.{action}", document, now)
            rows.append((table, row))
    return rows


def _view(state: TruckState, decision: Decision) -> DecisionView:
    return DecisionView(
        truck=state.id,
        allowed=decision.allowed,
        reasons=decision.reasons,
        evaluated={
            "attestation_status": state.attestation_status,
            "attested_until": state.attested_until.isoformat() if state.attested_until else None,
            "quarantined": state.quarantined,
            "release": state.release,
            "release_revoked": state.release_revoked,
            "certificate_status": state.certificate_status,
            "autonomy_mode": state.autonomy_mode,
            "hazmat_certified": state.hazmat_certified,
        },
        policy_version=decision.policy_version,
    )


@dataclass(frozen=True, slots=True)
class _TruckRow:
    id: str
    fleet: str
    certificate_serial: str | None
    attestation_status: str | None  # None: never attested
    release_id: str | None
    attested_until: datetime | None
    quarantined: bool
    certificate_status: str | None  # None: no certificate row
    certificate_not_after: datetime | None
    release_found: bool
    release_status: str | None
    key_revoked: bool
    autonomy_mode: str
    hazmat_certified: bool


@dataclass(frozen=True)
class LiveState:
    """What a batch of decisions reads about its trucks, in one joined query rather than several per
    truck: the truck (with the profile its operator set), its attestation, certificate, release and
    release key, and its fleet's name."""

    trucks: dict[str, _TruckRow]
    fleets: dict[str, str]  # id -> name
    releases: dict[str, tuple[str, bool]]  # id -> (model, revoked)

    @classmethod
    def read(cls, source: Session | Connection, truck_ids: Sequence[str]) -> LiveState:
        conn = source.connection() if isinstance(source, Session) else source
        wanted = set(truck_ids)
        trucks: dict[str, _TruckRow] = {}
        fleets: dict[str, str] = {}
        releases: dict[str, tuple[str, bool]] = {}
        if len(wanted) == 1:
            found = conn.execute(_TRUCK_QUERY, {"id": next(iter(wanted))})
        else:
            found = conn.execute(_TRUCKS_QUERY, {"ids": sorted(wanted)})
        for row in found:
            (truck, fleet, serial, status, release_id, until, quarantined) = row[:7]
            (
                cert_status,
                not_after,
                found_release,
                release_status,
                model,
                key_revoked_at,
                fleet_name,
                autonomy_mode,
                hazmat_certified,
            ) = row[7:]
            trucks[truck] = _TruckRow(
                id=truck,
                fleet=fleet,
                certificate_serial=serial,
                attestation_status=status,
                release_id=release_id,
                attested_until=until,
                quarantined=bool(quarantined),
                certificate_status=cert_status,
                certificate_not_after=not_after,
                release_found=found_release is not None,
                release_status=release_status,
                key_revoked=key_revoked_at is not None,
                autonomy_mode=autonomy_mode,
                hazmat_certified=bool(hazmat_certified),
            )
            fleets[fleet] = fleet_name
            if found_release is not None:
                releases[found_release] = (model, release_status != "active")
        missing = next((t for t in truck_ids if t not in trucks), None)
        if missing is not None:
            raise UnknownTruck(f"no truck {missing[:64]!r}")
        return cls(trucks=trucks, fleets=fleets, releases=releases)

    def truck_state(self, truck_id: str, now: datetime) -> TruckState:
        row = self.trucks[truck_id]
        if row.certificate_status is None or row.certificate_not_after is None:
            certificate_status = "none"
        elif row.certificate_status != "valid":
            certificate_status = row.certificate_status
        else:
            certificate_status = "valid" if row.certificate_not_after > now else "expired"
        attested = row.attestation_status is not None
        # A release it appraised against that is gone, withdrawn, or signed by a revoked key.
        release_revoked = bool(row.release_id) and (
            not row.release_found or row.release_status != "active" or row.key_revoked
        )
        return TruckState(
            id=row.id,
            fleet=row.fleet,
            attestation_status=row.attestation_status,
            attested_until=None if not attested or row.quarantined else row.attested_until,
            quarantined=row.quarantined,
            certificate_status=certificate_status,
            autonomy_mode=row.autonomy_mode,
            hazmat_certified=row.hazmat_certified,
            release=row.release_id if attested else None,
            release_revoked=release_revoked,
        )

    @staticmethod
    def unique(states: Sequence[TruckState]) -> list[TruckState]:
        """One entity per truck even when a batch names a truck twice (Cedar refuses duplicates)."""
        return list({s.id: s for s in states}.values())
