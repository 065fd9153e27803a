"""Idempotency-Key on mutating calls, against the real service: a retry replays the stored response and
changes nothing; a reused key with another request is refused; concurrent duplicates issue once."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.integration.test_http_pki import assert_problem, db_url, issue_truck
from tests.support.audit import count_rows
from tests.support.csr import make_csr, truck_uri
from tests.support.service import RunningService


def post(service: RunningService, client: httpx.Client, path: str, body: object, key: str) -> httpx.Response:
    return client.post(path, json=body, headers={**service.admin(), "Idempotency-Key": key})


def test_retry_replays_the_issued_certificate(service: RunningService) -> None:
    _, csr = make_csr(uris=[truck_uri(truck="t-idem")])
    body = {"profile": "truck", "csr": csr}
    with service.client() as client:
        before = count_rows(db_url(service), "certificates")
        first = post(service, client, "/v1/certificates", body, "issue-t-idem-1")
        again = post(service, client, "/v1/certificates", body, "issue-t-idem-1")
        other = post(service, client, "/v1/certificates", {**body, "ttl_seconds": 60}, "issue-t-idem-1")
    assert first.status_code == 201 and again.status_code == 201
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert count_rows(db_url(service), "certificates") == before + 1
    assert_problem(other, 422, "idempotency-key-reused")


def test_concurrent_duplicates_issue_once(service: RunningService) -> None:
    _, csr = make_csr(uris=[truck_uri(truck="t-race")])
    body = {"profile": "truck", "csr": csr}
    before = count_rows(db_url(service), "certificates")
    with service.client() as client, ThreadPoolExecutor(8) as pool:
        responses = list(
            pool.map(lambda _: post(service, client, "/v1/certificates", body, "race-1"), range(8))
        )
    ok = [r for r in responses if r.status_code == 201]
    assert ok and len({r.json()["serial"] for r in ok}) == 1
    for response in responses:
        if response.status_code != 201:
            assert_problem(response, 409, "idempotency-key-in-use")
            assert response.headers["retry-after"] == "1"
    assert count_rows(db_url(service), "certificates") == before + 1


def test_revoke_renew_and_rotate_are_replayed(service: RunningService) -> None:
    with service.client() as client:
        cert = issue_truck(service, client, "t-idem-ops")
        revoke_path = f"/v1/certificates/{cert['serial']}/revoke"
        first = post(service, client, revoke_path, {"reason": "superseded"}, "revoke-1")
        again = post(service, client, revoke_path, {"reason": "superseded"}, "revoke-1")
        assert first.status_code == 200 and again.json() == first.json()
        assert again.headers["idempotent-replayed"] == "true"  # not 409 already-revoked

        _, service_csr = make_csr(dns=["idem-renew.fleet.test"])
        issued = client.post(
            "/v1/certificates", json={"profile": "service", "csr": service_csr}, headers=service.admin()
        )
        live = issued.json()
        _, csr = make_csr(dns=["idem-renew.fleet.test"])
        renew_path = f"/v1/certificates/{live['serial']}/renew"
        renewed = post(service, client, renew_path, {"csr": csr}, "renew-1")
        renewed_again = post(service, client, renew_path, {"csr": csr}, "renew-1")
        assert renewed.status_code == 201 and renewed_again.json()["serial"] == renewed.json()["serial"]

        cas_before = count_rows(db_url(service), "certificate_authorities")
        rotated = client.post("/v1/ca/rotate", headers={**service.admin(), "Idempotency-Key": "rotate-1"})
        rotated_again = client.post(
            "/v1/ca/rotate", headers={**service.admin(), "Idempotency-Key": "rotate-1"}
        )
        assert rotated.status_code == 201 and rotated_again.json()["id"] == rotated.json()["id"]
        assert count_rows(db_url(service), "certificate_authorities") == cas_before + 1

        # The same key on another operation is a different request.
        assert_problem(
            post(service, client, revoke_path, {"reason": "superseded"}, "rotate-1"),
            422,
            "idempotency-key-reused",
        )


def test_malformed_idempotency_key(service: RunningService) -> None:
    _, csr = make_csr(uris=[truck_uri(truck="t-badkey")])
    with service.client() as client:
        response = post(service, client, "/v1/certificates", {"profile": "truck", "csr": csr}, "x" * 129)
    assert_problem(response, 400, "invalid-idempotency-key")
