"""The guard's memoized decisions (provision.decisions.EntityMemo.decide) are Cedar's answers: the same
as an uncached call, under the policy set active now (a reload changes them at once), and another entity
record (a changed attribute) is another key."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

from policies import AUTHORITY, ClientPrincipal, PolicyEngine, TruckState, gate_context
from policies.entities import FleetState
from provision.decisions import EntityMemo

OPERATOR = ClientPrincipal("op-1", "operator", "Northern Haulage", fleets=frozenset({"north"}))
ONLY_GLOBAL = '@id("only-global")\npermit (principal is Operator, action in Action::"global", resource);'


def uncached(engine: PolicyEngine, principal: ClientPrincipal, action: str) -> bool:
    entities = engine.entities([principal.entity()])
    return engine.decide(principal.ref, action, AUTHORITY, None, entities).allowed


def test_memoized_decisions_equal_cedar_and_follow_a_reload() -> None:
    engine = PolicyEngine.from_directory()
    memo = EntityMemo()
    records = [OPERATOR.entity()]
    first = memo.decide(engine, OPERATOR.ref, "listFleets", AUTHORITY, records)
    again = memo.decide(engine, OPERATOR.ref, "listFleets", AUTHORITY, records)
    assert first.allowed and again == first == engine.decide(
        OPERATOR.ref, "listFleets", AUTHORITY, None, engine.entities(records)
    )
    assert not memo.decide(engine, OPERATOR.ref, "createFleet", AUTHORITY, records).allowed
    assert not uncached(engine, OPERATOR, "createFleet")

    old = engine.version
    engine.reload(ONLY_GLOBAL)  # operators may no longer list fleets
    after = memo.decide(engine, OPERATOR.ref, "listFleets", AUTHORITY, records)
    assert not after.allowed and after.policy_version == engine.version != old
    assert not uncached(engine, OPERATOR, "listFleets")


def test_a_changed_record_is_decided_afresh() -> None:
    engine = PolicyEngine.from_directory()
    memo = EntityMemo()
    assert not memo.decide(engine, OPERATOR.ref, "createFleet", AUTHORITY, [OPERATOR.entity()]).allowed
    admin = dataclasses.replace(OPERATOR, global_admin=True)
    assert memo.decide(engine, admin.ref, "createFleet", AUTHORITY, [admin.entity()]).allowed
    assert uncached(engine, admin, "createFleet")
    assert not memo.decide(engine, OPERATOR.ref, "createFleet", AUTHORITY, [OPERATOR.entity()]).allowed


def test_a_full_memo_starts_over_and_still_answers() -> None:
    engine = PolicyEngine.from_directory()
    memo = EntityMemo(size=2)
    for i in range(5):
        principal = dataclasses.replace(OPERATOR, id=f"op-{i}")
        assert memo.decide(engine, principal.ref, "listFleets", AUTHORITY, [principal.entity()]).allowed


def test_entity_sets_by_state_are_the_states_entities() -> None:
    """Keyed by the frozen states: equal states reuse the set, one changed field parses a new one, and
    Cedar decides on the set exactly as on the records parsed afresh."""
    now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    broker = ClientPrincipal("b-1", "broker", "Acme", fleets=frozenset({"north"}))
    truck = TruckState(
        id="t-1",
        fleet="north",
        attestation_status="affirming",
        attested_until=now + timedelta(minutes=30),
        quarantined=False,
        certificate_status="valid",
        autonomy_mode="supervised",
    )
    engine = PolicyEngine.from_directory()
    memo = EntityMemo()
    fleet = FleetState("north", "North")
    first = memo.entities_of(engine, [broker, fleet, truck])
    assert memo.entities_of(engine, [broker, fleet, dataclasses.replace(truck)]) is first
    quarantined = dataclasses.replace(truck, quarantined=True)
    changed = memo.entities_of(engine, [broker, fleet, quarantined])
    assert changed is not first
    context = gate_context(now)
    for state, entities in ((truck, first), (quarantined, changed)):
        fresh = engine.entities([broker.entity(), fleet.entity(), state.entity()])
        memoized = engine.decide(broker.ref, "dispatch", state.ref, context, entities)
        assert memoized == engine.decide(broker.ref, "dispatch", state.ref, context, fresh)
    assert engine.decide(broker.ref, "dispatch", truck.ref, context, first).allowed
    assert not engine.decide(broker.ref, "dispatch", truck.ref, context, changed).allowed
