"""Operator CLI on the box: a CSR made by `openssl req`, issued, shown, revoked; CA rotated."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from cryptography import x509

from tests.support.service import weighstation_command


def run_cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WEIGHSTATION_DATA_DIR": str(data_dir), "WEIGHSTATION_TRUST_DOMAIN": "fleet.test"}
    return subprocess.run(
        [*weighstation_command(), *args], capture_output=True, text=True, env=env, check=False, timeout=120
    )


def test_cli_issue_show_revoke_rotate(tmp_path: Path) -> None:
    data = tmp_path / "data"
    key, csr = tmp_path / "key.pem", tmp_path / "csr.pem"
    made = subprocess.run(
        [
            "openssl",
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(csr),
            "-subj",
            "/CN=ignored",
            "-addext",
            "subjectAltName=URI:spiffe://fleet.test/fleet/west/truck/cli-1",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    out = tmp_path / "cert.pem"
    issued = run_cli(
        data, "cert", "issue", "--profile", "truck", "--csr", str(csr), "--ttl", "2h", "--out", str(out)
    )
    assert issued.returncode == 0, issued.stderr
    chain = x509.load_pem_x509_certificates(out.read_bytes())
    assert len(chain) == 3
    serial = format(chain[0].serial_number, "x")
    assert f"serial:     {serial}" in issued.stdout
    lifetime = chain[0].not_valid_after_utc - chain[0].not_valid_before_utc
    assert lifetime.total_seconds() <= 2 * 3600 + 60

    shown = run_cli(data, "cert", "show", serial)
    assert shown.returncode == 0 and "status:     valid" in shown.stdout
    revoked = run_cli(data, "cert", "revoke", serial, "--reason", "key_compromise")
    assert revoked.returncode == 0 and "revoked (key_compromise" in revoked.stdout
    again = run_cli(data, "cert", "revoke", serial)
    assert again.returncode == 1 and "already-revoked" in again.stderr

    rotated = run_cli(data, "ca", "rotate")
    assert rotated.returncode == 0 and "new issuing CA" in rotated.stdout
    listed = run_cli(data, "ca", "list")
    assert listed.stdout.count("issuing") == 2 and "retired" in listed.stdout
    bundle = run_cli(data, "ca", "bundle")
    assert len(x509.load_pem_x509_certificates(bundle.stdout.encode())) == 3

    bad = run_cli(data, "cert", "issue", "--profile", "truck", "--csr", str(key))
    assert bad.returncode == 1 and "malformed-csr" in bad.stderr
    misconfigured = subprocess.run(
        [*weighstation_command(), "ca", "list"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "WEIGHSTATION_DATA_DIR": str(data), "WEIGHSTATION_TRUST_DOMAIN": "Not A Domain"},
    )
    assert misconfigured.returncode == 2 and "WEIGHSTATION_TRUST_DOMAIN" in misconfigured.stderr
