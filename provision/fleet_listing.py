"""A fleet listing as the caller may see it: exactly the fleets its getFleet would be allowed on.

listFleets is granted on the Authority (any operator may list); what each fleet in the answer shows is
decided per fleet by the same question the route guard asks before `GET /v1/fleets/{fleet}`: principal
the client as the guard read it for this request, action `getFleet`, resource the Fleet, no context,
and entities built as provision.access builds them (the client's entity and FleetState(id, name) of
the fleet). The other fleets in the set change nothing: no policy follows a fleet to another one.

One Cedar batch for the whole listing. Fail closed: a fleet whose decision errors is left out (the
engine turns an evaluation error into a deny), and a batch Cedar cannot evaluate at all lists nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol, TypeVar

from policies.engine import PolicyEngine
from policies.entities import ClientPrincipal, EntityJson, FleetState
from policies.errors import PolicyError
from provision.decisions import EntityMemo

LISTING_ACTION = "getFleet"
log = logging.getLogger("weighstation.http")


class ListedFleet(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def name(self) -> str: ...


Listed = TypeVar("Listed", bound=ListedFleet)


class FleetListing:
    def __init__(self) -> None:
        # A dashboard lists the same fleets again and again: the parsed set is reused while neither the
        # client's registration nor any fleet changed (the key is the records' exact JSON).
        self._entities = EntityMemo()

    def visible(
        self, policies: PolicyEngine, principal: ClientPrincipal, fleets: Sequence[Listed]
    ) -> list[Listed]:
        """The fleets (in the given order) on which `principal` may getFleet under the active set."""
        if not fleets:
            return []
        records: list[EntityJson] = [principal.entity()]
        records += [FleetState(fleet.id, fleet.name).entity() for fleet in fleets]
        try:
            entities = self._entities.entities(policies, records)
            decisions = policies.decide_batch(
                principal.ref, LISTING_ACTION, [FleetState(f.id, f.name).ref for f in fleets], None, entities
            )
        except PolicyError as exc:
            # A wiring mistake, not the caller's: show nothing rather than everything, and say so.
            log.error("fleet listing could not be decided", extra={"reason": exc.reason[:300]})
            return []
        return [fleet for fleet, decision in zip(fleets, decisions, strict=True) if decision.allowed]
