"""The fleet listing keeps exactly the fleets the caller may getFleet: an operator its own, the global
admin every one, other client kinds what the active set grants them; in one batch, failing closed."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from policies import ClientPrincipal, FleetState, PolicyEngine, read_policy_text
from policies.engine import POLICY_DIR, SCHEMA_FILE
from provision.fleet_listing import FleetListing


@dataclass(frozen=True)
class Listed:
    id: str
    name: str


NORTH, SOUTH, EAST, BOOM = (
    Listed("north", "North"),
    Listed("south", "South"),
    Listed("east", "East"),
    Listed("boom", "Boom"),
)
FLEETS = [BOOM, EAST, NORTH, SOUTH]
OP_NORTH = ClientPrincipal("op-north", "operator", "org", fleets=frozenset({"north"}))
OP_SOUTH = ClientPrincipal("op-south", "operator", "org", fleets=frozenset({"south", "east", "gone"}))
OP_NONE = ClientPrincipal("op-none", "operator", "org")
OP_GLOBAL = ClientPrincipal("op-root", "operator", "org", global_admin=True)
BROKER = ClientPrincipal("broker", "broker", "org", fleets=frozenset({"north", "boom"}))
TMS = ClientPrincipal("tms", "tms", "org", fleets=frozenset({"south"}))
INSURER = ClientPrincipal("insurer", "insurer", "org", insurer_policies=frozenset({"P-1"}))
CALLERS = [OP_NORTH, OP_SOUTH, OP_NONE, OP_GLOBAL, BROKER, TMS, INSURER]
# An uploaded set may grant getFleet to another kind; and a policy that errors on one fleet (integer
# overflow, evaluated only for the fleet named "Boom") must leave that fleet out, even for the admin.
EXTRA = """
@id("test-broker-sees-contracted-fleets")
permit (principal is Broker, action == Action::"getFleet", resource is Fleet)
when { principal.fleets.contains(resource) };

@id("test-fleet-boom-errors")
forbid (principal, action == Action::"getFleet", resource is Fleet)
when { resource.organisation == "Boom" && 9223372036854775807 + 1 > 0 };
"""


def engine(extra: str = "") -> PolicyEngine:
    return PolicyEngine((POLICY_DIR / SCHEMA_FILE).read_text(encoding="utf-8"), read_policy_text() + extra)


def ids(fleets: list[Listed]) -> list[str]:
    return [fleet.id for fleet in fleets]


def guard_allows(policies: PolicyEngine, principal: ClientPrincipal, fleet: Listed) -> bool:
    """getFleet as the route guard asks it: the client and that one fleet, no context."""
    state = FleetState(fleet.id, fleet.name)
    entities = policies.entities([principal.entity(), state.entity()])
    return policies.decide(principal.ref, "getFleet", state.ref, None, entities).allowed


def test_shipped_policies_show_operators_their_fleets_and_the_admin_every_one() -> None:
    policies, listing = engine(), FleetListing()
    seen = {p.id: ids(listing.visible(policies, p, FLEETS)) for p in CALLERS}
    assert seen == {
        "op-north": ["north"],
        "op-south": ["east", "south"],  # the listing's order; a fleet that does not exist is not made up
        "op-none": [],
        "op-root": ["boom", "east", "north", "south"],
        "broker": [],
        "tms": [],
        "insurer": [],
    }


@pytest.mark.parametrize("extra", ["", EXTRA], ids=["shipped", "uploaded"])
def test_each_fleet_is_kept_exactly_when_the_guards_getFleet_allows_it(extra: str) -> None:
    policies, listing = engine(extra), FleetListing()
    for principal in CALLERS:
        visible = set(ids(listing.visible(policies, principal, FLEETS)))
        for fleet in FLEETS:
            assert (fleet.id in visible) == guard_allows(policies, principal, fleet), (principal.id, fleet.id)


def test_an_uploaded_set_is_followed_and_a_fleet_whose_decision_errors_is_left_out() -> None:
    policies, listing = engine(), FleetListing()
    assert listing.visible(policies, BROKER, FLEETS) == []
    policies.reload(read_policy_text() + EXTRA)  # the same engine: a memoised entity set is still right
    assert ids(listing.visible(policies, BROKER, FLEETS)) == ["north"]  # boom: contracted, but errors
    assert ids(listing.visible(policies, OP_GLOBAL, FLEETS)) == ["east", "north", "south"]


def test_a_batch_cedar_cannot_evaluate_lists_nothing() -> None:
    # Cedar refuses an entity set naming one fleet twice: nothing is decided, nothing is shown.
    assert FleetListing().visible(engine(), OP_GLOBAL, [NORTH, Listed("north", "Other")]) == []
    assert FleetListing().visible(engine(), OP_GLOBAL, []) == []
