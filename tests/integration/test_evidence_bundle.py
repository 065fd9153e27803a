"""An insurer's dispute, end to end on the command line: a swtpm truck boots, attests and signs two mission
manifests (`weighstation agent submit`); the insurer downloads the trust file and a bundle and checks it
offline with `weighstation verify`, also against a checkpoint it held from before; a bundle with one
field altered is refused with the reason."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.enrolling import Operator, cli_boot_and_enroll
from tests.support.service import RunningService, ws
from tests.support.swtpm import RunningTpm

pytestmark = pytest.mark.integration
RELEASE = "2026.11.7-evidence"


def _bundle(client: httpx.Client, service: RunningService, truck: str, sequence: int, **params: int) -> bytes:
    response = client.get(
        f"/v1/trucks/{truck}/statements/{sequence}/bundle", params=params, headers=service.admin()
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/vnd.weighstation.evidence.v1+json")
    return response.content


def test_insurer_verifies_a_truck_statement_offline(
    enrolling: RunningService, tpm: RunningTpm, tmp_path: Path
) -> None:
    state = tmp_path / "truck-state"
    server = ["--tpm", tpm.tcti, "--server", enrolling.url, "--state", str(state)]
    with enrolling.client() as client:
        operator = Operator(enrolling, client)
        operator.golden_release(version=RELEASE)
        truck = operator.truck()
        event_log = cli_boot_and_enroll(tpm.tcti, server, operator.token(truck), tmp_path / "boot")
        attested = ws("agent", "attest", *server, *event_log)
        assert attested.returncode == 0, attested.stderr

        # The insurer already holds a checkpoint of the log from before the statements.
        held = tmp_path / "held.checkpoint"
        held.write_bytes(client.get("/v1/log/checkpoint").content)
        held_size = int(held.read_text().split("\n")[1])

        manifest = tmp_path / "manifest.json"
        for load in (41, 42):
            manifest.write_text(json.dumps({"load": load, "from": "Hamburg", "to": "Rotterdam"}))
            done = ws("agent", "submit", *server, "--kind", "mission_manifest", "--payload", str(manifest))
            assert done.returncode == 0, done.stderr

        trust = tmp_path / "trust.json"
        response = client.get("/v1/evidence/trust")
        assert response.status_code == 200, response.text
        trust.write_bytes(response.content)
        bundle = tmp_path / "bundle.json"
        bundle.write_bytes(_bundle(client, enrolling, truck, 2, consistency_with=held_size))

    verified = ws("verify", str(bundle), "--trust", str(trust), "--checkpoint", str(held))
    assert verified.returncode == 0, verified.stderr
    out = verified.stdout
    assert out.startswith("VERIFIED")
    assert f"Truck {truck} signed mission manifest #2" in out
    assert "not revoked when the authority logged the statement" in out
    assert f"affirming, release {RELEASE}" in out
    assert f"consistent with your checkpoint of size {held_size}" in out
    # Without the held checkpoint the bundle still verifies (the consistency part is simply not asked for).
    assert ws("verify", str(bundle), "--trust", str(trust)).returncode == 0

    doc: dict[str, Any] = json.loads(bundle.read_bytes())
    for what, (change, reason) in ALTERATIONS.items():
        altered = json.loads(json.dumps(doc))
        change(altered)
        path = tmp_path / f"altered-{what.replace(' ', '-')}.json"
        path.write_text(json.dumps(altered))
        refused = ws("verify", str(path), "--trust", str(trust))
        assert refused.returncode == 1, (what, refused.stdout)
        assert "NOT VERIFIED" in refused.stderr and reason in refused.stderr, (what, refused.stderr)


def _proof_node(d: dict[str, Any]) -> None:
    d["statement"]["proof"][0] = base64.b64encode(bytes(32)).decode()


def _checkpoint_size(d: dict[str, Any]) -> None:
    d["checkpoint"] = d["checkpoint"].replace("\n", "\n1", 1)


def _statement_index(d: dict[str, Any]) -> None:
    d["statement"]["index"] -= 1


def _result_token(d: dict[str, Any]) -> None:
    d["attestation"]["token"] = d["attestation"]["token"][:-2] + "AA"


ALTERATIONS: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "proof node": (_proof_node, "does not lead to the root"),
    "checkpoint size": (_checkpoint_size, "does not verify"),
    "statement index": (_statement_index, "inclusion"),
    "result token": (_result_token, "not the one the log entry names"),
}


def test_bundle_errors_are_problems(enrolling: RunningService) -> None:
    with enrolling.client() as client:
        operator = Operator(enrolling, client)
        truck = operator.truck()
        missing = client.get(f"/v1/trucks/{truck}/statements/1/bundle", headers=enrolling.admin())
        assert missing.status_code == 404
        assert missing.headers["content-type"].startswith("application/problem+json")
        assert missing.json()["type"].endswith("unknown-statement")
