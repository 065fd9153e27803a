"""Truck statements over HTTP with real swtpm trucks: a truck signs two mission manifests and a telemetry
snapshot with its TPM identity key, chained; each receipt verifies with tlog alone. Each negative changes
one thing about a good submission and is refused with its own problem code, audited, with nothing
stored; a fork is refused and marked on the truck's chain. The agent CLI does it all end to end."""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import secrets
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import rfc8785
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import text

from agent.client import EnrollmentClient
from agent.request_auth import TruckRequestSigner, truck_request_signer
from agent.state import AgentState
from agent.tpm import TruckTpm
from api.services import Services
from api.settings import load_settings
from provision.audit import Actor
from provision.db import make_engine
from provision.errors import StatementCertificateExpired, StatementCertificateRevoked, UnknownStatement
from tests.support.audit import audit_rows, count_rows
from tests.support.enrolling import Operator, boot_and_enroll, cli_boot_and_enroll
from tests.support.postgres import scratch_database
from tests.support.service import RunningService, running_service, ws
from tests.support.swtpm import ManufacturerCa, RunningTpm, running_tpms
from tlog.checkpoint import VerifiedCheckpoint, verify_checkpoint
from tlog.merkle import leaf_hash
from tlog.note import VerifierKey
from tlog.statement import StatementCheckpoint, StatementKind, build_statement, statement_hash

pytestmark = pytest.mark.integration
ACTION = "truck.statement.submit"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def db(service: RunningService) -> str:
    return f"sqlite:///{service.data_dir / 'weighstation.db'}"


def log_key(client: httpx.Client) -> VerifierKey:
    return VerifierKey.parse(client.get("/v1/log/key").text.strip())


def in_process(service: RunningService) -> Services:
    """The use cases on the running service's data dir, in this process (close it after use)."""
    env = {"WEIGHSTATION_DATA_DIR": str(service.data_dir), "WEIGHSTATION_TRUST_DOMAIN": "fleet.test"}
    return Services.open(load_settings(env), bootstrap=False)


def latest(client: httpx.Client) -> VerifiedCheckpoint:
    key = log_key(client)
    return verify_checkpoint(client.get("/v1/log/checkpoint").content, [key], origin=key.name)


@dataclass
class Truck:
    id: str
    tpm: TruckTpm
    state: AgentState
    service: RunningService
    signer: TruckRequestSigner  # its request JWTs (TPM identity key): the truck's own calls are signed

    def auth(self, method: str, path: str) -> dict[str, str]:
        """The Authorization header of one truck call (a fresh single-use JWT)."""
        return {"Authorization": f"Bearer {self.signer(method, self.service.public_url + path)}"}

    @property
    def chain_pem(self) -> str:
        assert self.state.certificate_pem is not None
        return self.state.certificate_pem.decode()

    @property
    def serial(self) -> str:
        assert self.state.certificate_pem is not None
        return format(x509.load_pem_x509_certificate(self.state.certificate_pem).serial_number, "x")

    def sign(self, data: bytes) -> bytes:
        return self.tpm.identity_signer(self.state.identity).sign(data, ec.ECDSA(hashes.SHA256()))

    def statement(
        self,
        sequence: int,
        previous: bytes | None,
        *,
        kind: StatementKind = "mission_manifest",
        payload: bytes = b"load 42: Hamburg -> Rotterdam",
        truck: str | None = None,
        checkpoint: StatementCheckpoint | None = None,
    ) -> bytes:
        if checkpoint is None:
            with self.service.client() as client:
                seen = latest(client)
            checkpoint = StatementCheckpoint(seen.origin, seen.size, seen.root_hash)
        return build_statement(
            name=f"{kind}-{sequence}.json",
            payload_sha256=hashlib.sha256(payload).digest(),
            kind=kind,
            truck=truck or self.id,
            sequence=sequence,
            previous=previous,
            checkpoint=checkpoint,
            issued_at=datetime.now(UTC),
        )

    def post(
        self,
        data: bytes,
        *,
        signature: bytes | None = None,
        chain_pem: str | None = None,
        path_truck: str | None = None,
        sent_by: Truck | None = None,
    ) -> httpx.Response:
        """POST a statement to this truck's chain (or `path_truck`'s), signed for `sent_by` (this truck)."""
        body = {
            "statement": b64(data),
            "signature": b64(signature if signature is not None else self.sign(data)),
            "certificate_chain_pem": chain_pem or self.chain_pem,
        }
        path = f"/v1/trucks/{path_truck or self.id}/statements"
        with self.service.client() as client:
            return client.post(path, json=body, headers=(sent_by or self).auth("POST", path))

    def submit(self, data: bytes) -> dict[str, Any]:
        response = self.post(data)
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    def get(self, path: str) -> httpx.Response:
        """GET one of this truck's records as the truck."""
        with self.service.client() as client:
            return client.get(path, headers=self.auth("GET", path))

    def chain(self) -> dict[str, Any]:
        response = self.get(f"/v1/trucks/{self.id}/statements")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


