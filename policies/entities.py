"""Cedar entity JSON built from plain state, so callers never write Cedar JSON by hand.

The adapters read live state (truck attestation status, client registrations, tenders) and hand it here
as frozen dataclasses; each turns into one entity record of the schema in `schema.cedarschema`. Times go
in as aware datetimes and come out as epoch seconds, the unit of the decision context's `now`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from policies.errors import EntitiesInvalid

EntityJson = dict[str, object]
ClientKind = Literal["operator", "broker", "tms", "insurer"]
# One entity type per client kind: the validator then knows which attributes each kind has.
CLIENT_TYPES: dict[ClientKind, str] = {
    "operator": "Operator",
    "broker": "Broker",
    "tms": "Tms",
    "insurer": "Insurer",
}


@dataclass(frozen=True, slots=True)
class EntityRef:
    type: str
    id: str

    def json(self) -> dict[str, str]:
        return {"type": self.type, "id": self.id}

    def attr(self) -> dict[str, dict[str, str]]:
        # The explicit escape keeps an entity reference from being read as a record with two strings.
        return {"__entity": self.json()}


AUTHORITY = EntityRef("Authority", "weighstation")


def epoch_seconds(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise EntitiesInvalid("naive datetime refused: pass an aware UTC datetime")
    return int(moment.timestamp())


def _entity(ref: EntityRef, attrs: EntityJson, parents: Iterable[EntityRef] = ()) -> EntityJson:
    return {"uid": ref.json(), "attrs": attrs, "parents": [p.json() for p in parents]}


def _refs(kind: str, ids: Iterable[str]) -> list[dict[str, dict[str, str]]]:
    return [EntityRef(kind, i).attr() for i in sorted(ids)]


def authority_entity() -> EntityJson:
    return _entity(AUTHORITY, {})


@dataclass(frozen=True, slots=True)
class FleetState:
    id: str
    organisation: str

    @property
    def ref(self) -> EntityRef:
        return EntityRef("Fleet", self.id)

    def entity(self) -> EntityJson:
        return _entity(self.ref, {"organisation": self.organisation})


@dataclass(frozen=True, slots=True)
class ReleaseState:
    id: str
    model: str
    revoked: bool

    @property
    def ref(self) -> EntityRef:
        return EntityRef("Release", self.id)

    def entity(self) -> EntityJson:
        return _entity(self.ref, {"model": self.model, "revoked": self.revoked})


@dataclass(frozen=True, slots=True)
class TruckState:
    """A truck's live state. `attestation_status` None and `attested_until` None mean never attested;
    `release_revoked` is whether the release it last appraised against has been revoked since."""

    id: str
    fleet: str
    attestation_status: str | None
    attested_until: datetime | None
    quarantined: bool
    certificate_status: str
    autonomy_mode: str
    hazmat_certified: bool = False
    release: str | None = None
    release_revoked: bool = False

    @property
    def ref(self) -> EntityRef:
        return EntityRef("Truck", self.id)

    def entity(self) -> EntityJson:
        fleet = EntityRef("Fleet", self.fleet)
        attrs: EntityJson = {
            "fleet": fleet.attr(),
            # 0 is long past: a truck never attested is never "attested until" any now.
            "attested_until": 0 if self.attested_until is None else epoch_seconds(self.attested_until),
            "attestation_status": self.attestation_status or "none",
            "quarantined": self.quarantined,
            "release_revoked": self.release_revoked,
            "certificate_status": self.certificate_status,
            "autonomy_mode": self.autonomy_mode,
            "hazmat_certified": self.hazmat_certified,
        }
        if self.release is not None:
            attrs["release"] = EntityRef("Release", self.release).attr()
        return _entity(self.ref, attrs, parents=(fleet,))


@dataclass(frozen=True, slots=True)
class ClientPrincipal:
    """An OAuth2 client. `fleets`: managed fleets (operator) or contracted fleets (broker, tms);
    `insurer_policies`: the policies an insurer underwrites; `global_admin`: CA and release management."""

    id: str
    kind: ClientKind
    organisation: str
    fleets: frozenset[str] = field(default_factory=frozenset)
    insurer_policies: frozenset[str] = field(default_factory=frozenset)
    global_admin: bool = False

    @property
    def ref(self) -> EntityRef:
        return EntityRef(CLIENT_TYPES[self.kind], self.id)

    def entity(self) -> EntityJson:
        attrs: EntityJson = {"organisation": self.organisation}
        if self.kind == "insurer":
            attrs["policies"] = sorted(self.insurer_policies)
        else:
            attrs["fleets"] = _refs("Fleet", self.fleets)
        if self.kind == "operator":
            attrs["global_admin"] = self.global_admin
        return _entity(self.ref, attrs)


@dataclass(frozen=True, slots=True)
class TenderState:
    id: str
    hazmat: bool
    lanes: frozenset[str] = field(default_factory=frozenset)
    windows: tuple[tuple[datetime, datetime], ...] = ()
    fleet: str | None = None

    @property
    def ref(self) -> EntityRef:
        return EntityRef("Tender", self.id)

    def entity(self) -> EntityJson:
        attrs: EntityJson = {
            "hazmat": self.hazmat,
            "lanes": sorted(self.lanes),
            "windows": [{"start": epoch_seconds(s), "end": epoch_seconds(e)} for s, e in self.windows],
        }
        if self.fleet is not None:
            attrs["fleet"] = EntityRef("Fleet", self.fleet).attr()
        return _entity(self.ref, attrs)


@dataclass(frozen=True, slots=True)
class EvidenceState:
    id: str
    truck: str
    fleet: str
    insurer_policies: frozenset[str]

    @property
    def ref(self) -> EntityRef:
        return EntityRef("Evidence", self.id)

    def entity(self) -> EntityJson:
        return _entity(
            self.ref,
            {
                "truck": EntityRef("Truck", self.truck).attr(),
                "fleet": EntityRef("Fleet", self.fleet).attr(),
                "insurer_policies": sorted(self.insurer_policies),
            },
        )


def gate_context(now: datetime, tender: TenderState | None = None) -> EntityJson:
    """The context of `dispatch` and `tender.accept` (the latter requires a tender)."""
    context: EntityJson = {"now": epoch_seconds(now)}
    if tender is not None:
        context["tender"] = tender.ref.attr()
    return context
