"""`GET /v1/fleets` lists only the fleets the caller may see: each fleet operator exactly its own, the
global admin every one. Each fleet's place in a listing is the route guard's own getFleet decision for
that caller (provision.access.RouteAccess), on both databases, under the shipped and an uploaded set."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from policies import EntityRef, PolicyEngine, read_policy_text
from policies.engine import POLICY_DIR, SCHEMA_FILE
from provision.access import Caller, RouteAccess
from provision.db import make_engine
from provision.decisions import read_client
from provision.fleets import FleetRegistry
from provision.migrate import upgrade_to_head
from provision.policy_store import PolicyStore
from provision.tables import Fleet, OAuthClient
from tests.support.service import RunningService

pytestmark = pytest.mark.integration
NOW = datetime(2026, 11, 24, 6, 0, tzinfo=UTC)
# client id -> (kind, fleets, insurer policies, global admin)
CLIENTS: dict[str, tuple[str, list[str], list[str], bool]] = {
    "op-north": ("operator", ["north"], [], False),
    "op-south": ("operator", ["south", "east", "gone"], [], False),
    "op-none": ("operator", [], [], False),
    "op-root": ("operator", [], [], True),
    "broker": ("broker", ["north", "boom"], [], False),
    "tms": ("tms", ["south"], [], False),
    "insurer": ("insurer", [], ["P-1"], False),
}
# An uploaded set granting brokers their contracted fleets, and a policy that errors on one fleet.
EXTRA = """
@id("test-broker-sees-contracted-fleets")
permit (principal is Broker, action == Action::"getFleet", resource is Fleet)
when { principal.fleets.contains(resource) };

@id("test-fleet-boom-errors")
forbid (principal, action == Action::"getFleet", resource is Fleet)
when { resource.organisation == "Boom" && 9223372036854775807 + 1 > 0 };
"""


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    upgrade_to_head(engine)
    with Session(engine) as session:
        for fleet, name in (("north", "North"), ("south", "South"), ("east", "East"), ("boom", "Boom")):
            session.add(Fleet(id=fleet, name=name, created_at=NOW))
        for client_id, (kind, fleets, policies, admin) in CLIENTS.items():
            session.add(
                OAuthClient(
                    id=client_id,
                    name=client_id,
                    kind=kind,
                    organisation="org",
                    fleets=json.dumps(fleets),
                    insurer_policies=json.dumps(policies),
                    global_admin=admin,
                    scopes="fleets",
                    secret_hash="",
                    registered_by="test",
                    created_at=NOW,
                )
            )
        session.commit()
    yield engine
    engine.dispose()


@pytest.mark.parametrize("extra", ["", EXTRA], ids=["shipped", "uploaded"])
def test_a_fleet_is_listed_exactly_when_the_guard_allows_getFleet(engine: Engine, extra: str) -> None:
    schema = (POLICY_DIR / SCHEMA_FILE).read_text(encoding="utf-8")
    store = PolicyStore(engine, PolicyEngine(schema, read_policy_text() + extra), clock=lambda: NOW)
    access = RouteAccess(engine, store, clock=lambda: NOW)
    registry = FleetRegistry(engine, trust_domain="example.test", clock=lambda: NOW)
    fleets = [fleet.id for fleet in registry.fleets()]
    listed: dict[str, list[str]] = {}
    for client_id in CLIENTS:
        with engine.connect() as conn:
            principal = read_client(conn, client_id)  # as the guard reads it for listFleets
        listed[client_id] = [f.id for f in registry.fleets_visible_to(store.engine, principal)]
        for fleet in fleets:
            guard = access.decide(Caller(client_id=client_id), "getFleet", EntityRef("Fleet", fleet))
            assert (fleet in listed[client_id]) == guard.decision.allowed, (extra != "", client_id, fleet)
    # Not vacuous: the callers see different, non-empty sets.
    assert listed["op-north"] == ["north"] and listed["op-south"] == ["east", "south"]
    assert listed["op-root"] == (["east", "north", "south"] if extra else ["boom", "east", "north", "south"])
    assert listed["broker"] == (["north"] if extra else [])
    assert listed["op-none"] == listed["tms"] == listed["insurer"] == []


def listed(client: httpx.Client, headers: dict[str, str]) -> list[str]:
    response = client.get("/v1/fleets", headers=headers)
    assert response.status_code == 200, response.text
    return [fleet["id"] for fleet in response.json()]


def test_each_caller_lists_exactly_the_fleets_it_may_see(service: RunningService) -> None:
    tag = secrets.token_hex(3)
    north, south, east = f"north-{tag}", f"south-{tag}", f"east-{tag}"
    with service.client() as client:
        for fleet in (north, south, east):
            created = client.post("/v1/fleets", json={"id": fleet, "name": fleet}, headers=service.admin())
            assert created.status_code == 201, created.text
        op_north = service.client_headers(
            name="north ops", kind="operator", fleets=[north], scopes=["fleets"]
        )
        op_south = service.client_headers(
            name="south ops", kind="operator", fleets=[south, east], scopes=["fleets"]
        )
        admin = service.client_headers(
            name="second admin", kind="operator", global_admin=True, scopes=["fleets"]
        )
        seen_north, seen_south = listed(client, op_north), listed(client, op_south)
        seen_admin, seen_bootstrap = listed(client, admin), listed(client, service.admin())
    assert seen_north == [north]
    assert seen_south == sorted([south, east])
    # The admins see every fleet, the others' fleets included (this module's service has no other).
    assert set(seen_admin) == set(seen_bootstrap) == {north, south, east}
    assert seen_admin == sorted(seen_admin)
