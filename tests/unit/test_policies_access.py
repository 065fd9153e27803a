"""Who may call which operation: fleet operators only on their fleets, the global admin on the authority
and every fleet, brokers read only contracted trucks and ask decisions, insurers read only evidence under
their policies, trucks act only on their own record, Anonymous only on public operations. One table
walks every action of the schema for every kind of caller."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from policies import (
    AUTHORITY,
    ClientPrincipal,
    Decision,
    DecisionRequestInvalid,
    EntityRef,
    EvidenceState,
    FleetState,
    PolicyEngine,
    ReleaseState,
    TruckState,
    authority_entity,
)
from tests.support.public_operations import PUBLIC_OPERATIONS

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
EVIDENCE = EvidenceState("t-001/1", truck="t-001", fleet="north", insurer_policies=frozenset({"P-1"}))
EVIDENCE_OTHER = EvidenceState("t-900/1", truck="t-900", fleet="south", insurer_policies=frozenset({"P-9"}))
# A statement of a covered fleet submitted outside every cover: no policy covers it.
EVIDENCE_UNCOVERED = dataclasses.replace(EVIDENCE, id="t-001/2", insurer_policies=frozenset())

OP_NORTH = ClientPrincipal("op-north", "operator", "Northern Haulage", fleets=frozenset({"north"}))
OP_GLOBAL = ClientPrincipal("op-root", "operator", "Weighstation Ops", global_admin=True)
BROKER = ClientPrincipal("broker-1", "broker", "Acme Freight", fleets=frozenset({"north"}))
TMS = ClientPrincipal("tms-1", "tms", "Acme TMS", fleets=frozenset({"north"}))
INSURER = ClientPrincipal("ins-1", "insurer", "Safe Mutual", insurer_policies=frozenset({"P-1", "P-2"}))
INSURER_NONE = ClientPrincipal("ins-2", "insurer", "Other Mutual")
ANONYMOUS = EntityRef("Anonymous", "anonymous")
ANONYMOUS_RECORD: dict[str, object] = {"uid": ANONYMOUS.json(), "attrs": {}, "parents": []}

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
    EVIDENCE_UNCOVERED.entity(),
    *(c.entity() for c in (OP_NORTH, OP_GLOBAL, BROKER, TMS, INSURER, INSURER_NONE)),
    ANONYMOUS_RECORD,
]
ENTITIES = ENGINE.entities(RECORDS)
PRINCIPALS: dict[str, EntityRef] = {
    "op_north": OP_NORTH.ref,
    "op_global": OP_GLOBAL.ref,
    "broker": BROKER.ref,
    "tms": TMS.ref,
    "insurer": INSURER.ref,
    "truck": T1.ref,
    "anonymous": ANONYMOUS,
}
EVERYONE = set(PRINCIPALS)


def decide(principal: EntityRef, action: str, resource: EntityRef) -> Decision:
    return ENGINE.decide(principal, action, resource, None, ENTITIES)


# Every non-gate action of the schema, a resource in fleet north (or of the authority), and exactly the
# callers allowed on it; everyone else in PRINCIPALS must be refused.
MATRIX: list[tuple[str, EntityRef, set[str]]] = [
    *((a, AUTHORITY, {"op_global"}) for a in ("issueCertificate", "revokeCertificate", "renewCertificate")),
    *((a, AUTHORITY, {"op_global"}) for a in ("rotateCa", "createFleet", "registerReleaseKey")),
    ("registerRelease", AUTHORITY, {"op_global"}),
    *((a, AUTHORITY, {"op_global"}) for a in ("registerClient", "listClients", "rotateAccessTokenKey")),
    *((a, AUTHORITY, {"op_global"}) for a in ("getPolicies", "uploadPolicies")),
    ("revokeRelease", RELEASE.ref, {"op_global"}),
    *((a, AUTHORITY, {"op_north", "op_global"}) for a in ("listFleets", "listReleaseKeys", "listReleases")),
    ("getRelease", RELEASE.ref, {"op_north", "op_global"}),
    *((a, NORTH.ref, {"op_north", "op_global"}) for a in ("getFleet", "registerTruck", "listTrucks")),
    *(
        (a, NORTH.ref, {"op_north", "op_global"})
        for a in ("getFleetInsurancePolicies", "setFleetInsurancePolicies")
    ),
    *(
        (a, T1.ref, {"op_north", "op_global"})
        for a in ("getTruck", "mintEnrollmentToken", "approveHardwareSwap", "liftQuarantine")
    ),
    ("getAttestationStatus", T1.ref, {"op_north", "op_global", "broker", "tms"}),
    ("telemetry.read", T1.ref, {"op_north", "op_global", "broker", "tms"}),
    *(
        (a, T1.ref, {"truck"})
        for a in (
            "issueAttestationNonce",
            "attestTruck",
            "renewTruckCertificate",
            "submitStatement",
            "issueEvidenceCertificate",
        )
    ),
    *(
        (a, T1.ref, {"op_north", "op_global", "broker", "tms", "truck"})
        for a in ("getStatement", "getStatementChain")
    ),
    ("evidence.read", EVIDENCE.ref, {"op_north", "op_global", "insurer"}),
    *(
        (a, EVIDENCE.ref, {"op_north", "op_global", "insurer"})
        for a in ("getEvidenceBundle", "exportStatementSigstoreBundle")
    ),
    *((a, AUTHORITY, {"broker", "tms"}) for a in ("decide", "decideBatch")),
    *((a, AUTHORITY, EVERYONE) for a in PUBLIC_OPERATIONS),
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
        "getFleetInsurancePolicies",
        "setFleetInsurancePolicies",
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
        "registerClient",
        "listClients",
        "rotateAccessTokenKey",
        "getPolicies",
        "uploadPolicies",
        "decide",
        "decideBatch",
        "submitStatement",
        "getStatement",
        "getStatementChain",
        "getEvidenceBundle",
        "exportStatementSigstoreBundle",
        "issueEvidenceCertificate",
        *PUBLIC_OPERATIONS,
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


def test_global_admin_manages_every_fleet_and_a_fleet_operator_no_authority() -> None:
    assert decide(OP_GLOBAL.ref, "getTruck", T_SOUTH.ref).reasons == ("operator-global-admin-fleets",)
    assert decide(OP_GLOBAL.ref, "rotateCa", AUTHORITY).reasons == ("operator-global-admin",)
    assert not decide(OP_NORTH.ref, "rotateCa", AUTHORITY).allowed
    assert not decide(OP_NORTH.ref, "registerClient", AUTHORITY).allowed


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


EVIDENCE_OPERATIONS = ("getEvidenceBundle", "exportStatementSigstoreBundle")


@pytest.mark.parametrize("action", EVIDENCE_OPERATIONS)
def test_insurer_downloads_only_bundles_its_policies_cover(action: str) -> None:
    assert decide(INSURER.ref, action, EVIDENCE.ref).reasons == ("insurer-read-evidence-under-policy",)
    assert not decide(INSURER.ref, action, EVIDENCE_OTHER.ref).allowed  # another fleet, another policy
    assert not decide(INSURER_NONE.ref, action, EVIDENCE.ref).allowed  # underwrites nothing
    # The truck's fleet is covered by P-1, but not when this statement was submitted.
    assert not decide(INSURER.ref, action, EVIDENCE_UNCOVERED.ref).allowed


@pytest.mark.parametrize("action", EVIDENCE_OPERATIONS)
def test_operators_download_bundles_of_their_fleets_whatever_the_cover(action: str) -> None:
    assert decide(OP_NORTH.ref, action, EVIDENCE_UNCOVERED.ref).reasons == ("operator-read-fleet-evidence",)
    assert not decide(OP_NORTH.ref, action, EVIDENCE_OTHER.ref).allowed
    assert decide(OP_GLOBAL.ref, action, EVIDENCE_OTHER.ref).reasons == ("operator-global-admin-evidence",)


@pytest.mark.parametrize("action", EVIDENCE_OPERATIONS)
def test_brokers_tms_and_trucks_never_download_bundles(action: str) -> None:
    for who in (BROKER.ref, TMS.ref, T1.ref, ANONYMOUS):
        assert not decide(who, action, EVIDENCE.ref).allowed, who


@pytest.mark.parametrize("action", EVIDENCE_OPERATIONS)
def test_evidence_of_an_unknown_truck_reaches_only_the_global_admin_and_errs_for_no_one(action: str) -> None:
    # No entity: the guard found no such truck. The global admin gets through (and then the handler's
    # 404); everyone else gets a plain default deny that says nothing about what exists.
    unknown = EntityRef("Evidence", "no-such-truck/1")
    assert decide(OP_GLOBAL.ref, action, unknown).reasons == ("operator-global-admin-evidence",)
    for who in (OP_NORTH.ref, INSURER.ref, BROKER.ref):
        refused = decide(who, action, unknown)
        assert (refused.allowed, refused.reasons, refused.errors) == (False, (), ()), who


@pytest.mark.parametrize("action", EVIDENCE_OPERATIONS)
def test_evidence_operations_apply_to_evidence_not_to_trucks(action: str) -> None:
    # The guard must name the statement's Evidence: a Truck resource is a malformed request.
    with pytest.raises(DecisionRequestInvalid):
        decide(OP_GLOBAL.ref, action, T1.ref)


@pytest.mark.parametrize("action", ["getFleetInsurancePolicies", "setFleetInsurancePolicies"])
def test_fleet_coverage_is_managed_by_the_fleet_operators_only(action: str) -> None:
    assert decide(OP_NORTH.ref, action, NORTH.ref).reasons == ("operator-manage-own-fleets",)
    assert not decide(OP_NORTH.ref, action, SOUTH.ref).allowed
    # An insurer does not set or read the coverage its evidence access depends on.
    assert not decide(INSURER.ref, action, NORTH.ref).allowed


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