Trucks = Callable[..., Truck]


def make_trucks(
    stack: ExitStack, service: RunningService, manufacturer: ManufacturerCa, tmp_path: Path
) -> Trucks:
    """Trucks enrolled on their own swtpm, booted first (the enrollment's first quote covers the boot)."""
    operator = Operator(service, stack.enter_context(service.client()))
    operator.golden_release()
    client = stack.enter_context(EnrollmentClient(service.url))
    count = itertools.count()

    def make() -> Truck:
        i = next(count)
        (running,) = stack.enter_context(
            running_tpms(tmp_path / f"tpms-{i}", manufacturer, 1, "ecc", distinct=True)
        )
        truck = operator.truck()
        enrolled = boot_and_enroll(
            stack, running.tcti, client, operator.token(truck), truck, tmp_path / f"state-{i}"
        )
        tpm, state = enrolled.tpm, enrolled.state
        signer = truck_request_signer(tpm, state, audience=service.public_url)
        return Truck(truck, tpm, state, service, signer)

    return make


@pytest.fixture
def trucks(enrolling: RunningService, manufacturer: ManufacturerCa, tmp_path: Path) -> Iterator[Trucks]:
    with ExitStack() as stack:
        yield make_trucks(stack, enrolling, manufacturer, tmp_path)


def verify_receipt(body: dict[str, Any], data: bytes, truck: Truck, key: VerifierKey) -> VerifiedCheckpoint:
    """What an insurer checks with tlog alone: the entry is the statement signed by the truck's key, the
    leaf is the entry's, the checkpoint is the log's, the proof leads to its root."""
    receipt = body["receipt"]
    assert body["status"] == "sequenced"
    assert body["statement_sha256"] == statement_hash(data).hex()
    entry = unb64(receipt["entry"])
    logged = json.loads(entry)
    assert logged["kind"] == "truck.statement"
    assert unb64(logged["statement"]) == data
    identity = truck.tpm.identity_signer(truck.state.identity).public_key()
    identity.verify(unb64(logged["signature"]), data, ec.ECDSA(hashes.SHA256()))
    assert unb64(receipt["leaf_hash"]) == leaf_hash(entry)
    assert VerifierKey.parse(receipt["log_key"]) == key
    checkpoint = verify_checkpoint(receipt["checkpoint"].encode(), [key], origin=key.name)
    checkpoint.verify_inclusion(
        leaf_hash(entry), receipt["index"], [unb64(h) for h in receipt["inclusion_proof"]]
    )
    return checkpoint


# -- the path that works ---------------------------------------------------------------------------


def test_two_manifests_and_a_snapshot_chain_and_their_receipts_verify(trucks: Trucks) -> None:
    truck = trucks()
    with truck.service.client() as client:
        key = log_key(client)
    first = truck.statement(1, None)
    second = truck.statement(2, statement_hash(first), payload=b"load 43: Rotterdam -> Antwerp")
    third = truck.statement(3, statement_hash(second), kind="telemetry_snapshot", payload=b"odometer 812345")
    indices = []
    for sequence, data in enumerate((first, second, third), start=1):
        body = truck.submit(data)
        assert (body["truck"], body["sequence"]) == (truck.id, sequence)
        assert body["certificate_status"] == "good" and body["certificate_serial"] == truck.serial
        assert body["receipt_url"] == f"/v1/trucks/{truck.id}/statements/{sequence}"
        checkpoint = verify_receipt(body, data, truck, key)
        # The checkpoint named in the statement is a not-before bound: the receipt's is not older.
        assert checkpoint.size > json.loads(data)["predicate"]["checkpoint"]["size"]
        indices.append(body["receipt"]["index"])
    assert indices == sorted(indices) and len(set(indices)) == 3
    chain = truck.chain()
    assert (chain["sequence"], chain["head_sha256"]) == (3, statement_hash(third).hex())
    assert chain["chain_broken_at"] is None and chain["forks"] == []
    # Read back by sequence: the same receipt, the exact bytes, signature and chain.
    again = truck.get(f"/v1/trucks/{truck.id}/statements/2").json()
    assert unb64(again["statement"]) == second
    assert again["certificate_chain_pem"] == truck.chain_pem
    assert again["kind"] == "mission_manifest" and again["receipt"]["index"] == indices[1]
    verify_receipt(again, second, truck, key)


