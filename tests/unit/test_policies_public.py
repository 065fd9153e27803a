"""public.cedar and the Anonymous principal: each public operation is opened by exactly one named policy,
the public policies open nothing else, and a forbid still beats them. A truck's own operations are
closed to Anonymous: only the truck's credential opens them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from policies import (
    AUTHORITY,
    ClientPrincipal,
    Decision,
    EntityRef,
    FleetState,
    PolicyEngine,
    TruckState,
    authority_entity,
)
from policies.engine import POLICY_DIR, SCHEMA_FILE

SCHEMA = (POLICY_DIR / SCHEMA_FILE).read_text()
PUBLIC_TEXT = (POLICY_DIR / "public.cedar").read_text()
ENGINE = PolicyEngine.from_directory()
ANONYMOUS = EntityRef("Anonymous", "anonymous")
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
NORTH = FleetState("north", "Northern Haulage")
TRUCK = TruckState(
    id="t-001",
    fleet="north",
    attestation_status="affirming",
    attested_until=NOW + timedelta(minutes=30),
    quarantined=False,
    certificate_status="valid",
    autonomy_mode="driverless",
)
ANONYMOUS_RECORD = {"uid": ANONYMOUS.json(), "attrs": {}, "parents": []}

OPENED_BY = {
    "public-health-and-docs": ("health", "readiness", "getMetrics", "getOpenApi", "options"),
    "public-trust-anchors": (
        "getTrustBundle",
        "listAuthorities",
        "getCrl",
        "getAuthorityCrl",
        "ocspPost",
        "ocspGet",
        "getCertificate",
        "getJwks",
        "getSigstoreTrustConfig",
        "getEvidenceTrust",
    ),
    "public-log-read": (
        "getLogCheckpoint",
        "getLogKey",
        "getLogTile",
        "getLogEntry",
        "getLogInclusionProof",
        "getLogConsistencyProof",
    ),
    "public-oauth-endpoints": ("getAuthorizationServerMetadata", "issueAccessToken"),
    "public-enrollment": ("startEnrollment", "activateEnrollment"),
    "public-signed-evidence": ("exportSigstoreBundle",),
}
PUBLIC = [(policy, action) for policy, actions in OPENED_BY.items() for action in actions]
# Operations on the authority that stay closed to Anonymous.
CLOSED_ON_AUTHORITY = (
    "issueCertificate",
    "revokeCertificate",
    "renewCertificate",
    "rotateCa",
    "createFleet",
    "registerReleaseKey",
    "registerRelease",
    "registerClient",
    "listClients",
    "rotateAccessTokenKey",
    "getPolicies",
    "uploadPolicies",
    "listFleets",
    "listReleaseKeys",
    "listReleases",
    "decide",
    "decideBatch",
)


def anonymous(
    engine: PolicyEngine, action: str, resource: EntityRef = AUTHORITY, truck: TruckState = TRUCK
) -> Decision:
    entities = engine.entities([authority_entity(), NORTH.entity(), truck.entity(), ANONYMOUS_RECORD])
    return engine.decide(ANONYMOUS, action, resource, None, entities)


@pytest.mark.parametrize(("policy", "action"), PUBLIC, ids=[a for _, a in PUBLIC])
def test_each_public_operation_is_opened_by_its_named_policy(policy: str, action: str) -> None:
    decision = anonymous(ENGINE, action)
    assert decision.allowed and decision.reasons == (policy,)


def test_the_public_policies_are_exactly_the_ones_in_public_cedar() -> None:
    alone = PolicyEngine(SCHEMA, PUBLIC_TEXT)
    assert set(alone.policy_ids) == set(OPENED_BY)


@pytest.mark.parametrize("action", CLOSED_ON_AUTHORITY)
def test_anonymous_is_refused_everything_else_on_the_authority(action: str) -> None:
    decision = anonymous(ENGINE, action)
    assert not decision.allowed and decision.reasons == ()  # default deny: the HTTP layer answers 401


@pytest.mark.parametrize(
    "action", ["getTruck", "getAttestationStatus", "liftQuarantine", "mintEnrollmentToken"]
)
def test_anonymous_is_refused_operator_operations_on_a_truck(action: str) -> None:
    assert not anonymous(ENGINE, action, TRUCK.ref).allowed


@pytest.mark.parametrize("action", ["getFleet", "registerTruck", "listTrucks"])
def test_anonymous_is_refused_fleet_operations(action: str) -> None:
    assert not anonymous(ENGINE, action, NORTH.ref).allowed


def test_public_cedar_alone_opens_nothing_but_its_operations() -> None:
    alone = PolicyEngine(SCHEMA, PUBLIC_TEXT)
    assert anonymous(alone, "getLogEntry").allowed
    for action in ("attestTruck", "issueAttestationNonce", "renewTruckCertificate"):
        assert not anonymous(alone, action, TRUCK.ref).allowed
    for action in CLOSED_ON_AUTHORITY:
        assert not anonymous(alone, action).allowed


def test_a_forbid_uploaded_later_closes_a_public_operation() -> None:
    text = (
        ENGINE.policy_text
        + '\n@id("log-closed")\nforbid (principal, action == Action::"getLogEntry", resource);\n'
    )
    closed = PolicyEngine(SCHEMA, text)
    decision = anonymous(closed, "getLogEntry")
    assert not decision.allowed and decision.reasons == ("log-closed",)
    assert anonymous(closed, "getLogCheckpoint").allowed


TRUCK_SELF_ACTIONS = (
    "issueAttestationNonce",
    "attestTruck",
    "renewTruckCertificate",
    "submitStatement",
    "getStatement",
    "getStatementChain",
    "issueEvidenceCertificate",
)


@pytest.mark.parametrize("action", TRUCK_SELF_ACTIONS)
def test_anonymous_is_refused_the_truck_operations(action: str) -> None:
    # No permit and no forbid: the guard answers 401 (a credential is missing), not 403.
    decision = anonymous(ENGINE, action, TRUCK.ref)
    assert not decision.allowed and decision.reasons == ()


@pytest.mark.parametrize("action", TRUCK_SELF_ACTIONS)
def test_the_truck_itself_is_allowed_its_operations(action: str) -> None:
    entities = ENGINE.entities([authority_entity(), NORTH.entity(), TRUCK.entity(), ANONYMOUS_RECORD])
    decision = ENGINE.decide(TRUCK.ref, action, TRUCK.ref, None, entities)
    assert decision.allowed and decision.reasons == ("truck-own-records",)


def test_no_client_acts_as_a_truck() -> None:
    broker = ClientPrincipal("b-1", "broker", "Acme", fleets=frozenset({"north"}))
    entities = ENGINE.entities([NORTH.entity(), TRUCK.entity(), broker.entity()])
    for action in ("issueAttestationNonce", "attestTruck", "renewTruckCertificate"):
        assert not ENGINE.decide(broker.ref, action, TRUCK.ref, None, entities).allowed
