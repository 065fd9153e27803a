"""The engine's guarantees: only a policy set that parses, has a unique @id on every policy and validates
against the schema becomes active; a refused reload leaves the active set in place; entities and
requests that do not fit the schema are refused with typed errors; an evaluation error denies."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from policies import (
    AUTHORITY,
    ClientPrincipal,
    DecisionRequestInvalid,
    EntitiesInvalid,
    PolicyEngine,
    PolicySetInvalid,
    SchemaInvalid,
    TruckState,
    gate_context,
    read_policy_text,
)
from policies.engine import POLICY_DIR, SCHEMA_FILE

SCHEMA = (POLICY_DIR / SCHEMA_FILE).read_text(encoding="utf-8")
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
OPERATOR = ClientPrincipal("op-1", "operator", "Northern Haulage", fleets=frozenset({"north"}))
BROKER = ClientPrincipal("broker-1", "broker", "Acme Freight", fleets=frozenset({"north"}))
TRUCK = TruckState(
    id="t-001",
    fleet="north",
    attestation_status="affirming",
    attested_until=NOW + timedelta(minutes=30),
    quarantined=False,
    certificate_status="valid",
    autonomy_mode="driverless",
)
EXPECTED_IDS = {
    "broker-ask-decisions",
    "contracted-dispatch-attested-truck",
    "contracted-read-truck-state",
    "forbid-gate-attestation-expired",
    "forbid-gate-certificate-not-valid",
    "forbid-gate-hazmat-uncertified",
    "forbid-gate-not-affirming",
    "forbid-gate-quarantined",
    "forbid-gate-release-revoked",
    "forbid-gate-tender-other-fleet",
    "forbid-renewal-certificate-not-valid",
    "forbid-renewal-quarantined",
    "insurer-read-evidence-under-policy",
    "operator-global-admin",
    "operator-global-admin-evidence",
    "operator-global-admin-fleets",
    "operator-manage-own-fleets",
    "operator-read-authority",
    "operator-read-fleet-evidence",
    "public-enrollment",
    "public-health-and-docs",
    "public-log-read",
    "public-oauth-endpoints",
    "public-signed-evidence",
    "public-trust-anchors",
    "truck-own-records",
}


def test_shipped_policies_load_with_their_ids() -> None:
    engine = PolicyEngine.from_directory()
    assert set(engine.policy_ids) == EXPECTED_IDS
    assert len(engine.version) == 64


def refused(text: str) -> tuple[str, ...]:
    with pytest.raises(PolicySetInvalid) as info:
        PolicyEngine(SCHEMA, text)
    assert info.value.code == "policy-set-invalid"
    return info.value.errors


def test_unknown_attribute_refused() -> None:
    errors = refused(
        '@id("bad")\npermit (principal, action, resource is Truck) when { resource.colour == "red" };'
    )
    assert len(errors) == 1
    assert errors[0].startswith("[bad]")
    assert "colour" in errors[0]


def test_unknown_entity_type_refused() -> None:
    errors = refused('@id("bad")\npermit (principal is Dispatcher, action, resource);')
    assert any("Dispatcher" in e for e in errors)


def test_unknown_action_refused() -> None:
    errors = refused('@id("bad")\npermit (principal, action == Action::"teleport", resource);')
    assert any("teleport" in e for e in errors)


def test_every_problem_is_listed() -> None:
    text = (
        '@id("a")\npermit (principal, action, resource is Truck) when { resource.colour == "red" };\n'
        "permit (principal, action, resource);\n"
        '@id("a")\nforbid (principal, action, resource);\n'
    )
    errors = refused(text)
    assert len(errors) == 3
    assert any("no @id" in e for e in errors)
    assert any("more than one policy" in e for e in errors)


def test_parse_error_refused() -> None:
    (error,) = refused('@id("x")\npermit (principal, action, resource) when { resource. };')
    assert error.startswith("parse error")


def test_template_refused() -> None:
    (error,) = refused('@id("t")\npermit (principal == ?principal, action, resource);')
    assert "templates" in error


def test_invalid_schema_refused() -> None:
    with pytest.raises(SchemaInvalid) as info:
        PolicyEngine("entity Truck = { fleet: Nowhere };", read_policy_text())
    assert info.value.code == "policy-schema-invalid"


def test_directory_without_schema_or_policies_refused(tmp_path: Path) -> None:
    with pytest.raises(SchemaInvalid):
        PolicyEngine.from_directory(tmp_path)
    (tmp_path / SCHEMA_FILE).write_text(SCHEMA, encoding="utf-8")
    with pytest.raises(PolicySetInvalid):
        PolicyEngine.from_directory(tmp_path)


def list_fleets(engine: PolicyEngine) -> bool:
    entities = engine.entities([OPERATOR.entity()])
    return engine.decide(OPERATOR.ref, "listFleets", AUTHORITY, None, entities).allowed


def test_reload_with_invalid_set_keeps_the_old_one() -> None:
    engine = PolicyEngine.from_directory()
    version, text = engine.version, engine.policy_text
    assert list_fleets(engine)
    with pytest.raises(PolicySetInvalid):
        engine.reload('@id("bad")\npermit (principal, action, resource) when { principal.colour };')
    assert (engine.version, engine.policy_text) == (version, text)
    assert list_fleets(engine)


def test_reload_with_valid_set_takes_effect() -> None:
    engine = PolicyEngine.from_directory()
    old = engine.version
    only_global = '@id("only-global")\npermit (principal is Operator, action in Action::"global", resource);'
    assert engine.reload(only_global) == engine.version != old
    assert engine.policy_ids == ("only-global",)
    assert not list_fleets(engine)
    entities = engine.entities([OPERATOR.entity()])
    decision = engine.decide(OPERATOR.ref, "rotateCa", AUTHORITY, None, entities)
    assert decision.reasons == ("only-global",)
    assert decision.policy_version == engine.version


def test_entities_not_in_the_schema_refused() -> None:
    engine = PolicyEngine.from_directory()
    bogus_attr = TRUCK.entity()
    attrs = bogus_attr["attrs"]
    assert isinstance(attrs, dict)
    bogus_attr["attrs"] = {**attrs, "colour": "red"}
    for record in (
        bogus_attr,
        {"uid": {"type": "Dispatcher", "id": "d"}, "attrs": {}, "parents": []},
        {"uid": {"type": "Fleet", "id": "f"}, "attrs": {"organisation": 7}, "parents": []},
    ):
        with pytest.raises(EntitiesInvalid) as info:
            engine.entities([record])
        assert info.value.code == "policy-entities-invalid"


def test_naive_timestamp_refused() -> None:
    with pytest.raises(EntitiesInvalid):
        dataclasses.replace(TRUCK, attested_until=datetime(2026, 3, 1, 12, 30)).entity()


def test_entities_extend_a_base_without_changing_it() -> None:
    engine = PolicyEngine.from_directory()
    base = engine.entities([BROKER.entity()])
    extended = engine.entities([TRUCK.entity()], base=base)
    assert len(extended) == len(base) + 1
    assert engine.decide(BROKER.ref, "dispatch", TRUCK.ref, gate_context(NOW), extended).allowed


def test_requests_that_do_not_fit_the_schema_refused() -> None:
    engine = PolicyEngine.from_directory()
    entities = engine.entities([BROKER.entity(), TRUCK.entity()])
    cases: list[tuple[str, dict[str, object]]] = [
        ("teleport", gate_context(NOW)),  # unknown action
        ("dispatch", {}),  # context without now
        ("dispatch", {"now": "noon"}),  # now of the wrong type
        ("tender.accept", gate_context(NOW)),  # tender required
        ("getTruck", gate_context(NOW)),  # context on an action that takes none
    ]
    for action, context in cases:
        with pytest.raises(DecisionRequestInvalid) as info:
            engine.decide(BROKER.ref, action, TRUCK.ref, context, entities)
        assert info.value.code == "policy-request-invalid"


def test_evaluation_error_denies() -> None:
    engine = PolicyEngine.from_directory()
    entities = engine.entities([BROKER.entity()])  # the truck itself is missing
    decision = engine.decide(BROKER.ref, "dispatch", TRUCK.ref, gate_context(NOW), entities)
    assert not decision.allowed
    assert decision.reasons == ()
    assert any("forbid-gate-quarantined" in e for e in decision.errors)
