"""The same service on PostgreSQL, and two server processes sharing one database (replicas)."""

from __future__ import annotations

from pathlib import Path

from tests.integration.test_http_pki import issue_truck, openssl, write_trust
from tests.support.audit import audit_rows, count_rows
from tests.support.service import running_service


def test_two_replicas_on_postgresql(pg_url: str, tmp_path: Path) -> None:
    shared = tmp_path / "data"  # file keys are shared by the replicas, as on one host or a shared volume
    env = {"WEIGHSTATION_DATABASE_URL": pg_url}
    with (
        running_service(shared, env=env) as first,
        running_service(shared, env=env) as second,
        first.client() as a,
        second.client() as b,
    ):
        issued = [issue_truck(first, a, f"pg-a-{i}") for i in range(5)]
        issued += [issue_truck(second, b, f"pg-b-{i}") for i in range(5)]
        assert len({c["serial"] for c in issued}) == 10
        # A certificate issued by one replica is visible, revocable and on the CRL of the other.
        target = issued[0]
        assert b.get(f"/v1/certificates/{target['serial']}").json()["status"] == "valid"
        assert (
            b.post(
                f"/v1/certificates/{target['serial']}/revoke",
                json={"reason": "superseded"},
                headers=second.admin(),
            ).status_code
            == 200
        )
        twice = a.post(f"/v1/certificates/{target['serial']}/revoke", json={}, headers=first.admin())
        assert twice.status_code == 409
        _, _, bundle = write_trust(a, tmp_path)
        crl = tmp_path / "crl.der"
        crl.write_bytes(a.get("/v1/ca/crl").content)
    checked = openssl("crl", "-inform", "DER", "-in", str(crl), "-CAfile", str(bundle), "-noout", "-text")
    assert (
        "verify OK" in checked.stderr and target["serial"].upper() in checked.stdout.replace(":", "").upper()
    )
    assert count_rows(pg_url, "certificates") == 10
    assert count_rows(pg_url, "certificate_authorities") == 2
    assert len(audit_rows(pg_url, "certificate.issue")) == 10
