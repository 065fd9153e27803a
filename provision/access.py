"""Route authorization: may this principal run this operation on this resource? Cedar decides.

The principal is the authenticated client (its registration, read now: a disabled client is refused
even with a token in date), a truck that proved its identity key, or Anonymous. The resource is what
the path names: a truck, a fleet, a release, or the authority itself. Their entities come from live
state in one session, built by the decision API's own builders (provision.decisions), so a route and a
dispatch decision see the same truck. Nothing is read when neither side needs it (Anonymous on the
authority: health, trust anchors, the log).

The operations that serve a statement's evidence (EVIDENCE_OPERATIONS) take its Evidence as resource:
the truck, the truck's fleet, and the insurance policies that covered that fleet when the statement was
submitted (provision.coverage). A statement that does not exist has no cover, so only the fleet's
operators get past the guard (and then the handler's 404); a truck that does not exist has no Evidence
entity at all, and a policy reading it errors, which denies.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import BindParameter, Connection, Engine, bindparam, select
from sqlmodel import Session, col

from policies.engine import Decision
from policies.entities import (
    AUTHORITY,
    ClientPrincipal,
    EntityJson,
    EntityRef,
    EvidenceState,
    FleetState,
    ReleaseState,
    TruckState,
    authority_entity,
)
from provision.coverage import policies_covering
from provision.decisions import EntityMemo, LiveState, read_client
from provision.errors import AccessTokenInvalid, ClientAuthenticationFailed, UnknownTruck
from provision.policy_store import PolicyStore
from provision.tables import Fleet, Release, TruckStatementRow

ANONYMOUS = EntityRef("Anonymous", "anonymous")
# Operations whose resource is a statement's Evidence (schema: members of `evidence.read`).
EVIDENCE_OPERATIONS = frozenset({"getEvidenceBundle", "exportStatementSigstoreBundle"})
_MAX_SEQUENCE = 2**63 - 1
_IDS: BindParameter[str] = bindparam("ids", expanding=True)
_FLEET_NAMES = select(col(Fleet.id), col(Fleet.name)).where(col(Fleet.id).in_(_IDS))
_RELEASES = select(col(Release.id), col(Release.model), col(Release.status)).where(col(Release.id).in_(_IDS))
_SUBMITTED_AT = select(col(TruckStatementRow.submitted_at)).where(
    col(TruckStatementRow.truck_id) == bindparam("truck"),
    col(TruckStatementRow.sequence) == bindparam("sequence"),
)


def evidence_ref(truck: str, sequence: int) -> EntityRef:
    """The Evidence entity of a truck's statement `sequence`."""
    return EntityRef("Evidence", f"{truck}/{sequence}")


def _evidence_key(ref: EntityRef) -> tuple[str, int] | None:
    truck, _, sequence = ref.id.rpartition("/")
    return (truck, int(sequence)) if truck and sequence.isascii() and sequence.isdigit() else None


@dataclass(frozen=True)
class Caller:
    """Who asks, as authenticated by the HTTP layer: a client id, a truck id, or neither (Anonymous)."""

    client_id: str | None = None
    truck_id: str | None = None


@dataclass(frozen=True)
class AccessDecision:
    principal: EntityRef
    resource: EntityRef
    decision: Decision
    # The client's registration as read for this decision: the handler's use case takes it from here
    # rather than reading it again (it is this request's, never kept across requests).
    client: ClientPrincipal | None = None


