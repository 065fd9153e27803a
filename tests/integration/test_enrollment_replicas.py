"""Enrollment and attestation across two server processes on one PostgreSQL database: a token, a
challenge and an attestation nonce are each used once even when both replicas receive them at once."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import jwt
import pytest

from agent.client import EnrollmentClient
from agent.enroll import enroll
from agent.request_auth import truck_request_signer
from agent.tpm import TruckTpm
from tests.support.audit import count_rows
from tests.support.enrolling import Operator, TruckSide, b64, booted, unb64
from tests.support.postgres import scratch_database
from tests.support.service import running_service
from tests.support.swtpm import ManufacturerCa, RunningTpm, running_tpms

pytestmark = pytest.mark.integration
PUBLIC_URL = "https://ws.fleet.test"  # the name both replicas serve


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A database per test: each test's replicas share a data dir (file keys) of their own."""
    with scratch_database() as url:
        yield url


def race(calls: list[tuple[httpx.Client, str, dict[str, object], dict[str, str]]]) -> list[httpx.Response]:
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        futures = [pool.submit(c.post, path, json=body, headers=headers) for c, path, body, headers in calls]
        return [f.result() for f in futures]


def test_token_and_challenge_are_single_use_across_replicas(
    pg_url: str, tmp_path: Path, manufacturer: ManufacturerCa, tpm: RunningTpm
) -> None:
    shared = tmp_path / "data"  # one data dir: the replicas share the file keys and the token key
    env = {
        "WEIGHSTATION_DATABASE_URL": pg_url,
        # Replicas behind one name: tokens name it as their issuer, so any replica accepts them.
        "WEIGHSTATION_PUBLIC_URL": "https://ws.fleet.test",
        "WEIGHSTATION_TPM_MANUFACTURER_ROOTS": str(manufacturer.root_pem),
        "WEIGHSTATION_TPM_MANUFACTURER_INTERMEDIATES": str(manufacturer.intermediate_pem),
    }
    with (
        running_service(shared, env=env) as first,
        running_service(shared, env=env) as second,
        first.client() as a,
        second.client() as b,
        TruckTpm.open(tpm.tcti) as handle,
    ):
        operator = Operator(first, a)
        operator.golden_release()  # the first quote (taken in side.answer) must match it
        truck = operator.truck()
        token = operator.token(truck)  # minted on the first replica
        side = TruckSide(handle, "ecc")
        bearer = {"Authorization": f"Bearer {token}"}
        body = side.start_body()
        started = race([(a, "/v1/enrollments", body, bearer), (b, "/v1/enrollments", body, bearer)])
        assert sorted(r.status_code for r in started) == [201, 401], [r.text for r in started]
        loser = next(r for r in started if r.status_code == 401)
        assert loser.json()["code"] == "enrollment-token-used"
        challenge = next(r for r in started if r.status_code == 201).json()

        answer = side.answer(challenge)
        path = f"/v1/enrollments/{challenge['enrollment_id']}/activate"
        activated = race([(a, path, answer, {}), (b, path, answer, {})])
        assert sorted(r.status_code for r in activated) == [201, 409], [r.text for r in activated]
        enrolled = next(r for r in activated if r.status_code == 201).json()
        # Either replica reports the same binding.
        state = Operator(second, b).truck_state(truck)
        assert state["state"] == "enrolled" and state["certificate_serial"] == enrolled["serial"]
    assert count_rows(pg_url, "truck_enrollments") == 1
    assert count_rows(pg_url, "enrollment_challenges") == 1


def test_attestation_nonce_is_single_use_across_replicas(
    pg_url: str, tmp_path: Path, manufacturer: ManufacturerCa
) -> None:
    """One quote over one nonce, sent to both replicas at once (each call signed by the truck, as the
    agent signs every attempt): one result, one refusal."""
    shared = tmp_path / "data"
    env = {
        "WEIGHSTATION_DATABASE_URL": pg_url,
        "WEIGHSTATION_PUBLIC_URL": PUBLIC_URL,
        "WEIGHSTATION_TPM_MANUFACTURER_ROOTS": str(manufacturer.root_pem),
        "WEIGHSTATION_TPM_MANUFACTURER_INTERMEDIATES": str(manufacturer.intermediate_pem),
    }
    with (
        running_service(shared, env=env) as first,
        running_service(shared, env=env) as second,
        first.client() as a,
        second.client() as b,
        running_tpms(tmp_path / "tpm", manufacturer, 1, "ecc", distinct=True) as (own,),
        TruckTpm.open(own.tcti) as handle,
        EnrollmentClient(first.url) as client,
    ):
        operator = Operator(first, a)
        operator.golden_release()
        truck = operator.truck()
        event_log = booted(handle)
        state = enroll(
            handle,
            client,
            operator.token(truck),
            ek_kind="ecc",
            truck=truck,
            ek_intermediates=[],
            state_dir=tmp_path / "s",
            event_log=event_log,
        )
        # Both replicas answer to the public name: the truck signs for it (aud, htu).
        signer = truck_request_signer(handle, state, audience=PUBLIC_URL)

        def signed(path: str) -> dict[str, str]:
            return {"Authorization": f"Bearer {signer('POST', PUBLIC_URL + path)}"}

        nonce_path = f"/v1/trucks/{truck}/attestation-nonces"
        issued = a.post(nonce_path, json={"purpose": "attest"}, headers=signed(nonce_path))
        assert issued.status_code == 201, issued.text  # issued by the first replica
        nonce = issued.json()
        pcrs = [int(p) for p in nonce["pcrs"]]
        quote_info, signature = handle.quote(state.ak, unb64(nonce["extra_data"]), "sha256", pcrs)
        values = handle.pcr_read("sha256", pcrs)
        body: dict[str, object] = {
            "nonce_id": nonce["id"],
            "quote": b64(quote_info),
            "signature": b64(signature),
            "pcr_values": {str(p): b64(v) for p, v in values.items()},
            "event_log": b64(event_log),
        }
        path = f"/v1/trucks/{truck}/attestations"
        answers = race([(a, path, body, signed(path)), (b, path, body, signed(path))])
        assert sorted(r.status_code for r in answers) == [201, 409], [r.text for r in answers]
        assert next(r for r in answers if r.status_code == 409).json()["code"] == "attestation-nonce-used"
        # Both replicas sign with the one token key they share, and publish it.
        token = next(r for r in answers if r.status_code == 201).json()["token"]
        assert a.get("/v1/jwks").json() == b.get("/v1/jwks").json()
        assert jwt.get_unverified_header(token)["kid"] in {k["kid"] for k in b.get("/v1/jwks").json()["keys"]}
    assert count_rows(pg_url, "attestation_results") == 2  # the enrollment's first quote, and the winner
    # One key per purpose (result tokens, access tokens), however many replicas started at once.
    assert count_rows(pg_url, "token_keys") == 2
