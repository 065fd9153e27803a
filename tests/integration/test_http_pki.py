"""The service on its embedded default (SQLite + file keys), driven over HTTP by httpx and checked with
the real openssl binary: chains with `openssl verify`, CRLs with `openssl crl`, OCSP with `openssl ocsp`."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path
from urllib.parse import quote

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp

from tests.support.audit import audit_rows, count_rows
from tests.support.csr import make_csr, truck_uri
from tests.support.service import RunningService

PROBLEM = "application/problem+json"


def db_url(service: RunningService) -> str:
    return f"sqlite:///{service.data_dir / 'weighstation.db'}"


def issue(service: RunningService, client: httpx.Client, **body: object) -> httpx.Response:
    return client.post("/v1/certificates", json=body, headers=service.admin())


def issue_truck(service: RunningService, client: httpx.Client, truck: str = "t-001") -> dict[str, str]:
    _, csr = make_csr(uris=[truck_uri(truck=truck)])
    response = issue(service, client, profile="truck", csr=csr)
    assert response.status_code == 201, response.text
    body: dict[str, str] = response.json()
    return body


def openssl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)


def pem(certs: list[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(Encoding.PEM) for c in certs)


def write_trust(client: httpx.Client, workdir: Path) -> tuple[Path, Path, Path]:
    """Split the trust bundle: self-signed roots as anchors, issuing CAs as untrusted intermediates."""
    response = client.get("/v1/ca/bundle")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/pem-certificate-chain")
    certs = x509.load_pem_x509_certificates(response.content)
    roots = [c for c in certs if c.issuer == c.subject]
    issuing = [c for c in certs if c.issuer != c.subject]
    assert len(roots) == 1 and issuing
    paths = workdir / "root.pem", workdir / "issuing.pem", workdir / "bundle.pem"
    paths[0].write_bytes(pem(roots))
    paths[1].write_bytes(pem(issuing))
    paths[2].write_bytes(response.content)
    return paths


def assert_problem(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["code"] == code and body["status"] == status
    assert body["type"].endswith(code) and body["detail"]
    assert body["request_id"] == response.headers["x-request-id"]


# -- service skeleton ---------------------------------------------------------------------------


def test_health_readiness_metrics_and_openapi(service: RunningService) -> None:
    with service.client() as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        ready = client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["checks"] == {"database": "ok", "keys": "ok"}
        issue_truck(service, client, "metrics-1")
        metrics = client.get("/metrics").text
        assert 'weighstation_certificates_issued_total{profile="truck"}' in metrics
        assert "weighstation_requests_total" in metrics
        spec = client.get("/schema/openapi.json").json()
    assert spec["openapi"].startswith("3.1")
    operations = [op for path in spec["paths"].values() for op in path.values() if isinstance(op, dict)]
    assert operations and all(op.get("operationId") for op in operations)
    issue_op = spec["paths"]["/v1/certificates"]["post"]
    assert {"400", "401", "422", "503"} <= set(issue_op["responses"])


def test_request_id_is_echoed_or_minted(service: RunningService) -> None:
    with service.client() as client:
        echoed = client.get("/healthz", headers={"X-Request-ID": "abc12345-request"})
        minted = client.get("/healthz", headers={"X-Request-ID": "bad id with spaces"})
    assert echoed.headers["x-request-id"] == "abc12345-request"
    assert (
        minted.headers["x-request-id"] != "bad id with spaces" and len(minted.headers["x-request-id"]) == 32
    )


# -- issuance, verified by openssl --------------------------------------------------------------


def test_truck_certificate_verifies_with_openssl(service: RunningService, workdir: Path) -> None:
    with service.client() as client:
        body = issue_truck(service, client, "t-verify")
        root, issuing, _ = write_trust(client, workdir)
        looked_up = client.get(f"/v1/certificates/{body['serial']}").json()
    leaf = workdir / "leaf.pem"
    leaf.write_text(body["certificate_pem"])
    result = openssl(
        "verify", "-CAfile", str(root), "-untrusted", str(issuing), "-purpose", "sslclient", str(leaf)
    )
    assert result.returncode == 0, result.stderr + result.stdout
    cert = x509.load_pem_x509_certificate(body["certificate_pem"].encode())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [truck_uri(truck="t-verify")]
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).total_seconds() <= 24 * 3600 + 60
    assert looked_up["status"] == "valid" and looked_up["serial"] == body["serial"]
    rows = audit_rows(db_url(service), "certificate.issue")
    assert any(
        r["target"] == body["serial"] and r["outcome"] == "ok" and str(r["actor"]).startswith("client:")
        for r in rows
    )


def test_service_certificate_with_dns_names(service: RunningService, workdir: Path) -> None:
    with service.client() as client:
        _, csr = make_csr(rsa.generate_private_key(65537, 2048), dns=["broker.fleet.test"])
        response = issue(service, client, profile="service", csr=csr, ttl_seconds=3600)
        assert response.status_code == 201, response.text
        root, issuing, _ = write_trust(client, workdir)
    leaf = workdir / "svc.pem"
    leaf.write_text(response.json()["certificate_pem"])
    result = openssl(
        "verify", "-CAfile", str(root), "-untrusted", str(issuing), "-purpose", "sslserver", str(leaf)
    )
    assert result.returncode == 0, result.stderr


def test_renew_with_a_new_key_keeps_the_identity(service: RunningService) -> None:
    with service.client() as client:
        _, first_csr = make_csr(dns=["depot-gw.fleet.test"])
        old = issue(service, client, profile="service", csr=first_csr).json()
        _, csr = make_csr(dns=["depot-gw.fleet.test"])
        renewed = client.post(
            f"/v1/certificates/{old['serial']}/renew", json={"csr": csr}, headers=service.admin()
        )
    assert renewed.status_code == 201, renewed.text
    body = renewed.json()
    assert body["renewed_from"] == old["serial"] and body["subject"] == old["subject"]
    old_key = x509.load_pem_x509_certificate(old["certificate_pem"].encode()).public_key()
    new_key = x509.load_pem_x509_certificate(body["certificate_pem"].encode()).public_key()
    assert isinstance(new_key, ec.EllipticCurvePublicKey) and new_key != old_key


def test_truck_certificates_renew_only_after_attestation(service: RunningService) -> None:
    """A truck certificate is renewed only for a truck with a recent affirming attestation: here the
    truck never attested (tests/integration/test_attestation_http.py covers the attested path)."""
    with service.client() as client:
        old = issue_truck(service, client, "t-renew")
        _, csr = make_csr(uris=[truck_uri(truck="t-renew")])
        renewed = client.post(
            f"/v1/certificates/{old['serial']}/renew", json={"csr": csr}, headers=service.admin()
        )
    assert renewed.status_code == 403 and renewed.json()["code"] == "attestation-required"


# -- revocation: CRL and OCSP, checked by openssl -----------------------------------------------


def test_revocation_shows_in_crl_and_ocsp(service: RunningService, workdir: Path) -> None:
    with service.client() as client:
        good = issue_truck(service, client, "t-good")
        bad = issue_truck(service, client, "t-stolen")
        revoked = client.post(
            f"/v1/certificates/{bad['serial']}/revoke",
            json={"reason": "key_compromise"},
            headers=service.admin(),
        )
        assert revoked.status_code == 200, revoked.text
        assert revoked.json()["status"] == "revoked"
        root, issuing, bundle = write_trust(client, workdir)
        crl = client.get(f"/v1/ca/authorities/{bad['issuer_id']}/crl")
    assert crl.headers["content-type"].startswith("application/pkix-crl")
    crl_path = workdir / "crl.der"
    crl_path.write_bytes(crl.content)
    checked = openssl(
        "crl", "-inform", "DER", "-in", str(crl_path), "-CAfile", str(bundle), "-noout", "-text"
    )
    assert checked.returncode == 0 and "verify OK" in checked.stderr + checked.stdout, checked.stderr
    assert bad["serial"].upper() in checked.stdout.replace(":", "").upper()
    assert "Key Compromise" in checked.stdout and "Next Update" in checked.stdout
    parsed = x509.load_der_x509_crl(crl.content)
    assert parsed.get_revoked_certificate_by_serial_number(int(bad["serial"], 16)) is not None
    assert parsed.get_revoked_certificate_by_serial_number(int(good["serial"], 16)) is None

    # openssl's own client against the live responder, over POST.
    for body, expected in ((good, "good"), (bad, "revoked")):
        leaf = workdir / f"{body['serial']}.pem"
        leaf.write_text(body["certificate_pem"])
        result = openssl(
            "ocsp",
            "-issuer",
            str(issuing),
            "-cert",
            str(leaf),
            "-url",
            f"{service.url}/v1/ocsp",
            "-CAfile",
            str(root),
            "-VAfile",
            str(issuing),
            "-no_nonce",
        )
        assert result.returncode == 0, result.stderr
        assert f"{leaf}: {expected}" in result.stdout, result.stdout + result.stderr
        assert "Response verify OK" in result.stderr + result.stdout


def test_ocsp_get_and_malformed(service: RunningService, workdir: Path) -> None:
    with service.client() as client:
        body = issue_truck(service, client, "t-ocsp-get")
        _, issuing, _ = write_trust(client, workdir)
        leaf = workdir / "leaf.pem"
        leaf.write_text(body["certificate_pem"])
        request = workdir / "req.der"
        made = openssl(
            "ocsp", "-issuer", str(issuing), "-cert", str(leaf), "-reqout", str(request), "-no_nonce"
        )
        assert made.returncode == 0, made.stderr
        encoded = quote(base64.b64encode(request.read_bytes()).decode(), safe="")
        answer = client.get(f"/v1/ocsp/{encoded}")
        junk = client.post(
            "/v1/ocsp", content=b"not an ocsp request", headers={"content-type": "application/ocsp-request"}
        )
    assert answer.headers["content-type"] == "application/ocsp-response"
    parsed = ocsp.load_der_ocsp_response(answer.content)
    assert parsed.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
    assert parsed.certificate_status == ocsp.OCSPCertStatus.GOOD
    assert parsed.serial_number == int(body["serial"], 16)
    assert (
        ocsp.load_der_ocsp_response(junk.content).response_status == ocsp.OCSPResponseStatus.MALFORMED_REQUEST
    )


# -- bad input: each a 4xx problem, audited, nothing stored --------------------------------------


def test_malformed_csr(service: RunningService) -> None:
    with service.client() as client:
        before = count_rows(db_url(service), "certificates")
        response = issue(service, client, profile="truck", csr="-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n")
    assert_problem(response, 400, "malformed-csr")
    assert count_rows(db_url(service), "certificates") == before
    assert any(
        r["code"] == "malformed-csr" and r["outcome"] == "refused"
        for r in audit_rows(db_url(service), "certificate.issue")
    )


def test_csr_with_a_broken_signature(service: RunningService) -> None:
    _, csr_pem = make_csr(uris=[truck_uri()])
    der = bytearray(x509.load_pem_x509_csr(csr_pem.encode()).public_bytes(Encoding.DER))
    der[-3] ^= 0x01  # inside the signature value
    tampered = (
        "-----BEGIN CERTIFICATE REQUEST-----\n"
        + base64.encodebytes(bytes(der)).decode()
        + "-----END CERTIFICATE REQUEST-----\n"
    )
    with service.client() as client:
        response = issue(service, client, profile="truck", csr=tampered)
    assert_problem(response, 400, "csr-signature-invalid")


def test_key_type_the_profile_forbids(service: RunningService) -> None:
    with service.client() as client:
        _, small_rsa = make_csr(rsa.generate_private_key(65537, 1024), uris=[truck_uri()])
        _, p521 = make_csr(ec.generate_private_key(ec.SECP521R1()), uris=[truck_uri()])
        _, rsa_evidence = make_csr(rsa.generate_private_key(65537, 2048), uris=[truck_uri()])
        for profile, csr in (("truck", small_rsa), ("truck", p521), ("evidence", rsa_evidence)):
            assert_problem(issue(service, client, profile=profile, csr=csr), 422, "key-not-allowed")


def test_san_outside_the_trust_domain(service: RunningService) -> None:
    with service.client() as client:
        _, csr = make_csr(uris=["spiffe://evil.example/fleet/north/truck/t-001"])
        response = issue(service, client, profile="truck", csr=csr)
        _, ok_csr = make_csr()
        overridden = issue(
            service,
            client,
            profile="truck",
            csr=ok_csr,
            uri_sans=["spiffe://evil.example/fleet/north/truck/t-001"],
        )
    assert_problem(response, 422, "san-outside-trust-domain")
    assert_problem(overridden, 422, "san-outside-trust-domain")


def test_ttl_above_the_profile_maximum(service: RunningService) -> None:
    with service.client() as client:
        _, csr = make_csr(uris=[truck_uri()])
        response = issue(service, client, profile="truck", csr=csr, ttl_seconds=30 * 86400)
    assert_problem(response, 422, "ttl-too-long")


def test_revoking_an_unknown_serial_and_revoking_twice(service: RunningService) -> None:
    with service.client() as client:
        unknown = client.post("/v1/certificates/0badc0ffee/revoke", json={}, headers=service.admin())
        body = issue_truck(service, client, "t-twice")
        first = client.post(
            f"/v1/certificates/{body['serial']}/revoke",
            json={"reason": "superseded"},
            headers=service.admin(),
        )
        second = client.post(
            f"/v1/certificates/{body['serial']}/revoke",
            json={"reason": "superseded"},
            headers=service.admin(),
        )
        renew_revoked = client.post(
            f"/v1/certificates/{body['serial']}/renew",
            json={"csr": make_csr(uris=[truck_uri(truck="t-twice")])[1]},
            headers=service.admin(),
        )
    assert_problem(unknown, 404, "unknown-certificate")
    assert first.status_code == 200
    assert_problem(second, 409, "already-revoked")
    assert_problem(renew_revoked, 409, "already-revoked")
    codes = [r["code"] for r in audit_rows(db_url(service), "certificate.revoke")]
    assert "unknown-certificate" in codes and "already-revoked" in codes


def test_request_shape_errors(service: RunningService) -> None:
    _, csr = make_csr(uris=[truck_uri()])
    with service.client() as client:
        unknown_field = issue(service, client, profile="truck", csr=csr, colour="red")
        wrong_type = issue(service, client, profile="truck", csr=csr, ttl_seconds="long")
        bad_profile = issue(service, client, profile="root", csr=csr)
        bad_reason = client.post(
            "/v1/certificates/01/revoke", json={"reason": "certificate_hold"}, headers=service.admin()
        )
        not_json = client.post(
            "/v1/certificates",
            content=b"{nope",
            headers={**service.admin(), "content-type": "application/json"},
        )
        too_big = client.post(
            "/v1/certificates",
            content=b"{" + b" " * 200_000 + b"}",
            headers={**service.admin(), "content-type": "application/json"},
        )
        no_token = client.post("/v1/certificates", json={"profile": "truck", "csr": csr})
        wrong_token = client.post(
            "/v1/certificates",
            json={"profile": "truck", "csr": csr},
            headers={"Authorization": "Bearer nope"},
        )
    for response in (unknown_field, wrong_type, bad_profile, bad_reason, not_json):
        assert_problem(response, 400, "invalid-request")
    assert_problem(too_big, 413, "body-too-large")
    assert_problem(no_token, 401, "unauthorized")
    assert_problem(wrong_token, 401, "unauthorized")
    assert no_token.headers["www-authenticate"] == "Bearer"
    refusals = [r for r in audit_rows(db_url(service)) if r["outcome"] == "refused"]
    assert any(r["code"] == "unauthorized" for r in refusals)
    assert any(r["code"] == "body-too-large" for r in refusals)


# -- CA rotation --------------------------------------------------------------------------------


def test_ca_rotation_overlap(service: RunningService, workdir: Path) -> None:
    with service.client() as client:
        old = issue_truck(service, client, "t-before-rotation")
        rotated = client.post("/v1/ca/rotate", headers=service.admin())
        assert rotated.status_code == 201, rotated.text
        new_ca = rotated.json()
        authorities = client.get("/v1/ca/authorities").json()
        # The rotation is visible at once in the process that did it.
        new = issue_truck(service, client, "t-after-rotation")
        root, issuing, _ = write_trust(client, workdir)
        old_crl = client.get(f"/v1/ca/authorities/{old['issuer_id']}/crl")
    statuses = {a["id"]: a["status"] for a in authorities if a["kind"] == "issuing"}
    assert statuses[new_ca["id"]] == "active" and statuses[old["issuer_id"]] == "retired"
    assert new["issuer_id"] == new_ca["id"] != old["issuer_id"]
    assert len(x509.load_pem_x509_certificates(issuing.read_bytes())) == len(statuses)
    for body in (old, new):
        leaf = workdir / f"{body['serial']}.pem"
        leaf.write_text(body["certificate_pem"])
        result = openssl("verify", "-CAfile", str(root), "-untrusted", str(issuing), str(leaf))
        assert result.returncode == 0, result.stderr
    assert old_crl.status_code == 200
    assert any(r["action"] == "ca.rotate" for r in audit_rows(db_url(service)))


def test_ocsp_get_survives_slashes_in_base64(service: RunningService) -> None:
    """Base64 of a DER request can contain '//' or end in '/'; both must reach the responder intact."""
    with service.client() as client:
        checked = 0
        for serial in range(1, 400):
            der = ocsp.OCSPRequestBuilder().add_certificate_by_hash(
                b"\x00" * 20, b"\x00" * 20, serial, hashes.SHA1()
            )
            request = der.build().public_bytes(Encoding.DER)
            encoded = base64.b64encode(request).decode()
            if "//" not in encoded and not encoded.endswith("/"):
                continue
            answer = ocsp.load_der_ocsp_response(client.get(f"/v1/ocsp/{quote(encoded, safe='/')}").content)
            # A well-formed request for an issuer that is not ours: unauthorized, not malformed.
            assert answer.response_status == ocsp.OCSPResponseStatus.UNAUTHORIZED, encoded
            checked += 1
    assert checked


def test_crl_of_an_unknown_authority(service: RunningService) -> None:
    with service.client() as client:
        assert_problem(client.get("/v1/ca/authorities/deadbeef/crl"), 404, "unknown-authority")
