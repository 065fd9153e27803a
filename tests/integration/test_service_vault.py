"""CA keys in OpenBao Transit (a real `bao server -dev`): the private keys never leave it, issuance and
CRL signing go through it, and when it becomes unreachable issuance answers 503 and stores nothing."""

from __future__ import annotations

from pathlib import Path

import httpx
from cryptography import x509

from tests.integration.test_http_pki import assert_problem, db_url, issue, issue_truck, openssl, write_trust
from tests.support.audit import audit_rows, count_rows, key_refs
from tests.support.csr import make_csr, truck_uri
from tests.support.openbao import OpenBao
from tests.support.service import running_service


def test_issuance_through_transit_then_vault_goes_away(fresh_openbao: OpenBao, tmp_path: Path) -> None:
    env = {"WEIGHSTATION_VAULT_ADDR": fresh_openbao.addr, "WEIGHSTATION_VAULT_TOKEN": fresh_openbao.token}
    with running_service(tmp_path / "data", env=env) as service, service.client() as client:
        body = issue_truck(service, client, "t-vault")
        root, issuing, bundle = write_trust(client, tmp_path)
        leaf = tmp_path / "leaf.pem"
        leaf.write_text(body["certificate_pem"])
        verified = openssl("verify", "-CAfile", str(root), "-untrusted", str(issuing), str(leaf))
        assert verified.returncode == 0, verified.stderr
        revoked = client.post(
            f"/v1/certificates/{body['serial']}/revoke",
            json={"reason": "superseded"},
            headers=service.admin(),
        )
        assert revoked.status_code == 200
        crl = tmp_path / "crl.der"
        crl.write_bytes(client.get("/v1/ca/crl").content)
        assert (
            "verify OK"
            in openssl("crl", "-inform", "DER", "-in", str(crl), "-CAfile", str(bundle), "-noout").stderr
        )
        # No CA private key material on disk: both CA keys are Transit references.
        assert not (service.data_dir / "keys").exists() or not any((service.data_dir / "keys").iterdir())
        assert key_refs(db_url(service)) == ["transit", "transit"]

        fresh_openbao.process.terminate()
        fresh_openbao.process.wait(timeout=10)
        before = count_rows(db_url(service), "certificates")
        _, csr = make_csr(uris=[truck_uri(truck="t-vault-down")])
        down = issue(service, client, profile="truck", csr=csr)
        assert_problem(down, 503, "signer-unavailable")
        assert down.headers["retry-after"] == "5"
        assert count_rows(db_url(service), "certificates") == before
        assert any(
            r["outcome"] == "error" and r["code"] == "signer-unavailable"
            for r in audit_rows(db_url(service), "certificate.issue")
        )
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["keys"].startswith("unavailable")
        assert x509.load_pem_x509_certificates(client.get("/v1/ca/bundle").content)


def test_cached_issuer_does_not_hide_an_outage(fresh_openbao: OpenBao, tmp_path: Path) -> None:
    """Even with the issuing CA's public key cached, a sign call must reach Transit (or fail)."""
    env = {"WEIGHSTATION_VAULT_ADDR": fresh_openbao.addr, "WEIGHSTATION_VAULT_TOKEN": fresh_openbao.token}
    with running_service(tmp_path / "data", env=env) as service, service.client() as client:
        issue_truck(service, client, "t-warm")
        fresh_openbao.process.kill()
        fresh_openbao.process.wait(timeout=10)
        _, csr = make_csr(uris=[truck_uri(truck="t-cold")])
        try:
            response = issue(service, client, profile="truck", csr=csr)
        except httpx.ReadTimeout as exc:  # pragma: no cover - would mean we hang instead of failing fast
            raise AssertionError("issuance hung while Vault was down") from exc
        assert_problem(response, 503, "signer-unavailable")