def test_the_same_statement_twice_gets_the_first_receipt(trucks: Trucks) -> None:
    truck = trucks()
    data = truck.statement(1, None)
    first = truck.submit(data)
    # A fresh TPM signature (ECDSA signatures differ each time) over the same bytes: the first receipt.
    again = truck.post(data)
    assert again.status_code == 200, again.text
    assert again.json()["receipt"] == first["receipt"]
    assert truck.chain()["sequence"] == 1
    assert count_rows(db(truck.service), "truck_statements WHERE truck_id = '" + truck.id + "'") == 1


# -- refusals: one thing changed each --------------------------------------------------------------


def stored(service: RunningService) -> tuple[int, int]:
    """Statements stored, and statement entries logged or waiting for the log."""
    url = db(service)
    logged = count_rows(url, "tlog_entries WHERE kind = 'truck.statement'")
    waiting = count_rows(url, "tlog_pending WHERE kind = 'truck.statement'")
    return count_rows(url, "truck_statements"), logged + waiting


def refused(truck: Truck, response: httpx.Response, status: int, code: str, before: tuple[int, int]) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == code
    rows = [r for r in audit_rows(db(truck.service), ACTION) if r["code"] == code and r["target"] == truck.id]
    assert len(rows) == 1 and rows[0]["outcome"] == "refused", rows
    assert stored(truck.service) == before


@pytest.fixture
def chained(trucks: Trucks) -> tuple[Truck, bytes]:
    """A truck whose chain holds statement 1; the statement's bytes."""
    truck = trucks()
    data = truck.statement(1, None)
    truck.submit(data)
    return truck, data


def test_bad_signature_is_refused(chained: tuple[Truck, bytes]) -> None:
    truck, first = chained
    before = stored(truck.service)
    data = truck.statement(2, statement_hash(first))
    other = truck.sign(data.replace(b"mission_manifest-2", b"mission_manifest-X"))
    refused(truck, truck.post(data, signature=other), 403, "statement-signature-invalid", before)


def test_skipped_sequence_is_refused(chained: tuple[Truck, bytes]) -> None:
    truck, first = chained
    before = stored(truck.service)
    data = truck.statement(3, statement_hash(first))
    refused(truck, truck.post(data), 409, "statement-sequence-gap", before)
    assert truck.chain()["chain_broken_at"] is None


def test_repeated_sequence_with_other_content_is_a_fork(chained: tuple[Truck, bytes]) -> None:
    truck, first = chained
    before = stored(truck.service)
    other = truck.statement(1, None, payload=b"another load 42")
    refused(truck, truck.post(other), 409, "statement-fork", before)
    chain = truck.chain()
    assert chain["sequence"] == 1 and chain["head_sha256"] == statement_hash(first).hex()
    assert chain["chain_broken_at"] is not None
    (fork,) = chain["forks"]
    assert fork["sequence"] == 1
    assert fork["refused_sha256"] == statement_hash(other).hex()
    assert fork["held_sha256"] == statement_hash(first).hex()
    (row,) = [r for r in audit_rows(db(truck.service), ACTION) if r["code"] == "statement-fork"]
    detail = json.loads(str(row["detail"]))
    assert (detail["refused_sha256"], detail["held_sha256"]) == (fork["refused_sha256"], fork["held_sha256"])


def test_wrong_previous_hash_is_a_fork(chained: tuple[Truck, bytes]) -> None:
    truck, first = chained
    before = stored(truck.service)
    wrong = hashlib.sha256(first + b"x").digest()
    refused(truck, truck.post(truck.statement(2, wrong)), 409, "statement-fork", before)
    chain = truck.chain()
    assert chain["chain_broken_at"] is not None
    assert chain["forks"][0]["previous"] == wrong.hex()
    assert chain["forks"][0]["held_sha256"] == statement_hash(first).hex()
    # The chain still takes the right statement 2.
    truck.submit(truck.statement(2, statement_hash(first)))
    assert truck.chain()["sequence"] == 2


