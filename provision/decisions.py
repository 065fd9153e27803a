"""The decision API's use case: may this client dispatch (or accept a tender for) these trucks, now?

The principal is the authenticated client, never one the request names; its attributes come from its
registration. Each truck's entity is built from live state at the moment of the decision: fleet,
attestation status and attested-until (none while quarantined), the release it last appraised against
and whether that release is revoked, its identity certificate's status. Cedar decides (policies/); every
decision is audited with the state it saw, in one transaction per request.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from policies.entities import (
    ClientKind,
    ClientPrincipal,
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
    Fleet,
    IssuedCertificate,
    OAuthClient,
    Release,
    ReleaseKey,
    Truck,
    TruckAttestation,
)

GATE_ACTIONS = ("dispatch", "tender.accept")
MAX_BATCH = 1000


@dataclass(frozen=True)
class DecisionView:
    truck: str
    allowed: bool
    reasons: tuple[str, ...]
    evaluated: dict[str, object]
    policy_version: str


def _client(row: OAuthClient) -> ClientPrincipal:
    kinds: dict[str, ClientKind] = {
        "operator": "operator",
        "broker": "broker",
        "tms": "tms",
        "insurer": "insurer",
    }
    return ClientPrincipal(
        id=row.id,
        kind=kinds[row.kind],
        organisation=row.organisation,
        fleets=frozenset(json.loads(row.fleets)),
        insurer_policies=frozenset(json.loads(row.insurer_policies)),
        global_admin=row.global_admin,
    )


class Decisions:
    def __init__(self, engine: Engine, policies: PolicyStore, *, clock: Callable[[], datetime]) -> None:
        self._engine = engine
        self._policies = policies
        self._clock = clock
        # Wakes this process's log sequencer after a commit (set by the service when it runs one).
        self.log_wake: Callable[[], None] = lambda: None

    def decide(
        self, actor: Actor, client_id: str, action: str, trucks: Sequence[str], tender: TenderState | None
    ) -> list[DecisionView]:
        now = self._clock()
        with Session(self._engine) as session:
            client = session.get(OAuthClient, client_id)
            if client is None or client.disabled_at is not None:
                raise ClientAuthenticationFailed("the client is not registered or is disabled")
            states = [self._truck_state(session, truck_id, now) for truck_id in trucks]
            fleets = {
                row.id: row
                for row in session.exec(select(Fleet).where(col(Fleet.id).in_({s.fleet for s in states})))
            }
            releases = {s.release for s in states if s.release}
            release_rows = (
                session.exec(select(Release).where(col(Release.id).in_(releases))).all() if releases else []
            )
        principal = _client(client)
        records = [principal.entity()]
        records += [FleetState(f.id, f.name).entity() for f in fleets.values()]
        records += [ReleaseState(r.id, r.model, r.status != "active").entity() for r in release_rows]
        records += [s.entity() for s in states]
        if tender is not None:
            records.append(tender.entity())
        policies = self._policies.engine
        entities = policies.entities(records)
        decisions = policies.decide_batch(
            principal.ref, action, [s.ref for s in states], gate_context(now, tender), entities
        )
        views = [
            DecisionView(
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
                },
                policy_version=decision.policy_version,
            )
            for state, decision in zip(states, decisions, strict=True)
        ]
        with Session(self._engine) as session:
            for view in views:
                detail = {
                    "client": client_id,
                    "allowed": view.allowed,
                    "reasons": list(view.reasons),
                    "tender": tender.id if tender else None,
                    "policy_version": view.policy_version,
                    **view.evaluated,
                }
                audit.record(
                    session,
                    audit.values(actor, f"decision.{action}", at=now, target=view.truck, detail=detail),
                )
            session.commit()
        return views

    @staticmethod
    def _truck_state(session: Session, truck_id: str, now: datetime) -> TruckState:
        truck = session.get(Truck, truck_id)
        if truck is None:
            raise UnknownTruck(f"no truck {truck_id[:64]!r}")
        state = session.get(TruckAttestation, truck_id)
        certificate = (
            session.get(IssuedCertificate, truck.certificate_serial) if truck.certificate_serial else None
        )
        if certificate is None:
            certificate_status = "none"
        elif certificate.status != "valid":
            certificate_status = certificate.status
        else:
            certificate_status = "valid" if certificate.not_after > now else "expired"
        release_revoked = False
        if state is not None and state.release_id:
            release = session.get(Release, state.release_id)
            key = session.get(ReleaseKey, release.key_id) if release else None
            release_revoked = (
                release is None
                or release.status != "active"
                or (key is not None and key.revoked_at is not None)
            )
        quarantined = state.quarantined if state else False
        return TruckState(
            id=truck.id,
            fleet=truck.fleet_id,
            attestation_status=state.status if state else None,
            attested_until=None if state is None or quarantined else state.attested_until,
            quarantined=quarantined,
            certificate_status=certificate_status,
            autonomy_mode="unknown",
            release=state.release_id if state else None,
            release_revoked=release_revoked,
        )
