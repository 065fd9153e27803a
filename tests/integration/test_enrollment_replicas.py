"""Enrollment across two server processes on one PostgreSQL database: a token and a challenge are each
used once even when both replicas receive them at the same moment."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from agent.tpm import TruckTpm
from tests.support.audit import count_rows
from tests.support.enrolling import Operator, TruckSide
from tests.support.service import running_service
from tests.support.swtpm import ManufacturerCa, RunningTpm

pytestmark = pytest.mark.integration


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
