"""A truck's profile (autonomy mode, hazmat certification) is live state its fleet's operator sets over
HTTP: a hazmat tender for an attested truck is refused by the safety policy until the operator certifies
the truck, and an operator's own policy can refuse driverless trucks. Each change is audited with what it
replaced; another fleet's operator is forbidden; a bad mode and an unknown truck are refused. The
migration that adds the profile keeps the trucks already registered, with the defaults."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import text

from agent.attest import attest
from agent.client import EnrollmentClient
from agent.request_auth import as_truck
from provision.db import make_engine
from provision.decisions import LiveState
from provision.migrate import upgrade_to_head
from tests.support.audit import audit_rows
from tests.support.enrolling import Operator, boot_and_enroll, new_vin
from tests.support.service import RunningService
from tests.support.swtpm import ManufacturerCa, running_tpms

pytestmark = pytest.mark.integration
MIGRATIONS = Path(__file__).parents[2] / "provision" / "migrations"
NO_DRIVERLESS = """
@id("no-driverless-dispatch")
forbid (principal, action == Action::"dispatch", resource is Truck)
when { resource.autonomy_mode == "driverless" };
"""


@dataclass
class Attested:
    service: RunningService
    truck: str
    fleet: str
    broker: str  # access token of a broker contracting with `fleet`


def db(service: RunningService) -> str:
    return f"sqlite:///{service.data_dir / 'weighstation.db'}"


@pytest.fixture(scope="module")
def attested(
    enrolling: RunningService, manufacturer: ManufacturerCa, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Attested]:
    """One truck on its own swtpm: booted on the golden release, enrolled, and attested (affirming)."""
    base = tmp_path_factory.mktemp("profile")
    with ExitStack() as stack:
        http = stack.enter_context(enrolling.client())
        operator = Operator(enrolling, http)
        operator.golden_release()
        fleet = operator.fleet()
        truck = operator.truck(fleet)
        (running,) = stack.enter_context(running_tpms(base / "tpms", manufacturer, 1, "ecc", distinct=True))
        agent = stack.enter_context(EnrollmentClient(enrolling.url))
        enrolled = boot_and_enroll(stack, running.tcti, agent, operator.token(truck), truck, base / "state")
        tpm, state, measured = enrolled.tpm, enrolled.state, enrolled.measured
        status = attest(tpm, as_truck(agent, tpm, state), state, event_log=measured.log).status
        assert status == "affirming"
        broker = enrolling.client_token(
            organisation="acme", name="broker", kind="broker", fleets=[fleet], scopes=["decisions"]
        )
        yield Attested(enrolling, truck, fleet, broker)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def decide(world: Attested, action: str, **extra: Any) -> dict[str, Any]:
    with world.service.client() as client:
        response = client.post(
            "/v1/decisions",
            json={"action": action, "truck": world.truck, **extra},
            headers={"Authorization": f"Bearer {world.broker}"},
        )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def set_profile(
    service: RunningService, truck: str, body: dict[str, Any], headers: dict[str, str] | None = None
) -> httpx.Response:
    with service.client() as client:
        return client.put(f"/v1/trucks/{truck}/profile", json=body, headers=headers or service.admin())


def profile_audits(service: RunningService, truck: str) -> list[dict[str, Any]]:
    rows = audit_rows(db(service), "truck.profile")
    return [json.loads(str(r["detail"])) for r in rows if r["target"] == truck and r["outcome"] == "ok"]


def test_a_hazmat_tender_is_refused_until_the_operator_certifies_the_truck(attested: Attested) -> None:
    service, truck = attested.service, attested.truck
    hazmat = {"tender": {"id": "T-hazmat-1", "hazmat": True}}
    with service.client() as client:
        shown = Operator(service, client).truck_state(truck)
    assert (shown["autonomy_mode"], shown["hazmat_certified"]) == ("unknown", False)
    assert decide(attested, "dispatch")["decision"] == "allow"  # attested: only the hazmat load stops it

    refused = decide(attested, "tender.accept", **hazmat)
    assert refused["decision"] == "deny" and refused["reasons"] == ["forbid-gate-hazmat-uncertified"]

    changed = set_profile(service, truck, {"autonomy_mode": "supervised", "hazmat_certified": True})
    assert changed.status_code == 200, changed.text
    assert changed.json()["autonomy_mode"] == "supervised" and changed.json()["hazmat_certified"] is True
    with service.client() as client:
        assert Operator(service, client).truck_state(truck) == changed.json()  # as getTruck answers it

    allowed = decide(attested, "tender.accept", **hazmat)
    assert allowed["decision"] == "allow", allowed

    decisions = [
        json.loads(str(r["detail"]))
        for r in audit_rows(db(service), "decision.tender.accept")
        if r["target"] == truck
    ]
    assert [(d["allowed"], d["reasons"], d["tender"]) for d in decisions][-2:] == [
        (False, ["forbid-gate-hazmat-uncertified"], "T-hazmat-1"),
        (True, allowed["reasons"], "T-hazmat-1"),
    ]
    assert profile_audits(service, truck)[-1] == {
        "fleet": attested.fleet,
        "before": {"autonomy_mode": "unknown", "hazmat_certified": False},
        "after": {"autonomy_mode": "supervised", "hazmat_certified": True},
    }


def test_an_operator_policy_on_the_autonomy_mode_decides_dispatch(attested: Attested) -> None:
    service, truck = attested.service, attested.truck
    with service.client() as client:
        operator = Operator(service, client)
        shipped = operator.get("/v1/policies").json()["text"]
        uploaded = operator.post("/v1/policies", {"text": shipped + NO_DRIVERLESS})
        assert uploaded.status_code == 201, uploaded.text
    try:
        driverless = set_profile(service, truck, {"autonomy_mode": "driverless", "hazmat_certified": False})
        assert driverless.status_code == 200, driverless.text
        refused = decide(attested, "dispatch")
        assert refused["decision"] == "deny" and refused["reasons"] == ["no-driverless-dispatch"]
        assert refused["policy_version"] == uploaded.json()["version"]

        supervised = set_profile(service, truck, {"autonomy_mode": "supervised", "hazmat_certified": False})
        assert supervised.status_code == 200, supervised.text
        assert decide(attested, "dispatch")["decision"] == "allow"
    finally:
        with service.client() as client:
            restored = Operator(service, client).post("/v1/policies", {"text": shipped})
        assert restored.status_code == 201, restored.text
    driven, back = profile_audits(service, truck)[-2:]
    assert driven["after"] == {"autonomy_mode": "driverless", "hazmat_certified": False}
    assert back["before"] == driven["after"]
    assert back["after"] == {"autonomy_mode": "supervised", "hazmat_certified": False}


def test_only_the_fleets_operators_set_a_profile_and_bad_requests_are_refused(
    service: RunningService,
) -> None:
    body = {"autonomy_mode": "manual", "hazmat_certified": True}
    with service.client() as client:
        operator = Operator(service, client)
        north, south = operator.fleet(), operator.fleet()
        truck = operator.truck(north)
        own, other = (
            bearer(
                service.client_token(
                    organisation="acme", name=f, kind="operator", fleets=[f], scopes=["fleets"]
                )
            )
            for f in (north, south)
        )

    forbidden = set_profile(service, truck, body, other)
    assert (forbidden.status_code, forbidden.json()["code"]) == (403, "forbidden")
    bad_mode = set_profile(service, truck, {"autonomy_mode": "remote", "hazmat_certified": True}, own)
    assert (bad_mode.status_code, bad_mode.json()["code"]) == (400, "invalid-autonomy-mode")
    assert bad_mode.headers["content-type"].startswith("application/problem+json")
    partial = set_profile(service, truck, {"autonomy_mode": "manual"}, own)  # both fields are required
    assert (partial.status_code, partial.json()["code"]) == (400, "invalid-request")
    unknown = set_profile(service, "no-such-truck", body)
    assert (unknown.status_code, unknown.json()["code"]) == (404, "unknown-truck")
    with service.client() as client:
        assert Operator(service, client).truck_state(truck)["autonomy_mode"] == "unknown"  # nothing changed

    done = set_profile(service, truck, body, own)
    assert done.status_code == 200, done.text
    assert (done.json()["autonomy_mode"], done.json()["hazmat_certified"]) == ("manual", True)
    assert len(profile_audits(service, truck)) == 1
    refusals = {
        (r["action"], r["code"])
        for r in audit_rows(db(service))
        if r["outcome"] == "refused" and r["target"] in {truck, f"Truck::{truck}"}
    }
    assert {
        ("setTruckProfile", "forbidden"),  # the guard's refusal, on Truck::<id>
        ("truck.profile", "invalid-autonomy-mode"),  # the use case's, on the truck
    } <= refusals, refusals


def _config(connection: Any) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def test_the_migration_keeps_registered_trucks_with_the_default_profile(database_url: str) -> None:
    engine = make_engine(database_url)
    now = datetime(2026, 11, 24, 6, 0, tzinfo=UTC)
    try:
        with engine.begin() as conn:
            command.upgrade(_config(conn), "0012")
            conn.execute(
                text("INSERT INTO fleets (id, name, created_at) VALUES ('north', 'North', :now)"),
                {"now": now},
            )
            conn.execute(
                text(
                    "INSERT INTO trucks (id, fleet_id, vin, model, state, created_at) "
                    "VALUES ('t-1', 'north', :vin, 'hauler-9', 'registered', :now)"
                ),
                {"vin": new_vin(), "now": now},
            )
        upgrade_to_head(engine)
        with engine.connect() as conn:
            row = conn.execute(text("SELECT id, autonomy_mode, hazmat_certified FROM trucks")).one()
            state = LiveState.read(conn, ["t-1"]).truck_state("t-1", now)
        assert (row[0], row[1], bool(row[2])) == ("t-1", "unknown", False)
        assert (state.autonomy_mode, state.hazmat_certified) == ("unknown", False)
        with engine.begin() as conn:
            conn.execute(
                text("UPDATE trucks SET autonomy_mode = 'driverless', hazmat_certified = :t"), {"t": True}
            )
            state = LiveState.read(conn, ["t-1"]).truck_state("t-1", now)
        assert (state.autonomy_mode, state.hazmat_certified) == ("driverless", True)
        with engine.begin() as conn:  # and back down: the trucks stay, without the profile
            command.downgrade(_config(conn), "0012")
            columns = conn.execute(text("SELECT * FROM trucks")).keys()
            assert "autonomy_mode" not in columns and "hazmat_certified" not in columns
            assert conn.execute(text("SELECT count(*) FROM trucks")).scalar_one() == 1
    finally:
        engine.dispose()
