"""`weighstation agent enroll` end to end: the operator registers a truck over HTTP, the agent CLI enrolls
a real swtpm with the running service, and the chain it saved passes `openssl verify`."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from agent.state import AgentState
from tests.support.enrolling import Operator
from tests.support.service import RunningService, weighstation_command
from tests.support.swtpm import ManufacturerCa, RunningTpm, running_tpms

pytestmark = pytest.mark.integration
PEM = serialization.Encoding.PEM


def agent_enroll(
    service: RunningService,
    tpm: RunningTpm,
    state: Path,
    *args: str,
    token: str | None = None,
    env_token: str = "",
) -> subprocess.CompletedProcess[str]:
    command = [*weighstation_command(), "agent", "enroll", "--tpm", tpm.tcti, "--server", service.url]
    command += ["--state", str(state), *args]
    env = {**os.environ, "WEIGHSTATION_ENROLLMENT_TOKEN": env_token}
    if token is not None:
        command += ["--token", "-"]
    return subprocess.run(
        command, input=(token or "") + "\n", capture_output=True, text=True, env=env, timeout=120, check=False
    )


def agent_boot(tpm: RunningTpm, directory: Path) -> list[str]:
    """`weighstation agent boot` into `directory`: the `--event-log` arguments of its log."""
    command = [*weighstation_command(), "agent", "boot", "--tpm", tpm.tcti, "--state", str(directory)]
    booted = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert booted.returncode == 0, booted.stderr
    return ["--event-log", str(directory / "eventlog.bin")]


@pytest.fixture(scope="module")
def released(enrolling: RunningService) -> RunningService:
    """The service (asking for a first quote at enrollment: the default) with the default boot's release."""
    with enrolling.client() as client:
        Operator(enrolling, client).golden_release()
    return enrolling


def verify_chain(workdir: Path, service: RunningService, certificate_pem: bytes) -> None:
    with service.client() as client:
        bundle = x509.load_pem_x509_certificates(client.get("/v1/ca/bundle").content)
    roots = [c for c in bundle if c.issuer == c.subject]
    saved = x509.load_pem_x509_certificates(certificate_pem)
    (workdir / "root.pem").write_bytes(b"".join(c.public_bytes(PEM) for c in roots))
    (workdir / "chain.pem").write_bytes(b"".join(c.public_bytes(PEM) for c in saved[1:]))
    (workdir / "leaf.pem").write_bytes(saved[0].public_bytes(PEM))
    result = subprocess.run(
        ["openssl", "verify", "-CAfile", "root.pem", "-untrusted", "chain.pem", "leaf.pem"],
        cwd=workdir,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0 and "leaf.pem: OK" in result.stdout, result.stdout + result.stderr


def test_agent_cli_enrolls_an_ecc_truck(released: RunningService, tpm: RunningTpm, tmp_path: Path) -> None:
    enrolling = released
    with enrolling.client() as client:
        operator = Operator(enrolling, client)
        fleet = operator.fleet()
        truck = operator.truck(fleet)
        token = operator.token(truck)
        state_dir = tmp_path / "agent-state"
        event_log = agent_boot(tpm, tmp_path / "boot")
        result = agent_enroll(
            enrolling, tpm, state_dir, "--truck", truck, "--ek", "ecc", *event_log, token=token
        )
        assert result.returncode == 0, result.stdout + result.stderr
        spiffe = f"spiffe://fleet.test/fleet/{fleet}/truck/{truck}"
        assert spiffe in result.stdout
        assert operator.truck_state(truck)["state"] == "enrolled"

        # The state is private and reloads; its certificate is the leaf then the chain.
        assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700
        assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in state_dir.iterdir())
        state = AgentState.load(state_dir)
        assert state.certificate_pem is not None and state.ek_kind == "ecc"
        verify_chain(tmp_path, enrolling, state.certificate_pem)

        # The token was used: a second run is refused by the server and writes no state.
        again = agent_enroll(enrolling, tpm, tmp_path / "second", *event_log, token=token)
        assert again.returncode == 2, again.stdout + again.stderr
        assert "enrollment refused: 401 enrollment-token-used" in again.stderr
        assert not (tmp_path / "second").exists()


def test_agent_cli_enrolls_with_an_rsa_ek_and_ak(
    released: RunningService, rsa_tpm: RunningTpm, tmp_path: Path
) -> None:
    enrolling = released
    with enrolling.client() as client:
        operator = Operator(enrolling, client)
        truck = operator.truck()
        result = agent_enroll(
            enrolling,
            rsa_tpm,
            tmp_path / "state",
            "--ek",
            "rsa",
            "--ak",
            "rsa-2048",
            *agent_boot(rsa_tpm, tmp_path / "boot"),
            env_token=operator.token(truck),
        )
        assert result.returncode == 0, result.stdout + result.stderr
        state = AgentState.load(tmp_path / "state")
        assert state.ek_kind == "rsa" and state.certificate_pem is not None
        verify_chain(tmp_path, enrolling, state.certificate_pem)
        assert operator.truck_state(truck)["certificate_serial"] in result.stdout


def test_agent_cli_reports_an_untrusted_tpm(
    enrolling: RunningService, rogue_tpm: RunningTpm, tmp_path: Path
) -> None:
    with enrolling.client() as client:
        operator = Operator(enrolling, client)
        result = agent_enroll(
            enrolling, rogue_tpm, tmp_path / "state", token=operator.token(operator.truck())
        )
    assert result.returncode == 2
    assert "enrollment refused: 403 ek-chain-untrusted" in result.stderr
    assert not (tmp_path / "state").exists()


def test_agent_cli_boots_then_enrolls_with_its_first_quote(
    released: RunningService, manufacturer: ManufacturerCa, tmp_path: Path
) -> None:
    quoting = released
    with (
        running_tpms(tmp_path / "tpms", manufacturer, 1, "ecc", distinct=True) as (fresh,),
        quoting.client() as client,
    ):
        operator = Operator(quoting, client)
        truck = operator.truck()
        # No event log to send: the agent stops at the challenge's quote request, keeping nothing.
        unbooted = agent_enroll(quoting, fresh, tmp_path / "state", token=operator.token(truck))
        assert unbooted.returncode == 1, unbooted.stderr
        assert "first quote" in unbooted.stderr, unbooted.stderr
        assert not (tmp_path / "state").exists() or not any((tmp_path / "state").iterdir())
        event_log = agent_boot(fresh, tmp_path / "boot")
        result = agent_enroll(quoting, fresh, tmp_path / "state", *event_log, token=operator.token(truck))
        assert result.returncode == 0, result.stderr
        status = operator.get(f"/v1/trucks/{truck}/attestation").json()
        assert status["status"] == "affirming" and status["release_id"]
