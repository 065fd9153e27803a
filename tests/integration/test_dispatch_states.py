"""The broker's dispatch check end to end: real swtpm trucks, enrolled by the agent (booted first, so the
enrollment carries the first quote) and attesting with requests signed by their identity key, in every
attestation state the gate knows. A contracted broker asks `dispatch` one truck at a time and in a batch;
each answer names the forbid that refused it, is audited and appears in the transparency log.

The service is our own: attestation results live 3 s here, so "expired" is a wait, not a mock."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from agent.attest import attest
from agent.boot import TruckBoot, truck_boot
from agent.client import EnrollmentClient, EnrollmentRefused
from agent.request_auth import as_truck
from agent.state import AgentState
from agent.tpm import TruckTpm
from tests.support.audit import audit_rows
from tests.support.enrolling import MODEL, Operator, boot_and_enroll, new_id, new_vin
from tests.support.releases import ReleaseSigner
from tests.support.service import RunningService, running_service
from tests.support.swtpm import ManufacturerCa, running_tpms

pytestmark = pytest.mark.integration
RESULT_TTL_S = 3
UNRELEASED_MODEL = "hauler-x"  # a model with no registered release: its trucks attest as "warning"


@dataclass
class Truck:
    id: str
    tpm: TruckTpm
    state: AgentState
    log: bytes  # the event log of its measured boot
    client: EnrollmentClient  # signs its truck calls with the identity key

    def attest(self) -> str:
        return attest(self.tpm, self.client, self.state, event_log=self.log).status


@dataclass
class World:
    service: RunningService
    operator: Operator
    fleet: str
    trucks: dict[str, Truck]
    never_attested: str  # registered, never enrolled
    revoked_release: str
    broker: str  # access token of a broker contracting with `fleet`
    stranger: str  # access token of a broker with no contract


def _register_release(operator: Operator, boot: TruckBoot, version: str) -> str:
    signer = ReleaseSigner()
    key = operator.post("/v1/release-keys", {"name": f"team {version}", "public_key_pem": signer.public_pem})
    assert key.status_code == 201, key.text
    manifest = signer.manifest(MODEL, version, boot.expected_pcrs())
    created = operator.post("/v1/releases", {"key_id": key.json()["id"], "manifest": manifest})
    assert created.status_code == 201, created.text
    release_id: str = created.json()["id"]
    return release_id


def _broker(service: RunningService, fleets: list[str]) -> str:
    with service.client() as client:
        registered = client.post(
            "/v1/clients",
            json={
                "name": "broker",
                "kind": "broker",
                "organisation": "acme",
                "fleets": fleets,
                "scopes": ["decisions"],
            },
            headers=service.admin(),
        )
        assert registered.status_code == 201, registered.text
        issued = client.post(
            "/v1/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=httpx.BasicAuth(registered.json()["client_id"], registered.json()["client_secret"]),
        )
    assert issued.status_code == 200, issued.text
    access: str = issued.json()["access_token"]
    return access


@pytest.fixture(scope="module")
def world(manufacturer: ManufacturerCa, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    base = tmp_path_factory.mktemp("dispatch")
    env = {
        "WEIGHSTATION_TPM_MANUFACTURER_ROOTS": str(manufacturer.root_pem),
        "WEIGHSTATION_TPM_MANUFACTURER_INTERMEDIATES": str(manufacturer.intermediate_pem),
        "WEIGHSTATION_ATTESTATION_RESULT_TTL": f"{RESULT_TTL_S}s",
        # A model without a release may still enroll; its appraisal is then "warning".
        "WEIGHSTATION_ENROLLMENT_REQUIRE_RELEASE": "false",
    }
    plans: dict[str, tuple[str, TruckBoot]] = {
        "affirming": (MODEL, truck_boot()),
        "expired": (MODEL, truck_boot()),
        "quarantined": (MODEL, truck_boot()),
        "release-revoked": (MODEL, truck_boot(release="2026.10.0")),
        "certificate-revoked": (MODEL, truck_boot()),
        "warning": (UNRELEASED_MODEL, truck_boot(model=UNRELEASED_MODEL)),
    }
    with ExitStack() as stack:
        service = stack.enter_context(running_service(base / "data", env))
        operator = Operator(service, stack.enter_context(service.client()))
        _register_release(operator, truck_boot(), "2026.11.1")
        revoked_release = _register_release(operator, plans["release-revoked"][1], "2026.10.0")
        fleet = operator.fleet()
        enrollment = stack.enter_context(EnrollmentClient(service.url))
        tpms = stack.enter_context(
            running_tpms(base / "tpms", manufacturer, len(plans), "ecc", distinct=True)
        )
        trucks: dict[str, Truck] = {}
        for (name, (model, boot)), running in zip(plans.items(), tpms, strict=True):
            truck = new_id("truck")
            created = operator.post(
                f"/v1/fleets/{fleet}/trucks", {"id": truck, "vin": new_vin(), "model": model}
            )
            assert created.status_code == 201, created.text
            # Booted first: enrollment carries the first quote.
            enrolled = boot_and_enroll(
                stack, running.tcti, enrollment, operator.token(truck), truck, base / f"state-{name}", boot
            )
            tpm, state, measured = enrolled.tpm, enrolled.state, enrolled.measured
            trucks[name] = Truck(truck, tpm, state, measured.log, as_truck(enrollment, tpm, state))
        never = operator.truck(fleet)
        yield World(
            service,
            operator,
            fleet,
            trucks,
            never,
            revoked_release,
            _broker(service, [fleet]),
            _broker(service, []),
        )


def decide(world: World, truck: str, *, access: str | None = None) -> dict[str, Any]:
    with world.service.client() as client:
        response = client.post(
            "/v1/decisions",
            json={"action": "dispatch", "truck": truck},
            headers={"Authorization": f"Bearer {access or world.broker}"},
        )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body["truck"] == truck
    return body


def denied_by(body: dict[str, Any], policy: str) -> None:
    assert body["decision"] == "deny" and policy in body["reasons"], body


def audited(world: World, truck: str) -> list[dict[str, Any]]:
    """The decision.dispatch audit rows about `truck`, their detail parsed."""
    rows = audit_rows(f"sqlite:///{world.service.data_dir / 'weighstation.db'}", "decision.dispatch")
    return [json.loads(str(r["detail"])) for r in rows if r["target"] == truck]


def logged(world: World, truck: str, count: int) -> list[dict[str, Any]]:
    """The log's decision.dispatch entries about `truck`, read over the public API once there are
    `count` of them (the sequencer appends shortly after the commit)."""
    deadline = time.monotonic() + 15
    with world.service.client() as client:
        while True:
            size = int(client.get("/v1/log/checkpoint").text.splitlines()[1])
            documents = [
                json.loads(base64.b64decode(client.get(f"/v1/log/entries/{i}").json()["entry"]))
                for i in range(size)
            ]
            mine = [d for d in documents if d.get("truck") == truck and d["kind"] == "decision.dispatch"]
            if len(mine) >= count or time.monotonic() > deadline:
                return mine
            time.sleep(0.2)


def check_recorded(world: World, truck: str, body: dict[str, Any]) -> None:
    """The last audit row and log entry about `truck` say what the answer said."""
    rows = audited(world, truck)
    assert rows, f"no audit row for {truck}"
    assert rows[-1]["allowed"] == (body["decision"] == "allow") and rows[-1]["reasons"] == body["reasons"]
    entries = logged(world, truck, len(rows))
    assert len(entries) == len(rows), (len(entries), len(rows))
    last = entries[-1]
    assert (last["decision"], last["reasons"], last["client"]) == (
        body["decision"],
        body["reasons"],
        rows[-1]["client"],
    )
    assert last["attested_until"] == body["evaluated"]["attested_until"]


# -- one state per test ------------------------------------------------------------------------------


def test_attested_affirming_truck_is_dispatched(world: World) -> None:
    truck = world.trucks["affirming"]
    assert truck.attest() == "affirming"
    body = decide(world, truck.id)
    assert body["decision"] == "allow" and body["reasons"] == ["contracted-dispatch-attested-truck"], body
    assert body["evaluated"]["attestation_status"] == "affirming" and body["evaluated"]["attested_until"]
    check_recorded(world, truck.id, body)


def test_uncontracted_broker_is_refused_with_no_policy(world: World) -> None:
    truck = world.trucks["affirming"]
    assert truck.attest() == "affirming"
    body = decide(world, truck.id, access=world.stranger)
    assert body["decision"] == "deny" and body["reasons"] == []  # default deny: nothing permits it
    check_recorded(world, truck.id, body)


def test_expired_attestation_is_refused(world: World) -> None:
    truck = world.trucks["expired"]
    assert truck.attest() == "affirming"
    assert decide(world, truck.id)["decision"] == "allow"  # within the result's lifetime
    time.sleep(RESULT_TTL_S + 1)
    body = decide(world, truck.id)
    assert body["reasons"] == ["forbid-gate-attestation-expired"], body  # nothing else is wrong with it
    check_recorded(world, truck.id, body)


def test_never_attested_truck_is_refused(world: World) -> None:
    body = decide(world, world.never_attested)
    denied_by(body, "forbid-gate-attestation-expired")
    assert body["evaluated"]["attestation_status"] is None and body["evaluated"]["attested_until"] is None
    check_recorded(world, world.never_attested, body)


def test_quarantined_truck_is_refused(world: World) -> None:
    truck = world.trucks["quarantined"]
    # Its own evidence quarantines it: a log that does not replay to the quoted PCRs.
    with pytest.raises(EnrollmentRefused):
        attest(truck.tpm, truck.client, truck.state, event_log=truck.log + b"\x00")
    body = decide(world, truck.id)
    denied_by(body, "forbid-gate-quarantined")
    assert body["evaluated"]["quarantined"] is True and body["evaluated"]["attested_until"] is None
    check_recorded(world, truck.id, body)


def test_truck_on_a_revoked_release_is_refused(world: World) -> None:
    truck = world.trucks["release-revoked"]
    assert truck.attest() == "affirming"
    assert decide(world, truck.id)["decision"] == "allow"
    revoked = world.operator.post(
        f"/v1/releases/{world.revoked_release}/revoke", {"reason": "bootloader CVE"}
    )
    assert revoked.status_code == 200, revoked.text
    body = decide(world, truck.id)
    denied_by(body, "forbid-gate-release-revoked")
    assert body["evaluated"]["release"] == world.revoked_release and body["evaluated"]["release_revoked"]
    check_recorded(world, truck.id, body)


def test_truck_with_a_revoked_certificate_is_refused(world: World) -> None:
    truck = world.trucks["certificate-revoked"]
    assert truck.attest() == "affirming"
    serial = world.operator.truck_state(truck.id)["certificate_serial"]
    revoked = world.operator.post(f"/v1/certificates/{serial}/revoke", {"reason": "key_compromise"})
    assert revoked.status_code == 200, revoked.text
    body = decide(world, truck.id)
    denied_by(body, "forbid-gate-certificate-not-valid")
    assert body["evaluated"]["certificate_status"] == "revoked"
    check_recorded(world, truck.id, body)


def test_truck_attested_as_warning_is_refused(world: World) -> None:
    truck = world.trucks["warning"]
    assert truck.attest() == "warning"  # its model has no release to match
    body = decide(world, truck.id)
    assert body["reasons"] == ["forbid-gate-not-affirming"], body  # attested and in time, but not good
    assert body["evaluated"]["attestation_status"] == "warning"
    check_recorded(world, truck.id, body)


# -- the batch form: the same answers ---------------------------------------------------------------


def test_batch_gives_each_truck_the_answer_it_gets_alone(world: World) -> None:
    # Runs after the single-truck tests (file order): each truck is then in its final state.
    fresh = [world.trucks[name] for name in ("affirming", "warning")]
    for fresh_truck in fresh:
        fresh_truck.attest()  # back within the result's lifetime, so only its own state decides
    ids = [world.trucks[name].id for name in world.trucks] + [world.never_attested]
    with world.service.client() as client:
        response = client.post(
            "/v1/decisions/batch",
            json={"action": "dispatch", "trucks": ids},
            headers={"Authorization": f"Bearer {world.broker}"},
        )
    assert response.status_code == 200, response.text
    batch = response.json()
    alone = [decide(world, truck) for truck in ids]
    assert [b["truck"] for b in batch] == ids
    assert [(b["decision"], b["reasons"]) for b in batch] == [(a["decision"], a["reasons"]) for a in alone]
    assert batch[0]["decision"] == "allow" and all(b["decision"] == "deny" for b in batch[1:])
    by_truck = dict(zip(world.trucks, batch, strict=False))
    denied_by(by_truck["quarantined"], "forbid-gate-quarantined")
    denied_by(by_truck["release-revoked"], "forbid-gate-release-revoked")
    denied_by(by_truck["certificate-revoked"], "forbid-gate-certificate-not-valid")
    denied_by(by_truck["warning"], "forbid-gate-not-affirming")
    denied_by(by_truck["expired"], "forbid-gate-attestation-expired")
    denied_by(batch[-1], "forbid-gate-attestation-expired")
    for truck, body in zip(ids, batch, strict=True):
        # Each batch answer was audited and logged (then the single ask after it).
        rows = audited(world, truck)
        assert rows[-2]["allowed"] == (body["decision"] == "allow") and rows[-2]["reasons"] == body["reasons"]
        entries = logged(world, truck, len(rows))
        assert len(entries) == len(rows) and entries[-2]["reasons"] == body["reasons"]


@pytest.mark.parametrize(
    ("body", "what"),
    [
        ({"action": "teleport", "truck": "t"}, "an action the schema does not know"),
        ({"action": "dispatch", "truck": "t", "principal": {"type": "Operator", "id": "x"}}, "a principal"),
        (
            {"action": "dispatch", "resource": {"type": "Fleet", "id": "north"}},
            "an entity type other than a truck",
        ),
        (
            {"action": "tender.accept", "truck": "t", "tender": {"hazmat": False, "color": "red"}},
            "a tender attribute",
        ),
    ],
)
def test_malformed_decision_requests_are_refused_and_audited(
    world: World, body: dict[str, Any], what: str
) -> None:
    """The principal is the token's client and the resource a truck id: a request naming anything else
    (another principal, another entity type, an unknown action or attribute) is a 400, not a decision."""
    database = f"sqlite:///{world.service.data_dir / 'weighstation.db'}"
    before = len(audit_rows(database, "POST /v1/decisions"))
    with world.service.client() as client:
        response = client.post(
            "/v1/decisions", json=body, headers={"Authorization": f"Bearer {world.broker}"}
        )
    assert response.status_code == 400, (what, response.text)
    assert response.headers["content-type"].startswith("application/problem+json")
    rows = audit_rows(database, "POST /v1/decisions")
    assert len(rows) == before + 1 and rows[-1]["outcome"] != "success", (what, rows[-1:])
