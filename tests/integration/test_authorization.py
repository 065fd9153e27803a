"""Every route goes through one Cedar guard. Walking the served OpenAPI document: every operation refuses
an anonymous call (401 with WWW-Authenticate) unless it is public, and each public one passes only
because a named policy of public.cedar permits it; a client of the wrong kind gets 403 `forbidden`, a
token without the operation's scope 403 `insufficient-scope`, a forged token 401 `invalid-token`; each
refusal is audited once with the actor, the operation and the resource."""

from __future__ import annotations

import json
import os
import re
import secrets
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.client import EnrollmentClient
from agent.request_auth import truck_request_signer
from api.scopes import ACCESS_TOKEN_SCHEME, SCOPES
from policies import AUTHORITY, EntityRef, PolicyEngine, authority_entity
from tests.support.audit import audit_rows
from tests.support.enrolling import Operator, boot_and_enroll
from tests.support.public_operations import PUBLIC_DOCUMENTED
from tests.support.service import RunningService, weighstation_command
from tests.support.swtpm import ManufacturerCa, running_tpms

pytestmark = pytest.mark.integration

# The public operations (Anonymous passes the guard; the use case may still authenticate, e.g. the
# enrollment token or the client at the token endpoint).
PUBLIC = set(PUBLIC_DOCUMENTED)
# The truck's own operations: only its request credential opens them (and, for the statement reads,
# the truck's operators and contracted brokers).
TRUCK_SELF = {
    "issueAttestationNonce",
    "attestTruck",
    "renewTruckCertificate",
    "submitStatement",
    "getStatement",
    "getStatementChain",
    "issueEvidenceCertificate",
}
PUBLIC_POLICY_FILE = Path(__file__).parents[2] / "policies" / "public.cedar"
GUARD_CODES = {"unauthorized", "invalid-token", "forbidden", "insufficient-scope"}
ALL_SCOPES = ["admin", "fleets", "attestation:read", "decisions", "evidence:read"]


def db(service: RunningService) -> str:
    return f"sqlite:///{service.data_dir / 'weighstation.db'}"


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in {"get", "post", "put", "patch", "delete"}:
                yield operation["operationId"], method.upper(), path, operation


def concrete(path: str, truck: str = "no-such-truck") -> str:
    """A path with its parameters filled in: the guard decides before the handler looks anything up."""
    values = {"truck": truck, "index": "0", "sequence": "1", "path": "0/000", "encoded": "MAo="}
    return re.sub(r"\{(\w+)(?::\w+)?\}", lambda m: values.get(m.group(1), "x"), path)


def call(
    client: httpx.Client, method: str, path: str, headers: dict[str, str] | None = None
) -> httpx.Response:
    if method == "GET":
        return client.get(path, headers=headers)
    return client.request(method, path, json={}, headers=headers)


def code_of(response: httpx.Response) -> str | None:
    if response.headers.get("content-type", "").startswith("application/problem+json"):
        code: str = response.json()["code"]
        return code
    return None


@pytest.fixture(scope="module")
def document(service: RunningService) -> dict[str, Any]:
    with service.client() as client:
        response = client.get("/schema/openapi.json")  # itself public: public-health-and-docs
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def test_every_operation_has_an_authorization_entry_and_honest_security(document: dict[str, Any]) -> None:
    schemes = document["components"]["securitySchemes"]
    assert "adminBearer" not in schemes and schemes[ACCESS_TOKEN_SCHEME]["type"] == "oauth2"
    scopes = schemes[ACCESS_TOKEN_SCHEME]["flows"]["clientCredentials"]["scopes"]
    for operation_id, _, _, operation in operations(document):
        assert operation_id in SCOPES, f"{operation_id} has no scope entry"
        wanted = SCOPES[operation_id]
        documented = [
            s
            for requirement in operation.get("security", [])
            for s in requirement.get(ACCESS_TOKEN_SCHEME, [])
        ]
        assert set(documented) == (wanted or set()), operation_id
        assert set(documented) <= set(scopes)


def test_anonymous_calls_are_refused_except_public_operations(
    service: RunningService, document: dict[str, Any]
) -> None:
    passed: set[str] = set()
    with service.client() as client:
        for operation_id, method, path, operation in operations(document):
            response = call(client, method, concrete(path))
            code = code_of(response)
            if code == "unauthorized":
                assert response.status_code == 401, operation_id
                assert response.headers["www-authenticate"].startswith("Bearer"), operation_id
                # The reason names the credential the operation takes, as its OpenAPI security says.
                schemes = {name for requirement in operation.get("security", []) for name in requirement}
                detail = response.json()["detail"]
                assert ("truck-request+jwt" in detail) == ("truckRequest" in schemes), (operation_id, detail)
                assert ("access token" in detail) == (schemes != {"truckRequest"}), (operation_id, detail)
            else:
                assert code not in GUARD_CODES, (operation_id, response.text)
                passed.add(operation_id)
    assert passed == PUBLIC


