"""Fleets and trucks as the operator registers them, and hardware-swap approvals.

Every change is stored with its audit row (and, when the caller sent one, its Idempotency-Key
response) in one transaction. A truck's SPIFFE ID follows from its fleet and id; its EK binding is
written only by enrollment (provision.enrollment); its profile (autonomy mode, hazmat certification)
only by its operator here, and the decision API reads it as live state (provision.decisions). A listing
shows only the fleets the caller may see (provision.fleet_listing).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from policies.engine import PolicyEngine
from policies.entities import ClientPrincipal
from provision import audit
from provision.audit import Actor
from provision.errors import FleetExists, InvalidAutonomyMode, TruckExists, UnknownFleet, UnknownTruck
from provision.fleet_listing import FleetListing
from provision.idempotency import Pending, commit_with
from provision.tables import Fleet, HardwareSwap, Truck

# What Cedar's Truck.autonomy_mode may say; "unknown" is a truck whose operator has not said (yet).
AUTONOMY_MODES = frozenset({"driverless", "supervised", "manual", "unknown"})


@dataclass(frozen=True)
class FleetView:
    id: str
    name: str
    created_at: datetime


@dataclass(frozen=True)
class TruckView:
    id: str
    fleet: str
    vin: str
    model: str
    state: str
    spiffe_id: str
    expected_ek_sha256: str | None
    ek_sha256: str | None
    ak_name: str | None
    certificate_serial: str | None
    enrolled_at: datetime | None
    created_at: datetime
    autonomy_mode: str
    hazmat_certified: bool


@dataclass(frozen=True)
class SwapView:
    id: int
    truck: str
    reason: str
    approved_by: str
    approved_at: datetime
    consumed_at: datetime | None


def spiffe_id(trust_domain: str, fleet: str, truck: str) -> str:
    return f"spiffe://{trust_domain}/fleet/{fleet}/truck/{truck}"


class FleetRegistry:
    def __init__(self, engine: Engine, *, trust_domain: str, clock: Callable[[], datetime]) -> None:
        self._engine = engine
        self._trust_domain = trust_domain
        self._clock = clock
        self._listing = FleetListing()

    # -- fleets ----------------------------------------------------------------------------------

    def create_fleet(
        self, actor: Actor, fleet_id: str, name: str, *, idempotency: Pending[FleetView] | None = None
    ) -> FleetView:
        now = self._clock()
        row = Fleet(id=fleet_id, name=name, created_at=now)
        view = FleetView(id=fleet_id, name=name, created_at=now)
        with Session(self._engine) as session:
            if session.get(Fleet, fleet_id) is not None:
                raise FleetExists(f"fleet {fleet_id!r} already exists")
            session.add(row)
            audit.record(session, audit.values(actor, "fleet.create", at=now, target=fleet_id))
            try:
                commit_with(session, view, idempotency, now)
            except IntegrityError:
                raise FleetExists(f"fleet {fleet_id!r} already exists") from None
        return view

    def fleets(self) -> list[FleetView]:
        with Session(self._engine) as session:
            rows = session.exec(select(Fleet).order_by(col(Fleet.id))).all()
            return [FleetView(id=r.id, name=r.name, created_at=r.created_at) for r in rows]

    def fleets_visible_to(self, policies: PolicyEngine, principal: ClientPrincipal) -> list[FleetView]:
        """Every fleet `principal` may getFleet, decided now in one Cedar batch (fail closed)."""
        return self._listing.visible(policies, principal, self.fleets())

    def fleet(self, fleet_id: str) -> FleetView:
        with Session(self._engine) as session:
            row = session.get(Fleet, fleet_id)
        if row is None:
            raise UnknownFleet(f"no fleet {fleet_id[:64]!r}")
        return FleetView(id=row.id, name=row.name, created_at=row.created_at)

    # -- trucks ----------------------------------------------------------------------------------

    def register_truck(
        self,
        actor: Actor,
        fleet_id: str,
        *,
        truck_id: str,
        vin: str,
        model: str,
        expected_ek_sha256: str | None = None,
        idempotency: Pending[TruckView] | None = None,
    ) -> TruckView:
        now = self._clock()
        row = Truck(
            id=truck_id,
            fleet_id=fleet_id,
            vin=vin,
            model=model,
            state="registered",
            expected_ek_sha256=expected_ek_sha256,
            created_at=now,
        )
        view = self._truck_view(row)
        with Session(self._engine) as session:
            if session.get(Fleet, fleet_id) is None:
                raise UnknownFleet(f"no fleet {fleet_id[:64]!r}")
            clash = session.exec(
                select(Truck.id).where((col(Truck.id) == truck_id) | (col(Truck.vin) == vin))
            ).first()
            if clash is not None:
                raise TruckExists(f"a truck with id {truck_id!r} or VIN {vin} is already registered")
            session.add(row)
            detail: dict[str, object] = {"fleet": fleet_id, "vin": vin, "model": model}
            if expected_ek_sha256:
                detail["expected_ek_sha256"] = expected_ek_sha256
            audit.record(
                session, audit.values(actor, "truck.register", at=now, target=truck_id, detail=detail)
            )
            try:
                commit_with(session, view, idempotency, now)
            except IntegrityError:
                raise TruckExists(
                    f"a truck with id {truck_id!r} or VIN {vin} is already registered"
                ) from None
        return view

    def trucks(self, fleet_id: str) -> list[TruckView]:
        with Session(self._engine) as session:
            if session.get(Fleet, fleet_id) is None:
                raise UnknownFleet(f"no fleet {fleet_id[:64]!r}")
            rows = session.exec(select(Truck).where(col(Truck.fleet_id) == fleet_id).order_by(col(Truck.id)))
            return [self._truck_view(r) for r in rows.all()]

    def truck(self, truck_id: str) -> TruckView:
        with Session(self._engine) as session:
            row = session.get(Truck, truck_id)
            if row is None:
                raise UnknownTruck(f"no truck {truck_id[:64]!r}")
            return self._truck_view(row)

    def set_truck_profile(
        self, actor: Actor, truck_id: str, *, autonomy_mode: str, hazmat_certified: bool
    ) -> TruckView:
        """Replace the truck's profile; audited with what it replaced (a refusal with its truck). Every
        decision from the commit on reads the new one (provision.decisions.LiveState)."""
        with audit.refusals(self._engine, actor, "truck.profile", target=truck_id, clock=self._clock):
            return self._set_truck_profile(actor, truck_id, autonomy_mode, hazmat_certified)

    def _set_truck_profile(
        self, actor: Actor, truck_id: str, autonomy_mode: str, hazmat_certified: bool
    ) -> TruckView:
        if autonomy_mode not in AUTONOMY_MODES:
            raise InvalidAutonomyMode(
                f"autonomy mode {autonomy_mode[:32]!r} is none of {', '.join(sorted(AUTONOMY_MODES))}"
            )
        now = self._clock()
        with Session(self._engine) as session:
            # Locked, so the audited `before` is what this change replaced, not a concurrent one's input.
            row = session.get(Truck, truck_id, with_for_update=True)
            if row is None:
                raise UnknownTruck(f"no truck {truck_id[:64]!r}")
            before = {"autonomy_mode": row.autonomy_mode, "hazmat_certified": row.hazmat_certified}
            after = {"autonomy_mode": autonomy_mode, "hazmat_certified": hazmat_certified}
            row.autonomy_mode = autonomy_mode
            row.hazmat_certified = hazmat_certified
            session.add(row)
            audit.record(
                session,
                audit.values(
                    actor,
                    "truck.profile",
                    at=now,
                    target=truck_id,
                    detail={"fleet": row.fleet_id, "before": before, "after": after},
                ),
            )
            view = self._truck_view(row)
            session.commit()
        return view

    # -- hardware swaps --------------------------------------------------------------------------

    def approve_swap(
        self, actor: Actor, truck_id: str, reason: str, *, idempotency: Pending[SwapView] | None = None
    ) -> SwapView:
        """Allow the truck's next enrollment to bind a different EK (once)."""
        now = self._clock()
        with Session(self._engine) as session:
            if session.get(Truck, truck_id) is None:
                raise UnknownTruck(f"no truck {truck_id[:64]!r}")
            row = HardwareSwap(
                truck_id=truck_id, reason=reason, approved_by=actor.name[:128], approved_at=now
            )
            session.add(row)
            session.flush()
            assert row.id is not None
            view = SwapView(
                id=row.id,
                truck=truck_id,
                reason=reason,
                approved_by=row.approved_by,
                approved_at=now,
                consumed_at=None,
            )
            audit.record(
                session,
                audit.values(
                    actor,
                    "truck.hardware-swap.approve",
                    at=now,
                    target=truck_id,
                    detail={"swap": row.id, "reason": reason},
                ),
            )
            commit_with(session, view, idempotency, now)
        return view

    def _truck_view(self, row: Truck) -> TruckView:
        return TruckView(
            id=row.id,
            fleet=row.fleet_id,
            vin=row.vin,
            model=row.model,
            state=row.state,
            spiffe_id=spiffe_id(self._trust_domain, row.fleet_id, row.id),
            expected_ek_sha256=row.expected_ek_sha256,
            ek_sha256=row.ek_sha256,
            ak_name=row.ak_name,
            certificate_serial=row.certificate_serial,
            enrolled_at=row.enrolled_at,
            created_at=row.created_at,
            autonomy_mode=row.autonomy_mode,
            hazmat_certified=row.hazmat_certified,
        )
