"""Who may call which operation: operators only on their fleets (global work only with the global role),
brokers read only contracted trucks, insurers read only evidence under their policies, trucks act only
on their own record. One table walks every action of the schema for every kind of caller."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from policies import (
    AUTHORITY,
    ClientPrincipal,
    Decision,
    EntityRef,
    EvidenceState,
    FleetState,
    PolicyEngine,
    ReleaseState,
    TruckState,
    authority_entity,
)

ENGINE = PolicyEngine.from_directory()
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
NORTH = FleetState("north", "Northern Haulage")
SOUTH = FleetState("south", "Southern Haulage")
RELEASE = ReleaseState("hauler-9@2026.11.1", "hauler-9", revoked=False)
T1 = TruckState(
    id="t-001",
    fleet="north",
    attestation_status="affirming",
    attested_until=NOW + timedelta(minutes=30),
    quarantined=False,
    certificate_status="valid",
    autonomy_mode="driverless",
    release=RELEASE.id,
)
T2 = dataclasses.replace(T1, id="t-002")
T_SOUTH = dataclasses.replace(T1, id="t-900", fleet="south")
EVIDENCE = EvidenceState("ev-1", truck="t-001", fleet="north", insurer_policies=frozenset({"P-1"}))
EVIDENCE_OTHER = EvidenceState("ev-2", truck="t-900", fleet="south", insurer_policies=frozenset({"P-9"}))

OP_NORTH = ClientPrincipal("op-north", "operator", "Northern Haulage", fleets=frozenset({"north"}))
OP_GLOBAL = ClientPrincipal("op-root", "operator", "Weighstation Ops", global_admin=True)
BROKER = ClientPrincipal("broker-1", "broker", "Acme Freight", fleets=frozenset({"north"}))
TMS = ClientPrincipal("tms-1", "tms", "Acme TMS", fleets=frozenset({"north"}))
INSURER = ClientPrincipal("ins-1", "insurer", "Safe Mutual", insurer_policies=frozenset({"P-1", "P-2"}))
INSURER_NONE = ClientPrincipal("ins-2", "insurer", "Other Mutual")

RECORDS = [
    authority_entity(),
    NORTH.entity(),
    SOUTH.entity(),
    RELEASE.entity(),
    T1.entity(),
    T2.entity(),
    T_SOUTH.entity(),
    EVIDENCE.entity(),
    EVIDENCE_OTHER.entity(),
    *(c.entity() for c in (OP_NORTH, OP_GLOBAL, BROKER, TMS, INSURER, INSURER_NONE)),
]
ENTITIES = ENGINE.entities(RECORDS)
PRINCIPALS: dict[str, EntityRef] = {
    "op_north": OP_NORTH.ref,
    "op_global": OP_GLOBAL.ref,
    "broker": BROKER.ref,
    "tms": TMS.ref,
    "insurer": INSURER.ref,
    "truck": T1.ref,
}


def decide(principal: EntityRef, action: str, resource: EntityRef) -> Decision:
    return ENGINE.decide(principal, action, resource, None, ENTITIES)


# Every non-gate action of the schema, a resource in fleet north (or of the authority), and exactly the
# callers allowed on it; everyone else in PRINCIPALS must be refused.
MATRIX: list[tuple[str, EntityRef, set[str]]] = [
    *((a, AUTHORITY, {"op_global"}) for a in ("issueCertificate", "revokeCertificate", "renewCertificate")),
    *((a, AUTHORITY, {"op_global"}) for a in ("rotateCa", "createFleet", "registerReleaseKey")),
    ("registerRelease", AUTHORITY, {"op_global"}),
    ("revokeRelease", RELEASE.ref, {"op_global"}),
    *((a, AUTHORITY, {"op_north", "op_global"}) for a in ("listFleets", "listReleaseKeys", "listReleases")),
    ("getRelease", RELEASE.ref, {"op_north", "op_global"}),
    *((a, NORTH.ref, {"op_north"}) for a in ("getFleet", "registerTruck", "listTrucks")),
    *((a, T1.ref, {"op_north"}) for a in ("getTruck", "mintEnrollmentToken", "approveHardwareSwap")),
    ("liftQuarantine", T1.ref, {"op_north"}),
    ("getAttestationStatus", T1.ref, {"op_north", "broker", "tms"}),
    ("telemetry.read", T1.ref, {"op_north", "broker", "tms"}),
    *((a, T1.ref, {"truck"}) for a in ("issueAttestationNonce", "attestTruck", "renewTruckCertificate")),
    ("evidence.read", EVIDENCE.ref, {"op_north", "insurer"}),
]


@pytest.mark.parametrize(("action", "resource", "allowed"), MATRIX, ids=[m[0] for m in MATRIX])
def test_every_action_allows_exactly_its_callers(action: str, resource: EntityRef, allowed: set[str]) -> None:
    got = {name for name, who in PRINCIPALS.items() if decide(who, action, resource).allowed}
    assert got == allowed


def test_matrix_covers_every_operation_of_the_api() -> None:
    operations = {
        "issueCertificate",
        "revokeCertificate",
        "renewCertificate",
        "rotateCa",
        "createFleet",
        "listFleets",
        "getFleet",
        "registerTruck",
        "listTrucks",
        "getTruck",
        "mintEnrollmentToken",
        "approveHardwareSwap",
        "registerReleaseKey",
        "listReleaseKeys",
        "registerRelease",
        "listReleases",
        "getRelease",
        "revokeRelease",
        "issueAttestationNonce",
        "attestTruck",
        "getAttestationStatus",
        "liftQuarantine",
        "renewTruckCertificate",
        "telemetry.read",
        "evidence.read",
    }
    assert {m[0] for m in MATRIX} == operations


@pytest.mark.parametrize("action", ["getFleet", "registerTruck", "listTrucks"])
def test_operator_of_fleet_a_cannot_manage_fleet_b(action: str) -> None:
    allowed = decide(OP_NORTH.ref, action, NORTH.ref)
    assert allowed.allowed
    assert allowed.reasons == ("operator-manage-own-fleets",)
    assert not decide(OP_NORTH.ref, action, SOUTH.ref).allowed


@pytest.mark.parametrize(
    "action",
    ["getTruck", "mintEnrollmentToken", "approveHardwareSwap", "liftQuarantine", "getAttestationStatus"],
)
def test_operator_cannot_touch_trucks_of_another_fleet(action: str) -> None:
    assert decide(OP_NORTH.ref, action, T1.ref).allowed
    assert not decide(OP_NORTH.ref, action, T_SOUTH.ref).allowed


def test_global_admin_manages_no_fleet_it_is_not_given() -> None:
    assert not decide(OP_GLOBAL.ref, "getTruck", T1.ref).allowed
    assert decide(OP_GLOBAL.ref, "rotateCa", AUTHORITY).reasons == ("operator-global-admin",)


def test_broker_reads_only_contracted_trucks() -> None:
    assert decide(BROKER.ref, "getAttestationStatus", T1.ref).reasons == ("contracted-read-truck-state",)
    assert not decide(BROKER.ref, "getAttestationStatus", T_SOUTH.ref).allowed
    assert not decide(BROKER.ref, "liftQuarantine", T1.ref).allowed


def test_insurer_reads_only_evidence_under_its_policies() -> None:
    allowed = decide(INSURER.ref, "evidence.read", EVIDENCE.ref)
    assert allowed.reasons == ("insurer-read-evidence-under-policy",)
    assert not decide(INSURER.ref, "evidence.read", EVIDENCE_OTHER.ref).allowed
    assert not decide(INSURER_NONE.ref, "evidence.read", EVIDENCE.ref).allowed
    assert not decide(INSURER.ref, "getAttestationStatus", T1.ref).allowed


def test_operator_reads_evidence_of_its_fleets_only() -> None:
    assert decide(OP_NORTH.ref, "evidence.read", EVIDENCE.ref).reasons == ("operator-read-fleet-evidence",)
    assert not decide(OP_NORTH.ref, "evidence.read", EVIDENCE_OTHER.ref).allowed


@pytest.mark.parametrize("action", ["issueAttestationNonce", "attestTruck", "renewTruckCertificate"])
def test_truck_acts_only_on_its_own_record(action: str) -> None:
    assert decide(T1.ref, action, T1.ref).reasons == ("truck-own-records",)
    assert not decide(T1.ref, action, T2.ref).allowed
    assert not decide(T1.ref, action, T_SOUTH.ref).allowed


def test_truck_cannot_call_operator_operations_on_itself() -> None:
    for action in ("getTruck", "liftQuarantine", "getAttestationStatus", "mintEnrollmentToken"):
        assert not decide(T1.ref, action, T1.ref).allowed


def self_decision(state: TruckState, action: str) -> Decision:
    entities = ENGINE.entities([state.entity()])
    return ENGINE.decide(state.ref, action, state.ref, None, entities)


def test_quarantined_truck_may_attest_but_not_renew() -> None:
    quarantined = dataclasses.replace(T1, quarantined=True)
    assert self_decision(quarantined, "attestTruck").allowed
    assert self_decision(quarantined, "issueAttestationNonce").allowed
    renewal = self_decision(quarantined, "renewTruckCertificate")
    assert not renewal.allowed
    assert renewal.reasons == ("forbid-renewal-quarantined",)


@pytest.mark.parametrize("status", ["revoked", "expired", "none"])
def test_no_renewal_without_a_valid_certificate(status: str) -> None:
    renewal = self_decision(dataclasses.replace(T1, certificate_status=status), "renewTruckCertificate")
    assert not renewal.allowed
    assert renewal.reasons == ("forbid-renewal-certificate-not-valid",)