def test_unknown_kind_is_refused(chained: tuple[Truck, bytes]) -> None:
    truck, first = chained
    before = stored(truck.service)
    document = json.loads(truck.statement(2, statement_hash(first)))
    document["predicate"]["kind"] = "fuel_receipt"
    data = rfc8785.dumps(document)
    refused(truck, truck.post(data), 422, "statement-kind-unknown", before)


def test_checkpoint_the_log_never_signed_is_refused(chained: tuple[Truck, bytes]) -> None:
    truck, first = chained
    before = stored(truck.service)
    with truck.service.client() as client:
        seen = latest(client)
    forged = StatementCheckpoint(seen.origin, seen.size, hashlib.sha256(b"not our root").digest())
    data = truck.statement(2, statement_hash(first), checkpoint=forged)
    refused(truck, truck.post(data), 422, "statement-checkpoint-unknown", before)


def test_statement_for_another_truck_is_refused(trucks: Trucks) -> None:
    truck, other = trucks(), trucks()
    before = stored(truck.service)
    # Signed by this truck, naming the other one, sent to this truck's chain ...
    data = truck.statement(1, None, truck=other.id)
    refused(truck, truck.post(data), 403, "statement-wrong-truck", before)
    # ... sent to the other truck's chain with this truck's credential: the guard refuses it ...
    response = truck.post(data, path_truck=other.id)
    assert response.status_code == 403 and response.json()["code"] == "forbidden"
    # ... and by the other truck, carrying this truck's certificate: not the chain's truck.
    response = truck.post(data, path_truck=other.id, sent_by=other)
    assert response.status_code == 403 and response.json()["code"] == "statement-certificate-invalid"
    assert stored(truck.service) == before
    assert other.chain()["sequence"] == 0


def test_revoked_certificate_is_refused(chained: tuple[Truck, bytes]) -> None:
    truck, first = chained
    before = stored(truck.service)
    with truck.service.client() as client:
        revoked = client.post(
            f"/v1/certificates/{truck.serial}/revoke",
            json={"reason": "key_compromise"},
            headers=truck.service.admin(),
        )
    assert revoked.status_code == 200, revoked.text
    # The truck authenticates with that certificate: the guard refuses the call before the use case.
    response = truck.post(truck.statement(2, statement_hash(first)))
    assert (response.status_code, response.json()["code"]) == (401, "invalid-token"), response.text
    assert "revoked" in response.json()["detail"]
    assert stored(truck.service) == before
    # Behind the guard the use case refuses it too, for its own reason, audited (what any other
    # authenticated path into it would meet).
    services = in_process(truck.service)
    try:
        data = truck.statement(2, statement_hash(first))
        with pytest.raises(StatementCertificateRevoked):
            services.statements.submit(Actor("test"), truck.id, data, truck.sign(data), truck.chain_pem)
    finally:
        services.close()
    refused_rows = [r for r in audit_rows(db(truck.service), ACTION) if r["target"] == truck.id]
    assert refused_rows[-1]["code"] == "statement-certificate-revoked"
    assert stored(truck.service) == before
    # The statement accepted before the revocation keeps its receipt.
    with truck.service.client() as client:
        path = f"/v1/trucks/{truck.id}/statements/1"
        assert client.get(path, headers=truck.service.admin()).json()["status"] == "sequenced"


@pytest.fixture(scope="module")
def short_lived(
    tmp_path_factory: pytest.TempPathFactory, manufacturer: ManufacturerCa
) -> Iterator[RunningService]:
    """The service issuing truck certificates valid for a few seconds."""
    env = {
        "WEIGHSTATION_TPM_MANUFACTURER_ROOTS": str(manufacturer.root_pem),
        "WEIGHSTATION_TPM_MANUFACTURER_INTERMEDIATES": str(manufacturer.intermediate_pem),
        "WEIGHSTATION_TRUCK_CERT_TTL": "8s",
    }
    with running_service(tmp_path_factory.mktemp("short") / "data", env) as running:
        yield running


