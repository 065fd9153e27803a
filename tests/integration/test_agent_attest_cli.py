"""The truck's life on the command line, against the running service: enroll, boot (measured into the
TPM), the release team signs the golden release, the operator registers it, the truck attests and renews.
Every step is the `weighstation` CLI (agent, release) or plain HTTP, as the README shows it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import jwt
import pytest

from agent.state import AgentState
from tests.integration.test_agent_enroll_cli import verify_chain
from tests.support.enrolling import Operator
from tests.support.service import RunningService, weighstation_command
from tests.support.swtpm import RunningTpm

pytestmark = pytest.mark.integration


def ws(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*weighstation_command(), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_truck_enrolls_boots_attests_and_renews_on_the_command_line(
    enrolling: RunningService, tpm: RunningTpm, tmp_path: Path
) -> None:
    state = tmp_path / "truck-state"
    server = ["--tpm", tpm.tcti, "--server", enrolling.url, "--state", str(state)]
    with enrolling.client() as client:
        operator = Operator(enrolling, client)
        truck = operator.truck()
        enrolled = ws("agent", "enroll", *server, "--token", "-", stdin=operator.token(truck) + "\n")
        assert enrolled.returncode == 0, enrolled.stderr

        booted = ws("agent", "boot", "--tpm", tpm.tcti, "--state", str(state))
        assert booted.returncode == 0, booted.stderr
        assert (state / "eventlog.bin").stat().st_size > 1000
        again = ws("agent", "boot", "--tpm", tpm.tcti, "--state", str(state))
        assert again.returncode == 2 and "restart it" in again.stderr

        # The release team: golden PCRs of the release, signed with its key (made by openssl).
        key = tmp_path / "release.key"
        subprocess.run(
            ["openssl", "ecparam", "-genkey", "-name", "prime256v1", "-noout", "-out", str(key)], check=True
        )
        public = subprocess.run(
            ["openssl", "pkey", "-in", str(key), "-pubout"], capture_output=True, text=True, check=True
        ).stdout
        pcrs = tmp_path / "pcrs.json"
        golden = ws("agent", "golden-pcrs")
        assert golden.returncode == 0, golden.stderr
        pcrs.write_text(golden.stdout)
        signed = ws(
            "release",
            "sign",
            "--key",
            str(key),
            "--model",
            "hauler-9",
            "--version",
            "2026.11.1",
            "--pcrs",
            str(pcrs),
        )
        assert signed.returncode == 0, signed.stderr
        key_id = operator.post("/v1/release-keys", {"name": "release team", "public_key_pem": public}).json()[
            "id"
        ]
        registered = operator.post("/v1/releases", {"key_id": key_id, "manifest": signed.stdout.strip()})
        assert registered.status_code == 201, registered.text

        attested = ws("agent", "attest", *server)
        assert attested.returncode == 0, attested.stderr
        assert "status:     affirming" in attested.stdout and "release:    2026.11.1" in attested.stdout
        token = attested.stdout.strip().splitlines()[-1]
        keys = client.get("/v1/jwks").json()["keys"]
        kid = jwt.get_unverified_header(token)["kid"]
        claims = jwt.decode(
            token, jwt.PyJWK(next(k for k in keys if k["kid"] == kid)).key, algorithms=["ES256"]
        )
        assert claims["weighstation"]["truck"] == truck

        before = AgentState.load(state).certificate_pem
        renewed = ws("agent", "renew", *server)
        assert renewed.returncode == 0, renewed.stderr
        after = AgentState.load(state).certificate_pem
        assert after is not None and after != before
        assert operator.truck_state(truck)["certificate_serial"] in renewed.stdout
        verify_chain(tmp_path, enrolling, after)
    assert os.stat(state).st_mode & 0o777 == 0o700
