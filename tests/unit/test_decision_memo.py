"""The guard's memoized decisions (provision.decisions.EntityMemo.decide) are Cedar's answers: the same
as an uncached call, under the policy set active now (a reload changes them at once), and another entity
record (a changed attribute) is another key."""

from __future__ import annotations

import dataclasses

from policies import AUTHORITY, ClientPrincipal, PolicyEngine
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