def test_each_public_operation_is_allowed_by_a_named_public_policy(document: dict[str, Any]) -> None:
    public_ids = set(re.findall(r'@id\("([^"]+)"\)', PUBLIC_POLICY_FILE.read_text()))
    engine = PolicyEngine.from_directory()
    anonymous = EntityRef("Anonymous", "anonymous")
    entities = engine.entities([authority_entity(), {"uid": anonymous.json(), "attrs": {}, "parents": []}])
    documented = {operation_id for operation_id, *_ in operations(document)}
    assert documented >= PUBLIC
    for operation_id in PUBLIC | {"getOpenApi", "getMetrics", "options"}:
        decision = engine.decide(anonymous, operation_id, AUTHORITY, None, entities)
        assert decision.allowed and decision.reasons, operation_id
        assert set(decision.reasons) <= public_ids, (operation_id, decision.reasons)


def test_metrics_and_the_document_are_public_but_guarded(service: RunningService) -> None:
    with service.client() as client:
        assert client.get("/metrics").status_code == 200
        assert client.options("/v1/fleets").status_code == 204


def test_a_client_of_the_wrong_kind_is_forbidden_everywhere_it_has_no_policy(
    service: RunningService, document: dict[str, Any]
) -> None:
    with service.client() as client:
        # Every scope, so only Cedar stands between them and the operation.
        insurer = service.client_token(name="insurer", kind="insurer", scopes=ALL_SCOPES)
        broker = service.client_token(name="broker", kind="broker", scopes=ALL_SCOPES)
        protected = [op for op in operations(document) if op[0] not in PUBLIC]
        for who, token, allowed in (
            ("insurer", insurer, set()),
            ("broker", broker, {"decide", "decideBatch"}),
        ):
            for operation_id, method, path, _ in protected:
                response = call(client, method, concrete(path), {"Authorization": f"Bearer {token}"})
                if operation_id in allowed:
                    assert code_of(response) not in GUARD_CODES, (who, operation_id, response.text)
                    continue
                assert (response.status_code, code_of(response)) == (403, "forbidden"), (who, operation_id)
        refused = client.post(
            "/v1/clients",
            json={"name": "x", "kind": "broker", "organisation": "o"},
            headers={"Authorization": f"Bearer {broker}"},
        )
    assert refused.status_code == 403 and refused.json()["reasons"] == []
    assert "no policy permits it" in refused.json()["detail"]


def test_the_global_admin_passes_the_guard_on_operator_operations(
    service: RunningService, document: dict[str, Any]
) -> None:
    with service.client() as client:
        for operation_id, method, path, _ in operations(document):
            if operation_id in PUBLIC or operation_id in {"rotateCa", "rotateAccessTokenKey"}:
                continue
            response = call(client, method, concrete(path), service.admin())
            if operation_id in {"decide", "decideBatch"}:  # brokers and TMSs ask, not operators
                assert code_of(response) in {"forbidden", "insufficient-scope"}, operation_id
            elif operation_id in TRUCK_SELF - {"getStatement", "getStatementChain"}:
                assert code_of(response) == "forbidden", operation_id  # only the truck acts as itself
            else:
                assert code_of(response) not in GUARD_CODES, (operation_id, response.text)


def test_fleet_operator_manages_only_its_fleets(service: RunningService) -> None:
    north, south = f"north-{secrets.token_hex(3)}", f"south-{secrets.token_hex(3)}"
    with service.client() as client:
        for fleet in (north, south):
            assert (
                client.post(
                    "/v1/fleets", json={"id": fleet, "name": fleet}, headers=service.admin()
                ).status_code
                == 201
            )
        operator = service.client_token(
            name="north ops", kind="operator", fleets=[north], scopes=["fleets", "admin"]
        )
        auth = {"Authorization": f"Bearer {operator}"}
        assert client.get(f"/v1/fleets/{north}", headers=auth).status_code == 200
        other = client.get(f"/v1/fleets/{south}", headers=auth)
        rotate = client.post("/v1/ca/rotate", headers=auth)
    assert (other.status_code, other.json()["code"]) == (403, "forbidden")
    assert (rotate.status_code, rotate.json()["code"]) == (403, "forbidden")  # not a global admin


