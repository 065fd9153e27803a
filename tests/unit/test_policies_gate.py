"""The gate: brokers and TMSs may dispatch (or accept a tender for) only attested, affirming, not
quarantined trucks on a good release with a valid certificate, of fleets they contract with. The good
case is allowed; each negative flips one condition and names the forbid that refused it."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from policies import (
    ClientPrincipal,
    Decision,
    EntityRef,
    FleetState,
    PolicyEngine,
    TenderState,
    TruckState,
    gate_context,
)
from policies.entities import EntityJson

ENGINE = PolicyEngine.from_directory()
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
NORTH = FleetState("north", "Northern Haulage")
SOUTH = FleetState("south", "Southern Haulage")
BROKER = ClientPrincipal("broker-1", "broker", "Acme Freight", fleets=frozenset({"north"}))
TMS = ClientPrincipal("tms-1", "tms", "Acme TMS", fleets=frozenset({"north"}))
OPERATOR = ClientPrincipal("op-north", "operator", "Northern Haulage", fleets=frozenset({"north"}))
INSURER = ClientPrincipal("ins-1", "insurer", "Safe Mutual", insurer_policies=frozenset({"P-1"}))
TENDER = TenderState("tender-1", hazmat=False, lanes=frozenset({"US-TX:US-OK"}))
GATE = ("dispatch", "tender.accept")
PERMIT = "contracted-dispatch-attested-truck"


def truck(**changes: Any) -> TruckState:
    good = TruckState(
        id="t-001",
        fleet="north",
        attestation_status="affirming",
        attested_until=NOW + timedelta(minutes=30),
        quarantined=False,
        certificate_status="valid",
        autonomy_mode="driverless",
        release="hauler-9@2026.11.1",
    )
    return dataclasses.replace(good, **changes)


def gate(
    action: str,
    resource: TruckState,
    principal: ClientPrincipal = BROKER,
    tender: TenderState = TENDER,
    engine: PolicyEngine = ENGINE,
) -> Decision:
    records: list[EntityJson] = [principal.entity(), resource.entity(), tender.entity()]
    records += [NORTH.entity(), SOUTH.entity()]
    entities = engine.entities(records)
    return engine.decide(principal.ref, action, resource.ref, gate_context(NOW, tender), entities)


@pytest.mark.parametrize("action", GATE)
@pytest.mark.parametrize("principal", [BROKER, TMS], ids=["broker", "tms"])
def test_contracted_attested_truck_allowed(action: str, principal: ClientPrincipal) -> None:
    decision = gate(action, truck(), principal)
    assert decision.allowed
    assert decision.reasons == (PERMIT,)
    assert decision.errors == ()


def test_dispatch_without_tender_allowed() -> None:
    entities = ENGINE.entities([BROKER.entity(), truck().entity()])
    decision = ENGINE.decide(BROKER.ref, "dispatch", truck().ref, gate_context(NOW), entities)
    assert decision.allowed


FLIPPED = {
    "quarantined": (truck(quarantined=True), "forbid-gate-quarantined"),
    "attestation_expired": (
        truck(attested_until=NOW - timedelta(seconds=1)),
        "forbid-gate-attestation-expired",
    ),
    "attestation_ends_now": (truck(attested_until=NOW), "forbid-gate-attestation-expired"),
    "never_attested": (
        truck(attested_until=None, attestation_status=None),
        "forbid-gate-attestation-expired",
    ),
    "status_warning": (truck(attestation_status="warning"), "forbid-gate-not-affirming"),
    "status_contraindicated": (truck(attestation_status="contraindicated"), "forbid-gate-not-affirming"),
    "release_revoked": (truck(release_revoked=True), "forbid-gate-release-revoked"),
    "certificate_revoked": (truck(certificate_status="revoked"), "forbid-gate-certificate-not-valid"),
    "certificate_expired": (truck(certificate_status="expired"), "forbid-gate-certificate-not-valid"),
}


@pytest.mark.parametrize("action", GATE)
@pytest.mark.parametrize("case", FLIPPED, ids=list(FLIPPED))
def test_one_condition_flipped_is_refused_by_its_forbid(action: str, case: str) -> None:
    resource, forbid = FLIPPED[case]
    decision = gate(action, resource)
    assert not decision.allowed
    assert forbid in decision.reasons
    assert PERMIT not in decision.reasons


@pytest.mark.parametrize("action", GATE)
def test_truck_of_uncontracted_fleet_denied_by_default(action: str) -> None:
    decision = gate(action, truck(fleet="south"))
    assert not decision.allowed
    assert decision.reasons == ()


@pytest.mark.parametrize("action", GATE)
@pytest.mark.parametrize("principal", [OPERATOR, INSURER], ids=["operator", "insurer"])
def test_other_client_kinds_never_dispatch(action: str, principal: ClientPrincipal) -> None:
    assert not gate(action, truck(), principal).allowed


@pytest.mark.parametrize("action", GATE)
def test_hazmat_tender_needs_certified_truck(action: str) -> None:
    hazmat = dataclasses.replace(TENDER, hazmat=True)
    refused = gate(action, truck(), tender=hazmat)
    assert not refused.allowed
    assert refused.reasons == ("forbid-gate-hazmat-uncertified",)
    assert gate(action, truck(hazmat_certified=True), tender=hazmat).allowed


@pytest.mark.parametrize("action", GATE)
def test_tender_offered_to_another_fleet_refused(action: str) -> None:
    elsewhere = dataclasses.replace(TENDER, fleet="south")
    assert gate(action, truck(), tender=elsewhere).reasons == ("forbid-gate-tender-other-fleet",)
    assert gate(action, truck(), tender=dataclasses.replace(TENDER, fleet="north")).allowed


def test_forbid_beats_a_permit_for_everything() -> None:
    engine = PolicyEngine.from_directory()
    engine.reload(engine.policy_text + '\n@id("permit-everything")\npermit (principal, action, resource);\n')
    entities = engine.entities([BROKER.entity(), truck().entity()])
    assert engine.decide(BROKER.ref, "getTruck", truck().ref, None, entities).reasons == (
        "permit-everything",
    )
    decision = gate("dispatch", truck(quarantined=True), engine=engine)
    assert not decision.allowed
    assert decision.reasons == ("forbid-gate-quarantined",)


def test_missing_tender_entity_fails_closed() -> None:
    entities = ENGINE.entities([BROKER.entity(), truck().entity()])
    context = gate_context(NOW, dataclasses.replace(TENDER, id="unknown", hazmat=True))
    decision = ENGINE.decide(BROKER.ref, "tender.accept", truck().ref, context, entities)
    assert not decision.allowed
    assert any("forbid-gate-hazmat-uncertified" in e for e in decision.errors)


def fleet_of_1000() -> list[TruckState]:
    trucks = []
    for i in range(1000):
        trucks.append(
            truck(
                id=f"t-{i:04d}",
                fleet="north" if i % 5 else "south",
                quarantined=i % 7 == 0,
                attestation_status="affirming" if i % 11 else "warning",
                attested_until=NOW + timedelta(minutes=30 if i % 13 else -30),
                release_revoked=i % 17 == 0,
                certificate_status="valid" if i % 19 else "revoked",
            )
        )
    return trucks


def expected(t: TruckState) -> bool:
    good_state = not t.quarantined and t.attestation_status == "affirming" and not t.release_revoked
    assert t.attested_until is not None
    return t.fleet == "north" and good_state and t.attested_until > NOW and t.certificate_status == "valid"


def test_batch_of_1000_trucks_matches_single_decisions() -> None:
    trucks = fleet_of_1000()
    entities = ENGINE.entities([BROKER.entity(), TENDER.entity(), *(t.entity() for t in trucks)])
    refs: Sequence[EntityRef] = [t.ref for t in trucks]
    context = gate_context(NOW, TENDER)
    batch = ENGINE.decide_batch(BROKER.ref, "tender.accept", refs, context, entities)
    singles = [ENGINE.decide(BROKER.ref, "tender.accept", r, context, entities) for r in refs]
    assert batch == singles
    assert [d.allowed for d in batch] == [expected(t) for t in trucks]
    assert 0 < sum(d.allowed for d in batch) < 1000
