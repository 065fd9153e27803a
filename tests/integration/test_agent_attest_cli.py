"""The truck's life on the command line, against the running service: the release team signs the golden
release and the operator registers it, the truck boots (measured into the TPM), enrolls with that boot's
first quote, attests and renews.
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
from tests.support.service import RunningService, ws
from tests.support.swtpm import RunningTpm

pytestmark = pytest.mark.integration


def test_truck_enrolls_boots_attests_and_renews_on_the_command_line(
    enrolling: RunningService, tpm: RunningTpm, tmp_path: Path
) -> None:
    state = tmp_path / "truck-state"
    server = ["--tpm", tpm.tcti, "--server", enrolling.url, "--state", str(state)]
    with enrolling.client() as client:
        operator = Operator(enrolling, client)
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

        # Boot (measured into the TPM, the log written alongside), then enroll: the first quote covers it.
        boot = tmp_path / "boot"
        booted = ws("agent", "boot", "--tpm", tpm.tcti, "--state", str(boot))
        assert booted.returncode == 0, booted.stderr
        assert (boot / "eventlog.bin").stat().st_size > 1000
        again = ws("agent", "boot", "--tpm", tpm.tcti, "--state", str(boot))
        assert again.returncode == 2 and "restart it" in again.stderr
        event_log = ["--event-log", str(boot / "eventlog.bin")]
        truck = operator.truck()
        enrollment_token = operator.token(truck) + "\n"
        enrolled = ws("agent", "enroll", *server, *event_log, "--token", "-", stdin=enrollment_token)
        assert enrolled.returncode == 0, enrolled.stderr

        attested = ws("agent", "attest", *server, *event_log)
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
        renewed = ws("agent", "renew", *server, *event_log)
        assert renewed.returncode == 0, renewed.stderr
        after = AgentState.load(state).certificate_pem
        assert after is not None and after != before
        assert operator.truck_state(truck)["certificate_serial"] in renewed.stdout
        verify_chain(tmp_path, enrolling, after)
    assert os.stat(state).st_mode & 0o777 == 0o700