def test_a_token_without_the_operation_scope_is_refused(service: RunningService) -> None:
    with service.client() as client:
        reader = service.client_token(name="reader", kind="operator", global_admin=True, scopes=["fleets"])
        response = client.get("/v1/clients", headers={"Authorization": f"Bearer {reader}"})
        listed = client.get("/v1/fleets", headers={"Authorization": f"Bearer {reader}"})
    assert (response.status_code, response.json()["code"]) == (403, "insufficient-scope")
    assert 'error="insufficient_scope"' in response.headers["www-authenticate"]
    assert 'scope="admin"' in response.headers["www-authenticate"]
    assert listed.status_code == 200


def test_a_forged_access_token_is_refused(service: RunningService) -> None:
    good = service.admin_token()
    header, payload, signature = good.split(".")
    forged = f"{header}.{payload}.{signature[:-4]}AAAA"
    with service.client() as client:
        response = client.get("/v1/fleets", headers={"Authorization": f"Bearer {forged}"})
        public = client.get("/v1/ca/bundle", headers={"Authorization": f"Bearer {forged}"})
    assert (response.status_code, response.json()["code"]) == (401, "invalid-token")
    assert 'error="invalid_token"' in response.headers["www-authenticate"]
    assert public.status_code == 401  # a credential that is presented is checked, even where none is needed


def test_each_refusal_is_audited_once_with_actor_operation_and_resource(service: RunningService) -> None:
    truck = f"audit-{secrets.token_hex(4)}"
    with service.client() as client:
        insurer = service.client_token(name="auditee", kind="insurer", scopes=ALL_SCOPES)
        forbidden = client.get(f"/v1/trucks/{truck}", headers={"Authorization": f"Bearer {insurer}"})
        anonymous = client.get(f"/v1/trucks/{truck}/attestation")
    assert forbidden.status_code == 403 and anonymous.status_code == 401
    rows = [r for r in audit_rows(db(service)) if r["target"] == f"Truck::{truck}"]
    assert [(r["action"], r["code"], r["outcome"]) for r in rows] == [
        ("getTruck", "forbidden", "refused"),
        ("getAttestationStatus", "unauthorized", "refused"),
    ]
    assert str(rows[0]["actor"]).startswith("client:") and rows[1]["actor"] == "anonymous"


Signed = Callable[[str, str], dict[str, str]]


