"""Schemathesis over the whole OpenAPI of a live server: no input may produce a 5xx. It calls as the
bootstrapped global-admin operator, whose token must outlive the run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.service import running_service


def test_no_server_errors_anywhere(tmp_path: Path) -> None:
    with running_service(tmp_path / "data", {"WEIGHSTATION_ACCESS_TOKEN_TTL": "1h"}) as service:
        token = service.admin_token()
        url = service.url
        run(url, token, tmp_path)


def run(url: str, token: str, tmp_path: Path) -> None:
    st = Path(sys.executable).with_name("schemathesis")
    result = subprocess.run(
        [
            str(st),
            "run",
            f"{url}/schema/openapi.json",
            "--checks",
            "not_a_server_error",
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            "40",
            "--workers",
            "2",
            "-H",
            f"Authorization: Bearer {token}",
            "--request-timeout",
            "20",
            "--suppress-health-check",
            "all",
            "--seed",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "passed" in result.stdout.lower() or "no issues found" in result.stdout.lower(), result.stdout[
        -3000:
    ]
