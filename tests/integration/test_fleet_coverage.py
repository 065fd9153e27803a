"""Fleet insurance coverage on both databases: the operator's list replaces the previous one (audited,
nothing half-written when refused), and the route guard's Evidence carries exactly the policies that
covered the truck's fleet when the statement was submitted."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from policies import PolicyEngine
from provision.access import Caller, RouteAccess, evidence_ref
from provision.audit import Actor
from provision.coverage import Cover, CoverageInvalid, FleetCoverage
from provision.db import make_engine
from provision.errors import UnknownFleet
from provision.migrate import upgrade_to_head
from provision.policy_store import PolicyStore
from provision.tables import Fleet, OAuthClient, Truck, TruckStatementRow
from tests.support.audit import audit_rows

pytestmark = pytest.mark.integration
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
START = datetime(2026, 6, 1, tzinfo=UTC)
END = datetime(2027, 6, 1, tzinfo=UTC)
ACTOR = Actor("client:op-north", "req-1")


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    upgrade_to_head(engine)
    with Session(engine) as session:
        for fleet in ("north", "south"):
            session.add(Fleet(id=fleet, name=fleet, created_at=NOW))
        session.flush()
        session.add(
            Truck(
                id="t-1",
                fleet_id="north",
                vin="1HGBH41JXMN109186",
                model="m",
                state="enrolled",
                created_at=NOW,
            )
        )
        session.flush()
        # Statement 1 logged before the cover began, statement 2 during it.
        for sequence, at in ((1, START - timedelta(days=1)), (2, START + timedelta(days=1))):
            session.add(_statement(sequence, at))
        for client_id, kind, fleets, policies in (
            ("op-north", "operator", ["north"], []),
            ("ins-p1", "insurer", [], ["P-1"]),
            ("ins-p9", "insurer", [], ["P-9"]),
            ("broker", "broker", ["north"], []),
        ):
            session.add(_client(client_id, kind, fleets, policies))
        session.commit()
    yield engine
    engine.dispose()


def _statement(sequence: int, at: datetime) -> TruckStatementRow:
    return TruckStatementRow(
        sha256=f"{sequence:064x}",
        truck_id="t-1",
        sequence=sequence,
        kind="mission_manifest",
        statement=b"s",
        signature=b"sig",
        certificate_chain_pem="",
        certificate_serial="01",
        certificate_status="good",
        checkpoint_size=1,
        leaf_hash=bytes([sequence]) * 32,
        issued_at=at,
        submitted_at=at,
    )


def _client(client_id: str, kind: str, fleets: list[str], policies: list[str]) -> OAuthClient:
    return OAuthClient(
        id=client_id,
        name=client_id,
        kind=kind,
        organisation="org",
        fleets=json.dumps(fleets),
        insurer_policies=json.dumps(policies),
        scopes="fleets evidence:read",
        secret_hash="",
        registered_by="test",
        created_at=NOW,
    )


def _access(engine: Engine) -> RouteAccess:
    return RouteAccess(
        engine, PolicyStore(engine, PolicyEngine.from_directory(), clock=lambda: NOW), clock=lambda: NOW
    )


def test_the_list_replaces_the_previous_one_and_is_audited(engine: Engine, database_url: str) -> None:
    coverage = FleetCoverage(engine, clock=lambda: NOW)
    first = [Cover("P-1", START, END), Cover("P-2", START)]
    assert coverage.replace(ACTOR, "north", first).policies == (Cover("P-1", START, END), Cover("P-2", START))
    # The same policy number may cover several fleets.
    coverage.replace(ACTOR, "south", [Cover("P-1", START, END)])
    coverage.replace(ACTOR, "north", [Cover("P-3", END)])
    assert coverage.coverage("north").policies == (Cover("P-3", END, None),)
    assert coverage.coverage("south").policies == (Cover("P-1", START, END),)
    rows = audit_rows(database_url, "fleet.insurance-policies.set")
    assert [(r["actor"], r["target"], r["outcome"]) for r in rows] == [
        ("client:op-north", "north", "ok"),
        ("client:op-north", "south", "ok"),
        ("client:op-north", "north", "ok"),
    ]
    last = json.loads(str(rows[-1]["detail"]))
    assert [p["policy_number"] for p in last["replaced"]] == ["P-1", "P-2"]
    assert last["policies"] == [{"policy_number": "P-3", "valid_from": END.isoformat(), "valid_until": None}]


@pytest.mark.parametrize(
    "covers",
    [
        [Cover("P-1", END, START)],  # ends before it starts
        [Cover("P-1", START, START)],  # empty period
        [Cover("P-1", START, END), Cover("P-1", END - timedelta(days=1))],  # overlap
        [Cover("P-1", START), Cover("P-1", END, END + timedelta(days=1))],  # open-ended then another
        [Cover("P-1", START.replace(tzinfo=None), END)],  # naive time
    ],
    ids=["reversed", "empty", "overlap", "after-open-ended", "naive"],
)
def test_a_bad_list_is_refused_and_the_recorded_one_stays(engine: Engine, covers: list[Cover]) -> None:
    coverage = FleetCoverage(engine, clock=lambda: NOW)
    coverage.replace(ACTOR, "north", [Cover("P-1", START, END)])
    with pytest.raises(CoverageInvalid):
        coverage.replace(ACTOR, "north", covers)
    assert coverage.coverage("north").policies == (Cover("P-1", START, END),)


def test_back_to_back_covers_of_one_policy_are_fine(engine: Engine) -> None:
    coverage = FleetCoverage(engine, clock=lambda: NOW)
    covers = [Cover("P-1", END), Cover("P-1", START, END)]
    assert coverage.replace(ACTOR, "north", covers).policies == (Cover("P-1", START, END), Cover("P-1", END))


def test_an_unknown_fleet_is_refused(engine: Engine) -> None:
    coverage = FleetCoverage(engine, clock=lambda: NOW)
    with pytest.raises(UnknownFleet):
        coverage.replace(ACTOR, "nowhere", [Cover("P-1", START)])
    with pytest.raises(UnknownFleet):
        coverage.coverage("nowhere")


def _allowed(access: RouteAccess, client: str, sequence: int, truck: str = "t-1") -> bool:
    decided = access.decide(Caller(client_id=client), "getEvidenceBundle", evidence_ref(truck, sequence))
    return decided.decision.allowed


def test_evidence_is_covered_by_the_policies_valid_at_submission(engine: Engine) -> None:
    access = _access(engine)
    assert not _allowed(access, "ins-p1", 2)  # nothing recorded yet
    FleetCoverage(engine, clock=lambda: NOW).replace(ACTOR, "north", [Cover("P-1", START, END)])
    assert _allowed(access, "ins-p1", 2)
    assert not _allowed(access, "ins-p1", 1)  # logged the day before the cover began
    assert not _allowed(access, "ins-p9", 2)  # another policy
    assert not _allowed(access, "broker", 2)
    assert not _allowed(access, "ins-p1", 3)  # no such statement: no cover
    assert not _allowed(access, "ins-p1", 2**70)  # no such statement (nor a number the column holds)
    assert _allowed(access, "op-north", 2**70)  # then the handler refuses the sequence with a 400
    assert not _allowed(access, "ins-p1", 1, truck="no-such-truck")
    # The fleet's operator reads its evidence whatever the cover, and reaches the handler's 404.
    assert _allowed(access, "op-north", 1)
    assert _allowed(access, "op-north", 3)
    # The cover ended before statement 2: gone from then on.
    FleetCoverage(engine, clock=lambda: NOW).replace(
        ACTOR, "north", [Cover("P-1", START, START + timedelta(hours=1))]
    )
    assert not _allowed(access, "ins-p1", 2)
