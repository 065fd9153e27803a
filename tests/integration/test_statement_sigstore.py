"""A truck's statements exported for Sigstore, with a real swtpm truck: the truck gets an evidence-signing
certificate for its TPM identity key (`weighstation agent evidence-cert`), signs and submits a mission
manifest (`weighstation agent submit`), and the stock `sigstore verify identity --offline` accepts the
exported bundle with the exported trust config, also after the evidence certificate has expired (the
timestamp was taken at submission), and refuses the statement with one byte altered. Each negative of the
evidence-certificate route changes one thing about a good request and is refused, audited, with nothing
issued; so are statements sent with an evidence certificate that is not theirs or is revoked."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from agent.client import EnrollmentClient
from agent.enroll import identity_csr
from agent.evidence import current, request
from agent.request_auth import as_truck
from agent.state import AgentState
from provision.audit import Actor
from provision.authority import utcnow
from provision.evidence_certificates import IdentityCertificateNotValid, TruckEvidenceCertificates
from tests.integration.test_statements_http import Truck, Trucks, db, in_process, make_trucks
from tests.support.audit import audit_rows, count_rows
from tests.support.enrolling import Operator, booted, cli_boot_and_enroll
from tests.support.postgres import scratch_database
from tests.support.service import RunningService, running_service, ws
from tests.support.swtpm import ManufacturerCa, RunningTpm
from tlog.statement import statement_hash

pytestmark = pytest.mark.integration
ISSUE = "truck.evidence-certificate.issue"
SUBMIT = "truck.statement.submit"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def sigstore_verify(
    workdir: Path, bundle: bytes, trust: bytes, statement: bytes, *, identity: str, issuer: str
) -> subprocess.CompletedProcess[str]:
    """The stock CLI: `sigstore --trust-config T verify identity --offline --bundle B ... STATEMENT`."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "statement.json").write_bytes(statement)
    (workdir / "statement.sigstore.json").write_bytes(bundle)
    (workdir / "trust.json").write_bytes(trust)
    command = [
        str(Path(sys.executable).with_name("sigstore")),
        "--trust-config",
        str(workdir / "trust.json"),
        "verify",
        "identity",
        "--offline",
        "--bundle",
        str(workdir / "statement.sigstore.json"),
        "--cert-identity",
        identity,
        "--cert-oidc-issuer",
        issuer,
        str(workdir / "statement.json"),
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def fetch(service: RunningService, path: str) -> httpx.Response:
    with service.client() as client:
        return client.get(path, headers=service.admin())


def evidence_count(service: RunningService) -> int:
    return count_rows(db(service), "certificates WHERE profile = 'evidence'")


# -- the path that works, on the command line ------------------------------------------------------


def test_truck_signs_a_manifest_and_stock_sigstore_verifies_it_offline(
    enrolling: RunningService, tpm: RunningTpm, tmp_path: Path
) -> None:
    state = tmp_path / "truck-state"
    server = ["--tpm", tpm.tcti, "--server", enrolling.url, "--state", str(state)]
    with enrolling.client() as client:
        operator = Operator(enrolling, client)
        operator.golden_release()
        # Boot first: enrollment's first quote covers the boot its event log records.
        truck = operator.truck()
        cli_boot_and_enroll(tpm.tcti, server, operator.token(truck), tmp_path / "boot")
    # Short-lived, so the test can check the bundle still verifies once it has expired.
    issued = ws("agent", "evidence-cert", *server, "--ttl", "20")
    assert issued.returncode == 0, issued.stderr
    evidence = json.loads(issued.stdout)
    spiffe_id = evidence["spiffe_id"]
    assert evidence["truck"] == truck and spiffe_id.endswith(f"/truck/{truck}")
    kept = x509.load_pem_x509_certificates((state / "evidence.crt").read_bytes())
    identity = x509.load_pem_x509_certificate((state / "identity.crt").read_bytes())
    assert kept[0].public_key() == identity.public_key()  # the TPM identity key, not a new one
    assert format(kept[0].serial_number, "x") == evidence["serial"]
    manifest = tmp_path / "manifest.json"
    manifest.write_text('{"load": 42, "from": "Hamburg", "to": "Rotterdam"}')
    done = ws("agent", "submit", *server, "--kind", "mission_manifest", "--payload", str(manifest))
    assert done.returncode == 0, done.stderr
    receipt = json.loads(done.stdout)
    statement = unb64(receipt["statement"])
    assert receipt["sigstore_bundle"] == f"/v1/trucks/{truck}/statements/1/sigstore"
    rows = audit_rows(db(enrolling), SUBMIT)
    assert json.loads(str(rows[-1]["detail"]))["evidence_serial"] == evidence["serial"]

    trust = fetch(enrolling, "/v1/sigstore/trust-config")
    assert trust.status_code == 200, trust.text
    bundle = fetch(enrolling, receipt["sigstore_bundle"])
    assert bundle.status_code == 200, bundle.text
    assert bundle.headers["content-type"].startswith("application/vnd.dev.sigstore.bundle.v0.3+json")
    entry = bundle.json()["verificationMaterial"]["tlogEntries"][0]
    assert entry["kindVersion"] == {"kind": "hashedrekord", "version": "0.0.2"}

    def verify(data: bytes, name: str, document: bytes) -> subprocess.CompletedProcess[str]:
        return sigstore_verify(
            tmp_path / name, document, trust.content, data, identity=spiffe_id, issuer=enrolling.url
        )

    good = verify(statement, "good", bundle.content)
    assert good.returncode == 0 and "OK" in good.stderr, good.stderr
    altered = bytearray(statement)
    altered[len(altered) // 2] ^= 0x01
    tampered = verify(bytes(altered), "altered", bundle.content)
    assert tampered.returncode != 0 and "OK" not in tampered.stderr
    assert "digest mismatch" in " ".join(tampered.stderr.split())

    # Once the evidence certificate has expired: the same bundle, exported again, still verifies.
    while datetime.now(UTC) <= kept[0].not_valid_after_utc:
        time.sleep(0.5)
    later = fetch(enrolling, receipt["sigstore_bundle"])
    assert later.status_code == 200, later.text
    after = verify(statement, "after-expiry", later.content)
    assert after.returncode == 0 and "OK" in after.stderr, after.stderr
    # The agent no longer sends the expired certificate: the next statement has no Sigstore bundle.
    second = ws("agent", "submit", *server, "--kind", "mission_manifest", "--payload", str(manifest))
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["sigstore_bundle"] is None
    missing = fetch(enrolling, f"/v1/trucks/{truck}/statements/2/sigstore")
    assert missing.status_code == 409 and missing.json()["code"] == "statement-without-evidence-certificate"


# -- the evidence-certificate route: one thing changed, refused ------------------------------------


@pytest.fixture
def trucks(enrolling: RunningService, manufacturer: ManufacturerCa, tmp_path: Path) -> Iterator[Trucks]:
    with ExitStack() as stack:
        yield make_trucks(stack, enrolling, manufacturer, tmp_path)


def ask(truck: Truck, csr: str) -> httpx.Response:
    path = f"/v1/trucks/{truck.id}/evidence-certificates"
    with truck.service.client() as client:
        return client.post(path, json={"csr": csr}, headers=truck.auth("POST", path))


def tpm_csr(truck: Truck) -> str:
    return identity_csr(truck.tpm, truck.state, truck.id)


def refused(truck: Truck, response: httpx.Response, code: str, before: int) -> None:
    """403 with `code`, audited with it, no certificate issued. A Cedar forbid on the route (for a
    quarantined truck or a revoked certificate) may refuse first: then it names its policy."""
    assert response.status_code == 403, response.text
    problem = response.json()
    if problem["code"] == "forbidden":
        assert problem["reasons"], problem
    else:
        assert problem["code"] == code, problem
        last = audit_rows(db(truck.service), ISSUE)[-1]
        assert (last["outcome"], last["code"], last["target"]) == ("refused", code, truck.id)
    assert evidence_count(truck.service) == before


def test_good_request_is_issued_for_the_enrolled_key_and_the_truck_spiffe_id(trucks: Trucks) -> None:
    truck = trucks()
    response = ask(truck, tpm_csr(truck))
    assert response.status_code == 201, response.text
    body = response.json()
    leaf = x509.load_pem_x509_certificate(body["certificate_pem"].encode())
    identity = truck.tpm.identity_signer(truck.state.identity).public_key()
    assert leaf.public_key() == identity
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == [body["spiffe_id"]]
    assert body["spiffe_id"].endswith(f"/truck/{truck.id}")
    # The CSR's own names are ignored: one naming another identity gets the truck's SPIFFE ID.
    signer = truck.tpm.identity_signer(truck.state.identity)
    other = x509.UniformResourceIdentifier("spiffe://fleet.test/fleet/x/truck/someone-else")
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(x509.SubjectAlternativeName([other]), critical=False)
        .sign(signer, hashes.SHA256())
    )
    renamed = ask(truck, csr.public_bytes(Encoding.PEM).decode())
    assert renamed.status_code == 201, renamed.text
    assert renamed.json()["spiffe_id"] == body["spiffe_id"]
    last = audit_rows(db(truck.service), ISSUE)[-1]
    assert (last["outcome"], last["target"]) == ("ok", truck.id)


def test_csr_key_other_than_the_enrolled_identity_key_is_refused(trucks: Trucks) -> None:
    truck = trucks()
    before = evidence_count(truck.service)
    stranger = ec.generate_private_key(ec.SECP256R1())
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(stranger, hashes.SHA256())
    response = ask(truck, csr.public_bytes(Encoding.PEM).decode())
    refused(truck, response, "evidence-key-not-enrolled", before)


def test_quarantined_truck_is_refused(trucks: Trucks) -> None:
    truck = trucks()
    # The truck's own evidence quarantines it: a quote with an event log that has trailing garbage.
    event_log = booted(truck.tpm)
    with (
        EnrollmentClient(truck.service.url, truck_auth=truck.signer) as agent,
        truck.service.client() as client,
    ):
        nonce = agent.attestation_nonce(truck.id)
        quote, signature = truck.tpm.quote(truck.state.ak, nonce.extra_data, "sha256", nonce.pcrs)
        values = truck.tpm.pcr_read("sha256", nonce.pcrs)
        body: dict[str, Any] = {
            "nonce_id": nonce.id,
            "quote": b64(quote),
            "signature": b64(signature),
            "pcr_values": {str(p): b64(v) for p, v in values.items()},
            "event_log": b64(event_log + b"\x00"),
        }
        path = f"/v1/trucks/{truck.id}/attestations"
        client.post(path, json=body, headers=truck.auth("POST", path))
    status = fetch(truck.service, f"/v1/trucks/{truck.id}/attestation")
    assert status.status_code == 200 and status.json()["quarantined"], status.text
    before = evidence_count(truck.service)
    refused(truck, ask(truck, tpm_csr(truck)), "truck-quarantined", before)


def test_revoked_identity_certificate_is_refused(trucks: Trucks) -> None:
    truck = trucks()
    with truck.service.client() as client:
        revoked = client.post(
            f"/v1/certificates/{truck.serial}/revoke",
            json={"reason": "key_compromise"},
            headers=truck.service.admin(),
        )
    assert revoked.status_code == 200, revoked.text
    before = evidence_count(truck.service)
    # The truck authenticates with that certificate: the guard refuses the call before the use case.
    response = ask(truck, tpm_csr(truck))
    assert (response.status_code, response.json()["code"]) == (401, "invalid-token"), response.text
    assert "revoked" in response.json()["detail"]
    assert evidence_count(truck.service) == before
    # Behind the guard the use case refuses it too, for its own reason, audited.
    services = in_process(truck.service)
    try:
        # (Services.open builds the issuer only when it bootstraps, which is the server's job.)
        issuer = TruckEvidenceCertificates(services.engine, services.authority, clock=utcnow)
        with pytest.raises(IdentityCertificateNotValid):
            issuer.issue(Actor("test"), truck.id, tpm_csr(truck).encode())
    finally:
        services.close()
    last = audit_rows(db(truck.service), ISSUE)[-1]
    assert (last["outcome"], last["code"], last["target"]) == (
        "refused",
        "identity-certificate-not-valid",
        truck.id,
    )
    assert evidence_count(truck.service) == before


# -- statements sent with an evidence certificate that does not fit --------------------------------


def statement_rows(service: RunningService) -> tuple[int, int]:
    return count_rows(db(service), "truck_statements"), count_rows(db(service), "truck_statement_sigstore")


def submit(truck: Truck, data: bytes, evidence_pem: str) -> httpx.Response:
    body = {
        "statement": b64(data),
        "signature": b64(truck.sign(data)),
        "certificate_chain_pem": truck.chain_pem,
        "evidence_certificate_pem": evidence_pem,
    }
    path = f"/v1/trucks/{truck.id}/statements"
    with truck.service.client() as client:
        return client.post(path, json=body, headers=truck.auth("POST", path))


def test_statement_with_another_trucks_evidence_certificate_is_refused(trucks: Trucks) -> None:
    truck, other = trucks(), trucks()
    theirs = ask(other, tpm_csr(other))
    assert theirs.status_code == 201, theirs.text
    before = statement_rows(truck.service)
    response = submit(truck, truck.statement(1, None), theirs.json()["certificate_pem"])
    assert response.status_code == 403 and response.json()["code"] == "statement-evidence-certificate-invalid"
    assert statement_rows(truck.service) == before
    last = audit_rows(db(truck.service), SUBMIT)[-1]
    assert (last["outcome"], last["code"]) == ("refused", "statement-evidence-certificate-invalid")


def test_statement_with_a_revoked_evidence_certificate_is_refused(trucks: Trucks) -> None:
    truck = trucks()
    mine = ask(truck, tpm_csr(truck))
    assert mine.status_code == 201, mine.text
    with truck.service.client() as client:
        revoked = client.post(
            f"/v1/certificates/{mine.json()['serial']}/revoke",
            json={"reason": "key_compromise"},
            headers=truck.service.admin(),
        )
    assert revoked.status_code == 200, revoked.text
    before = statement_rows(truck.service)
    first = truck.statement(1, None)
    response = submit(truck, first, mine.json()["certificate_pem"])
    assert response.status_code == 403 and response.json()["code"] == "statement-evidence-certificate-revoked"
    assert statement_rows(truck.service) == before
    # Without it the statement is accepted, and has no Sigstore bundle.
    assert truck.post(first).status_code == 201
    missing = fetch(truck.service, f"/v1/trucks/{truck.id}/statements/1/sigstore")
    assert missing.status_code == 409 and missing.json()["code"] == "statement-without-evidence-certificate"
    assert truck.chain()["head_sha256"] == statement_hash(first).hex()


def test_agent_state_keeps_the_evidence_certificate_for_the_identity_key(
    trucks: Trucks, tmp_path: Path
) -> None:
    """`agent evidence-cert` on a state made by enrollment, through the library call the CLI makes."""
    truck = trucks()
    state_dir = tmp_path / "state-0"
    state = AgentState.load(state_dir)
    with EnrollmentClient(truck.service.url) as client:
        issued = request(truck.tpm, as_truck(client, truck.tpm, state), state, state_dir)
    assert issued["truck"] == truck.id
    kept = current(AgentState.load(state_dir), state_dir, datetime.now(UTC))
    assert kept is not None
    assert format(x509.load_pem_x509_certificate(kept.encode()).serial_number, "x") == issued["serial"]


# -- PostgreSQL: the same path, with the row locks of the re-checks --------------------------------


def test_on_postgresql_issue_submit_and_export_verify(manufacturer: ManufacturerCa, tmp_path: Path) -> None:
    env = {
        "WEIGHSTATION_TPM_MANUFACTURER_ROOTS": str(manufacturer.root_pem),
        "WEIGHSTATION_TPM_MANUFACTURER_INTERMEDIATES": str(manufacturer.intermediate_pem),
    }
    with scratch_database() as pg_url, ExitStack() as stack:
        env["WEIGHSTATION_DATABASE_URL"] = pg_url
        service = stack.enter_context(running_service(tmp_path / "data", env=env))
        truck = make_trucks(stack, service, manufacturer, tmp_path)()
        issued = ask(truck, tpm_csr(truck))
        assert issued.status_code == 201, issued.text
        data = truck.statement(1, None)
        accepted = submit(truck, data, issued.json()["certificate_pem"])
        assert accepted.status_code == 201, accepted.text
        bundle = fetch(service, f"/v1/trucks/{truck.id}/statements/1/sigstore")
        assert bundle.status_code == 200, bundle.text
        trust = fetch(service, "/v1/sigstore/trust-config")
        result = sigstore_verify(
            tmp_path / "pg",
            bundle.content,
            trust.content,
            data,
            identity=issued.json()["spiffe_id"],
            issuer=service.url,
        )
        assert result.returncode == 0 and "OK" in result.stderr, result.stderr
        assert count_rows(pg_url, "truck_statement_sigstore") == 1
