"""Insurers read exactly the evidence their policies cover, end to end with a swtpm truck: the operator
records that policy P-1 covers the truck's fleet from a moment on; the truck signs one mission manifest
before that moment and one after (the second with an evidence certificate, so it has a Sigstore bundle).
The P-1 insurer downloads the covered statement's bundle and `weighstation verify` accepts it, and its
Sigstore bundle; the statement logged before the cover began, another insurer's client, and a broker of
the fleet are refused (403 forbidden, audited)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.support.audit import audit_rows
from tests.support.enrolling import Operator, cli_boot_and_enroll
from tests.support.service import RunningService, ws
from tests.support.swtpm import RunningTpm

pytestmark = pytest.mark.integration
RELEASE = "2026.11.8-insured"


def db(service: RunningService) -> str:
    return f"sqlite:///{service.data_dir / 'weighstation.db'}"


def test_an_insurer_reads_only_the_evidence_its_policies_cover(
    enrolling: RunningService, tpm: RunningTpm, tmp_path: Path
) -> None:
    server = ["--tpm", tpm.tcti, "--server", enrolling.url, "--state", str(tmp_path / "truck-state")]
    manifest = tmp_path / "manifest.json"
    with enrolling.client() as client:
        operator = Operator(enrolling, client)
        operator.golden_release(version=RELEASE)
        fleet = operator.fleet()
        truck = operator.truck(fleet)
        event_log = cli_boot_and_enroll(tpm.tcti, server, operator.token(truck), tmp_path / "boot")
        attested = ws("agent", "attest", *server, *event_log)
        assert attested.returncode == 0, attested.stderr

        # Statement 1, then the cover begins, then statement 2 (with an evidence certificate).
        manifest.write_text(json.dumps({"load": 1}))
        done = ws("agent", "submit", *server, "--kind", "mission_manifest", "--payload", str(manifest))
        assert done.returncode == 0, done.stderr
        cover_from = datetime.now(UTC)
        cover = {
            "policies": [
                {
                    "policy_number": "P-1",
                    "valid_from": cover_from.isoformat(),
                    "valid_until": (cover_from + timedelta(days=365)).isoformat(),
                },
                {
                    "policy_number": "P-7",
                    "valid_from": "2020-01-01T00:00:00Z",
                    "valid_until": "2021-01-01T00:00:00Z",
                },
            ]
        }
        put = client.put(f"/v1/fleets/{fleet}/insurance-policies", json=cover, headers=enrolling.admin())
        assert put.status_code == 200, put.text
        assert [p["policy_number"] for p in put.json()["policies"]] == ["P-1", "P-7"]
        issued = ws("agent", "evidence-cert", *server)
        assert issued.returncode == 0, issued.stderr
        manifest.write_text(json.dumps({"load": 2}))
        done = ws("agent", "submit", *server, "--kind", "mission_manifest", "--payload", str(manifest))
        assert done.returncode == 0, done.stderr

        insurer = enrolling.client_headers(kind="insurer", insurer_policies=["P-1"], scopes=["evidence:read"])
        other_insurer = enrolling.client_headers(
            kind="insurer", insurer_policies=["P-2", "P-7"], scopes=["evidence:read"]
        )
        broker = enrolling.client_headers(kind="broker", fleets=[fleet], scopes=["evidence:read"])
        bundle_path = f"/v1/trucks/{truck}/statements/2/bundle"

        covered = client.get(bundle_path, headers=insurer)
        assert covered.status_code == 200, covered.text
        sigstore = client.get(f"/v1/trucks/{truck}/statements/2/sigstore", headers=insurer)
        assert sigstore.status_code == 200, sigstore.text
        assert sigstore.headers["content-type"].startswith("application/vnd.dev.sigstore.bundle.v0.3+json")
        trust = client.get("/v1/evidence/trust")
        assert trust.status_code == 200

        refusals = {
            "logged before the cover": client.get(f"/v1/trucks/{truck}/statements/1/bundle", headers=insurer),
            "other insurer": client.get(bundle_path, headers=other_insurer),
            "other insurer, sigstore": client.get(
                f"/v1/trucks/{truck}/statements/2/sigstore", headers=other_insurer
            ),
            "broker of the fleet": client.get(bundle_path, headers=broker),
            "no such statement": client.get(f"/v1/trucks/{truck}/statements/3/bundle", headers=insurer),
            # An insurer neither reads nor changes the coverage its access depends on.
            "insurer sets coverage": client.put(
                f"/v1/fleets/{fleet}/insurance-policies", json=cover, headers=insurer
            ),
        }
        # The fleet's operator still reads the statement no policy covers.
        assert (
            client.get(f"/v1/trucks/{truck}/statements/1/bundle", headers=enrolling.admin()).status_code
            == 200
        )

    for what, response in refusals.items():
        assert response.status_code == 403, (what, response.text)
        assert response.headers["content-type"].startswith("application/problem+json"), what
        assert response.json()["code"] in {"forbidden", "insufficient-scope"}, what
    assert refusals["other insurer"].json()["code"] == "forbidden"
    assert f"Evidence::{truck}/2" in refusals["other insurer"].json()["detail"]
    refused = [r for r in audit_rows(db(enrolling), "getEvidenceBundle") if r["outcome"] == "refused"]
    assert {r["target"] for r in refused} >= {f"Evidence::{truck}/1", f"Evidence::{truck}/2"}

    bundle = tmp_path / "bundle.json"
    bundle.write_bytes(covered.content)
    trust_file = tmp_path / "trust.json"
    trust_file.write_bytes(trust.content)
    verified = ws("verify", str(bundle), "--trust", str(trust_file))
    assert verified.returncode == 0, verified.stderr
    assert verified.stdout.startswith("VERIFIED")
    assert f"Truck {truck} signed mission manifest #2" in verified.stdout


def test_coverage_is_an_operator_call_with_problems_for_bad_input(enrolling: RunningService) -> None:
    with enrolling.client() as client:
        operator = Operator(enrolling, client)
        fleet = operator.fleet()
        path = f"/v1/fleets/{fleet}/insurance-policies"
        assert client.get(path, headers=enrolling.admin()).json() == {"fleet": fleet, "policies": []}
        reversed_cover = {
            "policies": [
                {
                    "policy_number": "P-1",
                    "valid_from": "2027-01-01T00:00:00Z",
                    "valid_until": "2026-01-01T00:00:00Z",
                }
            ]
        }
        bad = client.put(path, json=reversed_cover, headers=enrolling.admin())
        naive = client.put(
            path,
            json={"policies": [{"policy_number": "P-1", "valid_from": "2026-01-01T00:00:00"}]},
            headers=enrolling.admin(),
        )
        unknown = client.put(
            "/v1/fleets/no-such-fleet/insurance-policies", json={"policies": []}, headers=enrolling.admin()
        )
        after = client.get(path, headers=enrolling.admin()).json()
        # A fleet operator manages its own fleet's coverage, not another's.
        own = operator.fleet()
        fleet_operator = enrolling.client_headers(kind="operator", fleets=[own], scopes=["fleets"])
        cover = {"policies": [{"policy_number": "P-1", "valid_from": "2026-01-01T00:00:00+01:00"}]}
        mine = client.put(f"/v1/fleets/{own}/insurance-policies", json=cover, headers=fleet_operator)
        theirs = client.put(path, json=cover, headers=fleet_operator)
        read_back = client.get(f"/v1/fleets/{own}/insurance-policies", headers=fleet_operator)
        huge = client.get(
            f"/v1/trucks/{operator.truck(own)}/statements/{2**70}/bundle", headers=enrolling.admin()
        )
    assert (bad.status_code, bad.json()["code"]) == (422, "coverage-invalid")
    assert naive.status_code == 400 and naive.headers["content-type"].startswith("application/problem+json")
    assert (unknown.status_code, unknown.json()["code"]) == (404, "unknown-fleet")
    assert after["policies"] == []  # nothing half-written
    assert mine.status_code == 200, mine.text
    assert read_back.json()["policies"] == [
        {"policy_number": "P-1", "valid_from": "2025-12-31T23:00:00Z", "valid_until": None}
    ]
    assert (theirs.status_code, theirs.json()["code"]) == (403, "forbidden")
    assert huge.status_code == 400, huge.text  # the guard looked it up without a 500
    refused = audit_rows(db(enrolling))
    assert any(r["code"] == "coverage-invalid" and r["outcome"] == "refused" for r in refused)