def test_expired_certificate_is_refused(
    short_lived: RunningService, manufacturer: ManufacturerCa, tmp_path: Path
) -> None:
    with ExitStack() as stack:
        truck = make_trucks(stack, short_lived, manufacturer, tmp_path)()
        assert truck.state.certificate_pem is not None
        not_after = x509.load_pem_x509_certificate(truck.state.certificate_pem).not_valid_after_utc
        data = truck.statement(1, None)
        signature = truck.sign(data)
        before = stored(short_lived)
        while datetime.now(UTC) <= not_after:
            time.sleep(0.5)
        # The truck's credential is that certificate: the guard refuses the call, nothing is stored.
        response = truck.post(data, signature=signature)
        assert (response.status_code, response.json()["code"]) == (401, "invalid-token"), response.text
        assert "expired" in response.json()["detail"]
        assert stored(short_lived) == before
        # Behind the guard the use case refuses it too, for its own reason, audited.
        services = in_process(short_lived)
        try:
            with pytest.raises(StatementCertificateExpired):
                services.statements.submit(Actor("test"), truck.id, data, signature, truck.chain_pem)
        finally:
            services.close()
        rows = [r for r in audit_rows(db(short_lived), ACTION) if r["target"] == truck.id]
        assert (rows[-1]["outcome"], rows[-1]["code"]) == ("refused", "statement-certificate-expired")
        assert stored(short_lived) == before


