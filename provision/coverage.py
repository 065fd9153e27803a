"""Which insurance policies cover which fleet, and when: the source of Evidence.insurer_policies.

A fleet's operator states the fleet's whole coverage at once (every policy number with its validity,
past covers included, since a dispute may be about a statement logged years ago); the list replaces the
previous one in one transaction with its audit row, which keeps both lists. A cover is valid from
`valid_from` (inclusive) until `valid_until` (exclusive; None: open ended). Authorization asks
`policies_covering` for the covers valid at a statement's submission time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import pairwise

from sqlalchemy import Engine, delete, or_
from sqlmodel import Session, col, select

from provision import audit
from provision.audit import Actor
from provision.errors import ProvisionError, UnknownFleet
from provision.tables import Fleet, FleetInsurancePolicy

MAX_COVERS = 256


class CoverageInvalid(ProvisionError):
    """A cover that ends before it starts, a naive time, or two overlapping covers of one policy."""

    code = "coverage-invalid"


@dataclass(frozen=True)
class Cover:
    policy_number: str
    valid_from: datetime
    valid_until: datetime | None = None

    def covers(self, moment: datetime) -> bool:
        return self.valid_from <= moment and (self.valid_until is None or moment < self.valid_until)


@dataclass(frozen=True)
class CoverageView:
    fleet: str
    policies: tuple[Cover, ...]


def _checked(covers: Sequence[Cover]) -> tuple[Cover, ...]:
    if len(covers) > MAX_COVERS:
        raise CoverageInvalid(f"at most {MAX_COVERS} covers per fleet")
    for cover in covers:
        if not cover.policy_number or len(cover.policy_number) > 64:
            raise CoverageInvalid("a policy number has 1 to 64 characters")
        if cover.valid_from.tzinfo is None or (cover.valid_until and cover.valid_until.tzinfo is None):
            raise CoverageInvalid(f"policy {cover.policy_number!r}: times must carry a UTC offset")
        if cover.valid_until is not None and cover.valid_until <= cover.valid_from:
            raise CoverageInvalid(
                f"policy {cover.policy_number!r}: valid_until {cover.valid_until.isoformat()} is not after "
                f"valid_from {cover.valid_from.isoformat()}"
            )
    ordered = tuple(sorted(covers, key=lambda c: (c.policy_number, c.valid_from)))
    # One policy covers a fleet over disjoint periods: an overlap is a mistake in the operator's list.
    for earlier, later in pairwise(ordered):
        if earlier.policy_number != later.policy_number:
            continue
        if earlier.valid_until is None or earlier.valid_until > later.valid_from:
            raise CoverageInvalid(
                f"policy {later.policy_number!r}: the cover from {later.valid_from.isoformat()} overlaps "
                f"the one from {earlier.valid_from.isoformat()}"
            )
    return ordered


def _describe(covers: Sequence[Cover]) -> list[dict[str, str | None]]:
    return [
        {
            "policy_number": c.policy_number,
            "valid_from": c.valid_from.isoformat(),
            "valid_until": c.valid_until.isoformat() if c.valid_until else None,
        }
        for c in covers
    ]


def _cover(row: FleetInsurancePolicy) -> Cover:
    return Cover(row.policy_number, row.valid_from, row.valid_until)


def _rows(session: Session, fleet_id: str) -> list[FleetInsurancePolicy]:
    query = (
        select(FleetInsurancePolicy)
        .where(col(FleetInsurancePolicy.fleet_id) == fleet_id)
        .order_by(col(FleetInsurancePolicy.policy_number), col(FleetInsurancePolicy.valid_from))
    )
    return list(session.exec(query).all())


def policies_covering(session: Session, fleet_id: str, moment: datetime) -> frozenset[str]:
    """The policy numbers whose cover of the fleet was valid at `moment`."""
    query = select(FleetInsurancePolicy.policy_number).where(
        col(FleetInsurancePolicy.fleet_id) == fleet_id,
        col(FleetInsurancePolicy.valid_from) <= moment,
        or_(col(FleetInsurancePolicy.valid_until).is_(None), col(FleetInsurancePolicy.valid_until) > moment),
    )
    return frozenset(session.exec(query).all())


class FleetCoverage:
    def __init__(self, engine: Engine, *, clock: Callable[[], datetime]) -> None:
        self._engine = engine
        self._clock = clock

    def coverage(self, fleet_id: str) -> CoverageView:
        with Session(self._engine) as session:
            if session.get(Fleet, fleet_id) is None:
                raise UnknownFleet(f"no fleet {fleet_id[:64]!r}")
            return CoverageView(fleet_id, tuple(_cover(r) for r in _rows(session, fleet_id)))

    def replace(self, actor: Actor, fleet_id: str, covers: Sequence[Cover]) -> CoverageView:
        """Make `covers` the fleet's whole coverage; audited with the list it replaces."""
        ordered = _checked(covers)
        now = self._clock()
        with Session(self._engine) as session:
            # Locks the fleet row where the database can, so two replacements run one after the other.
            fleet = session.exec(select(Fleet).where(col(Fleet.id) == fleet_id).with_for_update()).first()
            if fleet is None:
                raise UnknownFleet(f"no fleet {fleet_id[:64]!r}")
            before = [_cover(r) for r in _rows(session, fleet_id)]
            session.connection().execute(
                delete(FleetInsurancePolicy).where(col(FleetInsurancePolicy.fleet_id) == fleet_id)
            )
            for cover in ordered:
                session.add(
                    FleetInsurancePolicy(
                        fleet_id=fleet_id,
                        policy_number=cover.policy_number,
                        valid_from=cover.valid_from,
                        valid_until=cover.valid_until,
                        recorded_by=actor.name[:128],
                        recorded_at=now,
                    )
                )
            detail = {"policies": _describe(ordered), "replaced": _describe(before)}
            audit.record(
                session,
                audit.values(actor, "fleet.insurance-policies.set", at=now, target=fleet_id, detail=detail),
            )
            session.commit()
        return CoverageView(fleet_id, ordered)