class RouteAccess:
    def __init__(self, engine: Engine, policies: PolicyStore, *, clock: Callable[[], datetime]) -> None:
        self._engine = engine
        self._policies = policies
        self._clock = clock
        # An embedded database (SQLite) answers in-process without waiting on a network: callers on an
        # event loop may run these reads inline rather than in a worker thread.
        self.reads_inline = engine.dialect.name == "sqlite"
        self._entities = EntityMemo()

    def decide(self, caller: Caller, action: str, resource: EntityRef) -> AccessDecision:
        """Raises AccessTokenInvalid when the client is no longer registered or is disabled, and
        policies' DecisionRequestInvalid when the action does not apply to these entity types."""
        principal = ANONYMOUS
        client: ClientPrincipal | None = None
        records: list[EntityJson] = [authority_entity()] if resource == AUTHORITY else []
        if caller.client_id is not None and caller.truck_id is None and resource == AUTHORITY:
            # A client on the authority (the decision API, client and key management): one Core read.
            with self._engine.connect() as conn:
                client = self._client(conn, caller.client_id)
            principal = client.ref
            records.append(client.entity())
        elif caller.client_id is not None or caller.truck_id is not None or resource != AUTHORITY:
            principal, client, loaded = self._load(caller, resource)
            records += loaded
        else:
            records.append({"uid": ANONYMOUS.json(), "attrs": {}, "parents": []})
        decision = self._entities.decide(self._policies.engine, principal, action, resource, records)
        return AccessDecision(principal=principal, resource=resource, decision=decision, client=client)

    @staticmethod
    def _client(conn: Connection, client_id: str) -> ClientPrincipal:
        try:
            return read_client(conn, client_id)
        except ClientAuthenticationFailed:
            raise AccessTokenInvalid("the token's client is not registered or is disabled") from None

    def _load(
        self, caller: Caller, resource: EntityRef
    ) -> tuple[EntityRef, ClientPrincipal | None, list[EntityJson]]:
        now = self._clock()
        records: list[EntityJson] = []
        principal = ANONYMOUS
        client: ClientPrincipal | None = None
        trucks = {resource.id} if resource.type == "Truck" else set()
        evidence = _evidence_key(resource) if resource.type == "Evidence" else None
        if evidence is not None:
            trucks.add(evidence[0])
        if caller.truck_id is not None:
            trucks.add(caller.truck_id)
            principal = EntityRef("Truck", caller.truck_id)
        # Fleets and releases by id -> their state: a truck's come with its live state; the path's own
        # fleet or release is read by id (Core, one connection for everything).
        fleets: dict[str, str | None] = {resource.id: None} if resource.type == "Fleet" else {}
        releases: dict[str, tuple[str, bool] | None] = (
            {resource.id: None} if resource.type == "Release" else {}
        )
        with self._engine.connect() as conn:
            if caller.client_id is not None:
                client = self._client(conn, caller.client_id)
                principal = client.ref
                records.append(client.entity())
            states: dict[str, TruckState] = {}
            for truck_id in sorted(trucks):
                try:
                    live = LiveState.read(conn, [truck_id])
                except UnknownTruck:
                    continue  # no entity: policies reading it error, and errors deny
                states[truck_id] = live.truck_state(truck_id, now)
                records.append(states[truck_id].entity())
                fleets.update(live.fleets)
                releases.update(live.releases)
            if evidence is not None and evidence[0] in states:
                records.append(self._evidence(conn, resource, states[evidence[0]], evidence[1]))
            unread = [f for f, name in fleets.items() if name is None]
            if unread:
                fleets.update((f.id, f.name) for f in conn.execute(_FLEET_NAMES, {"ids": unread}))
            unread = [r for r, state in releases.items() if state is None]
            if unread:
                releases.update(
                    (r.id, (r.model, r.status != "active")) for r in conn.execute(_RELEASES, {"ids": unread})
                )
        # Sorted: the same entities make the same records, and the parsed set and decision are reused.
        records += [FleetState(f, name).entity() for f, name in sorted(fleets.items()) if name is not None]
        records += [
            ReleaseState(r, *state).entity() for r, state in sorted(releases.items()) if state is not None
        ]
        if principal == ANONYMOUS:
            records.append({"uid": ANONYMOUS.json(), "attrs": {}, "parents": []})
        return principal, client, records

    @staticmethod
    def _evidence(conn: Connection, ref: EntityRef, truck: TruckState, sequence: int) -> EntityJson:
        """The statement's Evidence: covered by the fleet's policies valid at its submission."""
        submitted_at = None
        # The path's sequence is not range-checked before the guard: one no BIGINT holds names nothing.
        if 0 < sequence <= _MAX_SEQUENCE:
            submitted_at = conn.execute(
                _SUBMITTED_AT, {"truck": truck.id, "sequence": sequence}
            ).scalar_one_or_none()
        covering: frozenset[str] = frozenset()
        if submitted_at is not None:
            with Session(bind=conn) as session:
                covering = policies_covering(session, truck.fleet, submitted_at)
        return EvidenceState(ref.id, truck=truck.id, fleet=truck.fleet, insurer_policies=covering).entity()