def test_malformed_bodies_are_problems(chained: tuple[Truck, bytes]) -> None:
    truck, first = chained
    before = stored(truck.service)
    data = truck.statement(2, statement_hash(first))
    # Not canonical: the same statement with a space.
    spaced = json.dumps(json.loads(data), ensure_ascii=False).encode()
    refused(truck, truck.post(spaced), 422, "statement-not-canonical", before)
    # A chain that is not ours.
    response = truck.post(data, chain_pem="-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    assert response.status_code == 403 and response.json()["code"] == "statement-certificate-invalid"
    missing = truck.get(f"/v1/trucks/{truck.id}/statements/9")
    with truck.service.client() as client:
        unknown_truck = client.get("/v1/trucks/no-such-truck/statements", headers=truck.service.admin())
    assert missing.status_code == 404 and missing.json()["code"] == "unknown-statement"
    assert unknown_truck.status_code == 404 and unknown_truck.json()["code"] == "unknown-truck"
    assert stored(truck.service) == before


# -- the agent on the command line -----------------------------------------------------------------


def test_agent_submit_on_the_command_line(enrolling: RunningService, tpm: RunningTpm, tmp_path: Path) -> None:
    state = tmp_path / "truck-state"
    server = ["--tpm", tpm.tcti, "--server", enrolling.url, "--state", str(state)]
    with enrolling.client() as client:
        operator = Operator(enrolling, client)
        operator.golden_release()
        # Boot first: enrollment's first quote covers the boot its event log records.
        truck = operator.truck()
        cli_boot_and_enroll(tpm.tcti, server, operator.token(truck), tmp_path / "boot")
        key = log_key(client)
    manifest = tmp_path / "manifest.json"
    manifest.write_text('{"load": 42, "from": "Hamburg", "to": "Rotterdam"}')
    snapshot = tmp_path / "telemetry.bin"
    snapshot.write_bytes(secrets.token_bytes(300))
    outputs = []
    for kind, payload in (
        ("mission_manifest", manifest),
        ("mission_manifest", manifest),
        ("telemetry_snapshot", snapshot),
    ):
        done = ws("agent", "submit", *server, "--kind", kind, "--payload", str(payload))
        assert done.returncode == 0, done.stderr
        outputs.append(json.loads(done.stdout))
    assert [o["sequence"] for o in outputs] == [1, 2, 3]
    assert outputs[0]["verified"]["log_key"] == "first-use" and outputs[1]["verified"]["log_key"] == "pinned"
    assert outputs[2]["payload_sha256"] == hashlib.sha256(snapshot.read_bytes()).hexdigest()
    for previous, current in itertools.pairwise(outputs):
        statement = json.loads(unb64(current["statement"]))
        assert statement["predicate"]["previous"] == previous["statement_sha256"]
    assert json.loads((state / "statements.json").read_text()) == {
        "sequence": 3,
        "previous": outputs[2]["statement_sha256"],
        "log_key": str(key),
    }
    chain_pem = (state / "identity.crt").read_text()
    assert not (state / "statement-pending.json").exists()
    # Each printed receipt verifies with tlog alone.
    for output in outputs:
        receipt = output["receipt"]
        entry = unb64(receipt["entry"])
        checkpoint = verify_checkpoint(receipt["checkpoint"].encode(), [key], origin=key.name)
        checkpoint.verify_inclusion(
            leaf_hash(entry), receipt["index"], [unb64(h) for h in receipt["inclusion_proof"]]
        )
        assert unb64(json.loads(entry)["statement"]) == unb64(output["statement"])
    # A run that died after the server accepted statement 4, before recording it: the next run submits
    # the pending statement again (the server answers with its first receipt), then its own as 5.
    with TruckTpm.open(tpm.tcti) as device, enrolling.client() as client:
        agent_state = AgentState.load(state)
        identity = device.identity_signer(agent_state.identity)
        seen = latest(client)
        four = build_statement(
            name="manifest.json",
            payload_sha256=hashlib.sha256(manifest.read_bytes()).digest(),
            kind="mission_manifest",
            truck=truck,
            sequence=4,
            previous=bytes.fromhex(outputs[2]["statement_sha256"]),
            checkpoint=StatementCheckpoint(seen.origin, seen.size, seen.root_hash),
            issued_at=datetime.now(UTC),
        )
        signature = identity.sign(four, ec.ECDSA(hashes.SHA256()))
        body = {"statement": b64(four), "signature": b64(signature), "certificate_chain_pem": chain_pem}
        path = f"/v1/trucks/{truck}/statements"
        request_jwt = truck_request_signer(device, agent_state, audience=enrolling.url)(
            "POST", enrolling.url + path
        )
        sent = client.post(path, json=body, headers={"Authorization": f"Bearer {request_jwt}"})
        assert sent.status_code == 201, sent.text
    pending = {"statement": b64(four), "signature": b64(signature)}
    (state / "statement-pending.json").write_text(json.dumps(pending))
    resumed = ws("agent", "submit", *server, "--kind", "telemetry_snapshot", "--payload", str(snapshot))
    assert resumed.returncode == 0, resumed.stderr
    fifth = json.loads(resumed.stdout)
    assert fifth["sequence"] == 5
    assert json.loads(unb64(fifth["statement"]))["predicate"]["previous"] == statement_hash(four).hex()
    assert not (state / "statement-pending.json").exists()
    chain = json.loads((state / "statements.json").read_text())
    assert chain["sequence"] == 5
    # A log key other than the pinned one is bad input: exit 2, nothing signed or sent.
    other = VerifierKey.for_public_key(key.name, ec.generate_private_key(ec.SECP256R1()).public_key())
    wrong = ws(
        "agent",
        "submit",
        *server,
        "--kind",
        "mission_manifest",
        "--payload",
        str(manifest),
        "--log-key",
        str(other),
    )
    assert wrong.returncode == 2 and "pinned" in wrong.stderr
    # A refusal by the server is exit 2 too, and the chain does not move.
    (state / "statements.json").write_text(json.dumps({**chain, "sequence": 7}))
    gap = ws("agent", "submit", *server, "--kind", "mission_manifest", "--payload", str(manifest))
    assert gap.returncode == 2 and "statement-sequence-gap" in gap.stderr
    assert json.loads((state / "statements.json").read_text())["sequence"] == 7
    assert not (state / "statement-pending.json").exists()


# -- two replicas on PostgreSQL --------------------------------------------------------------------


def test_two_replicas_on_postgresql_accept_one_statement_per_place_in_a_chain(
    manufacturer: ManufacturerCa, tmp_path: Path
) -> None:
    env = {
        "WEIGHSTATION_TPM_MANUFACTURER_ROOTS": str(manufacturer.root_pem),
        "WEIGHSTATION_TPM_MANUFACTURER_INTERMEDIATES": str(manufacturer.intermediate_pem),
        # Replicas behind one name: the truck signs its calls for it, either replica checks them.
        "WEIGHSTATION_PUBLIC_URL": "https://ws.fleet.test",
    }
    with scratch_database() as pg_url, ExitStack() as stack:
        env["WEIGHSTATION_DATABASE_URL"] = pg_url
        shared = tmp_path / "data"
        first = stack.enter_context(running_service(shared, env=env))
        second = stack.enter_context(running_service(shared, env=env))
        truck = make_trucks(stack, first, manufacturer, tmp_path)()
        one = truck.statement(1, None)
        truck.submit(one)
        replicas = (first, second)

        path = f"/v1/trucks/{truck.id}/statements"

        def job(n: int, data: bytes) -> tuple[int, bytes, bytes, dict[str, str]]:
            """One caller's request, its statement signature and request JWT made here by the TPM (one
            thread at a time: the ESAPI context is not thread-safe)."""
            return n, data, truck.sign(data), truck.auth("POST", path)

        def post(request: tuple[int, bytes, bytes, dict[str, str]]) -> httpx.Response:
            n, data, signature, headers = request
            with replicas[n % 2].client() as client:
                body = {
                    "statement": b64(data),
                    "signature": b64(signature),
                    "certificate_chain_pem": truck.chain_pem,
                }
                return client.post(path, json=body, headers=headers)

        # The same statement 2 from eight callers at once (each its own TPM signature): one is new.
        two = truck.statement(2, statement_hash(one))
        same = [job(n, two) for n in range(8)]
        with ThreadPoolExecutor(max_workers=8) as pool:
            answers = list(pool.map(post, same))
        assert sorted(a.status_code for a in answers) == [200] * 7 + [201], [a.text for a in answers]
        assert len({json.dumps(a.json()["receipt"], sort_keys=True) for a in answers}) == 1
        # Six different statements 3 at once: one joins the chain, five are forks.
        candidates = [truck.statement(3, statement_hash(two), payload=f"load {n}".encode()) for n in range(6)]
        rivals = [job(n, data) for n, data in enumerate(candidates)]
        with ThreadPoolExecutor(max_workers=6) as pool:
            answers = list(pool.map(post, rivals))
        codes = sorted(a.status_code for a in answers)
        assert codes == [201] + [409] * 5, [a.text for a in answers]
        assert {a.json()["code"] for a in answers if a.status_code == 409} == {"statement-fork"}
        (won,) = [a.json() for a in answers if a.status_code == 201]
        chain = truck.chain()
        assert (chain["sequence"], chain["head_sha256"]) == (3, won["statement_sha256"])
        assert len(chain["forks"]) == 5 and chain["chain_broken_at"] is not None
        # Each accepted statement is in the log exactly once.
        logged = count_rows(pg_url, "tlog_entries WHERE kind = 'truck.statement'")
        waiting = count_rows(pg_url, "tlog_pending WHERE kind = 'truck.statement'")
        assert logged + waiting == 3
        # While the sequencer cannot take the log's row, a submission is stored and answered 202 with
        # the URL to poll; once the log moves on, that URL gives the receipt.
        four = truck.statement(4, bytes.fromhex(won["statement_sha256"]))
        engine = make_engine(pg_url)
        try:
            with engine.begin() as conn:
                conn.execute(text("SELECT size FROM tlog_state WHERE id = 1 FOR UPDATE"))
                held = post(job(0, four))
                assert held.status_code == 202, held.text
                assert held.json()["status"] == "pending" and held.json()["receipt"] is None
                assert held.headers["location"] == f"/v1/trucks/{truck.id}/statements/4"
                with second.client() as client:
                    location = held.headers["location"]
                    assert (
                        client.get(location, headers=truck.auth("GET", location)).json()["status"]
                        == "pending"
                    )
        finally:
            engine.dispose()
        deadline = time.monotonic() + 30
        with first.client() as client:
            while (polled := truck.get(held.headers["location"]).json())["status"] != "sequenced":
                assert time.monotonic() < deadline
                time.sleep(0.2)
            key = log_key(client)
        verify_receipt(polled, four, truck, key)


def test_a_logged_statement_is_found_by_its_log_index(chained: tuple[Truck, bytes]) -> None:
    """What the evidence exports build on: statement bytes, signature and certificate by log index."""
    truck, first = chained
    logged = truck.get(f"/v1/trucks/{truck.id}/statements/1").json()
    services = in_process(truck.service)
    try:
        found = services.statements.at_index(logged["receipt"]["index"])
        with pytest.raises(UnknownStatement):
            services.statements.at_index(0)  # the log's first entry is a certificate, not a statement
    finally:
        services.close()
    assert (found.truck, found.sequence, found.statement) == (truck.id, 1, first)
    assert found.signature == unb64(logged["signature"])
    assert found.certificate_chain_pem == truck.chain_pem
    assert found.receipt is not None and found.receipt.index == logged["receipt"]["index"]