def signing_truck(
    stack: ExitStack, service: RunningService, manufacturer: ManufacturerCa, tmp_path: Path
) -> tuple[httpx.Client, Operator, str, str, Signed]:
    """A truck enrolled on a booted swtpm (and a second one registered in its fleet, not enrolled): the
    operator's client, the operator, both ids, and the first truck's request-JWT signer."""
    http = stack.enter_context(service.client())
    operator = Operator(service, http)
    operator.golden_release()
    fleet = operator.fleet()
    other = operator.truck(fleet)
    (running,) = stack.enter_context(running_tpms(tmp_path / "tpms", manufacturer, 1, "ecc", distinct=True))
    truck = operator.truck(fleet)
    agent = stack.enter_context(EnrollmentClient(service.url))
    enrolled = boot_and_enroll(stack, running.tcti, agent, operator.token(truck), truck, tmp_path / "state")
    tpm, state = enrolled.tpm, enrolled.state
    signer = truck_request_signer(tpm, state, audience=service.url)

    def signed(method: str, path: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {signer(method, service.url + path)}"}

    return http, operator, truck, other, signed


def test_a_truck_acts_on_its_own_record_only(
    enrolling: RunningService, manufacturer: ManufacturerCa, tmp_path: Path
) -> None:
    """A truck's request JWT (TPM identity key) makes it the principal Truck::<id>: its own operations
    pass, another truck's records and operator operations are forbidden, a replayed JWT is refused."""
    with ExitStack() as stack:
        http, _, truck, other, signed = signing_truck(stack, enrolling, manufacturer, tmp_path)
        own_path = f"/v1/trucks/{truck}/attestation-nonces"
        own_headers = signed("POST", own_path)
        own = http.post(own_path, json={"purpose": "attest"}, headers=own_headers)
        replayed = http.post(own_path, json={"purpose": "attest"}, headers=own_headers)
        foreign_path = f"/v1/trucks/{other}/attestation-nonces"
        foreign = http.post(foreign_path, json={"purpose": "attest"}, headers=signed("POST", foreign_path))
        operator_call = http.get(f"/v1/trucks/{truck}", headers=signed("GET", f"/v1/trucks/{truck}"))
    assert own.status_code == 201, own.text
    assert (replayed.status_code, replayed.json()["code"]) == (401, "invalid-token")
    assert (foreign.status_code, foreign.json()["code"]) == (403, "forbidden")
    assert f"Truck::{truck} may not issueAttestationNonce on Truck::{other}" in foreign.json()["detail"]
    assert (operator_call.status_code, operator_call.json()["code"]) == (403, "forbidden")
    rows = [
        r for r in audit_rows(db(enrolling)) if r["target"] == f"Truck::{other}" and r["code"] == "forbidden"
    ]
    assert [(r["actor"], r["action"]) for r in rows] == [(f"truck:{truck}", "issueAttestationNonce")]


def test_every_truck_operation_refuses_unsigned_calls_and_other_trucks(
    enrolling: RunningService, manufacturer: ManufacturerCa, tmp_path: Path
) -> None:
    """On an enrolled truck's own routes a call without its credential is 401; its valid request JWT on
    another truck's routes is 403 (no policy lets a truck act on another's record); both audited."""
    with ExitStack() as stack:
        http, _, truck, other, signed = signing_truck(stack, enrolling, manufacturer, tmp_path)
        document = http.get("/schema/openapi.json").json()
        checked: set[str] = set()
        for operation_id, method, path, _ in operations(document):
            if operation_id not in TRUCK_SELF:
                continue
            own = concrete(path, truck)
            unsigned = call(http, method, own)
            assert (unsigned.status_code, code_of(unsigned)) == (401, "unauthorized"), (
                operation_id,
                unsigned.text,
            )
            assert unsigned.headers["www-authenticate"].startswith("Bearer"), operation_id
            foreign = concrete(path, other)
            response = call(http, method, foreign, signed(method, foreign))
            assert (response.status_code, code_of(response)) == (403, "forbidden"), (
                operation_id,
                response.text,
            )
            checked.add(operation_id)
    assert checked == TRUCK_SELF
    refusals = {
        (r["actor"], r["action"], r["code"])
        for r in audit_rows(db(enrolling))
        if r["target"] in {f"Truck::{truck}", f"Truck::{other}"}
    }
    assert {("anonymous", op, "unauthorized") for op in TRUCK_SELF} <= refusals
    assert {(f"truck:{truck}", op, "forbidden") for op in TRUCK_SELF} <= refusals


def test_bootstrap_cli_creates_a_client_and_refuses_the_old_admin_token(tmp_path: Path) -> None:
    env = {**os.environ, "WEIGHSTATION_DATA_DIR": str(tmp_path / "data")}
    env.pop("WEIGHSTATION_DATABASE_URL", None)

    def create(*args: str, extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*weighstation_command(), "client", "create", *args],
            env={**env, **(extra or {})},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    created = create("--kind", "operator", "--name", "Ops root", "--global-admin")
    assert created.returncode == 0, created.stderr
    body = json.loads(created.stdout)
    assert body["global_admin"] and body["scopes"] == ["admin", "attestation:read", "fleets"]
    stored = sqlite3.connect(tmp_path / "data" / "weighstation.db").execute(
        "SELECT secret_hash, registered_by FROM oauth_clients WHERE id = ?", (body["client_id"],)
    )
    secret_hash, registered_by = stored.fetchone()
    assert secret_hash.startswith("scrypt$") and body["client_secret"] not in secret_hash
    assert str(registered_by).startswith("cli:")

    old = create("--kind", "operator", "--name", "x", extra={"WEIGHSTATION_ADMIN_TOKEN": "secret"})
    assert old.returncode == 2 and "WEIGHSTATION_ADMIN_TOKEN is no longer supported" in old.stderr
    broker_admin = create("--kind", "broker", "--name", "b", "--global-admin")
    assert broker_admin.returncode == 2 and "operators only" in broker_admin.stderr
    unknown_fleet = create("--kind", "broker", "--name", "b", "--fleet", "nowhere")
    assert unknown_fleet.returncode == 1 and "unknown-fleet" in unknown_fleet.stderr


def test_an_upload_that_locks_operators_out_is_undone_on_the_box(service: RunningService) -> None:
    """Everything is reachable only through policies, so a set without the operators' grants locks
    them out, over HTTP too; `weighstation policy reset` on the box brings the shipped set back."""
    with service.client() as client:
        locked = client.post(
            "/v1/policies", json={"text": PUBLIC_POLICY_FILE.read_text()}, headers=service.admin()
        )
        assert locked.status_code == 201, locked.text
        refused = client.get("/v1/policies", headers=service.admin())
        assert (refused.status_code, refused.json()["code"]) == (403, "forbidden")
        assert client.get("/v1/log/checkpoint").status_code == 200  # public.cedar is still in force
        reset = subprocess.run(
            [*weighstation_command(), "policy", "reset"],
            env=service.env,  # the same settings as `serve`
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert reset.returncode == 0, reset.stderr
        deadline = time.monotonic() + 10  # replicas pick the latest version up within 2 s
        while (back := client.get("/v1/policies", headers=service.admin())).status_code != 200:
            assert time.monotonic() < deadline, back.text
            time.sleep(0.2)
    assert back.json()["uploaded_by"].startswith("cli:")
    assert "operator-global-admin" in back.json()["text"]
