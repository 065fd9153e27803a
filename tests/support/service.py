"""Run the real service (`weighstation serve`) in a subprocess on a free loopback port, with a global-admin
operator bootstrapped by `weighstation client create` before it starts (the way an operator sets up a box)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class RunningService:
    url: str
    admin_client_id: str
    admin_client_secret: str
    data_dir: Path
    process: subprocess.Popen[bytes]
    env: dict[str, str] = field(default_factory=dict, compare=False, repr=False)  # as `serve` got it
    # The admin's current access token and its expiry (monotonic seconds), refreshed when near it.
    _token: dict[str, tuple[str, float]] = field(default_factory=dict, compare=False, repr=False)

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)

    @property
    def public_url(self) -> str:
        """The URL the service names itself by (tokens' aud, request JWTs' htu): replicas share one."""
        return self.env.get("WEIGHSTATION_PUBLIC_URL", self.url)

    def admin_token(self) -> str:
        """An access token of the bootstrapped global-admin operator (client credentials grant)."""
        cached = self._token.get("admin")
        if cached is not None and cached[1] - time.monotonic() > 30:
            return cached[0]
        response = httpx.post(
            f"{self.url}/v1/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=(self.admin_client_id, self.admin_client_secret),
            timeout=30,
        )
        assert response.status_code == 200, response.text
        body = response.json()
        self._token["admin"] = (body["access_token"], time.monotonic() + int(body["expires_in"]))
        token: str = body["access_token"]
        return token

    def admin(self) -> dict[str, str]:
        """Headers of the global-admin operator (the name is kept from the admin-token days)."""
        return {"Authorization": f"Bearer {self.admin_token()}"}

    def client_token(self, **registration: Any) -> str:
        """Register a client as the global admin (POST /v1/clients; organisation "org" and a fresh name
        unless given) and return an access token for it."""
        body = {"name": f"client-{uuid.uuid4().hex[:8]}", "organisation": "org", **registration}
        with self.client() as http:
            registered = http.post("/v1/clients", json=body, headers=self.admin())
            assert registered.status_code == 201, registered.text
            issued = http.post(
                "/v1/oauth/token",
                data={"grant_type": "client_credentials"},
                auth=(registered.json()["client_id"], registered.json()["client_secret"]),
            )
        assert issued.status_code == 200, issued.text
        token: str = issued.json()["access_token"]
        return token

    def client_headers(self, **registration: Any) -> dict[str, str]:
        """`client_token`'s token as Authorization headers."""
        return {"Authorization": f"Bearer {self.client_token(**registration)}"}


def weighstation_command() -> list[str]:
    return [str(Path(sys.executable).with_name("weighstation"))]


def bootstrap_admin(env: Mapping[str, str]) -> dict[str, str]:
    """Create a global-admin operator in the configured database, as the README's bootstrap does."""
    result = subprocess.run(
        [
            *weighstation_command(),
            "client",
            "create",
            "--kind=operator",
            "--name=test admin",
            "--global-admin",
        ],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    created: dict[str, str] = json.loads(result.stdout)
    return created


def ws(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """Run the `weighstation` command line as a user would (text in and out, no exception on failure)."""
    return subprocess.run(
        [*weighstation_command(), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@contextmanager
def running_service(
    data_dir: Path, env: Mapping[str, str] | None = None, workers: int = 1
) -> Iterator[RunningService]:
    port = free_port()
    full_env = {
        **os.environ,
        "WEIGHSTATION_DATA_DIR": str(data_dir),
        "WEIGHSTATION_PORT": str(port),
        "WEIGHSTATION_WORKERS": str(workers),
        "WEIGHSTATION_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "WEIGHSTATION_TRUST_DOMAIN": "fleet.test",
        **(env or {}),
    }
    data_dir.mkdir(parents=True, exist_ok=True)
    admin = bootstrap_admin(full_env)
    log_path = data_dir / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen([*weighstation_command(), "serve"], env=full_env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"weighstation exited early:\n{log_path.read_text()[-4000:]}")
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"weighstation not ready in 60 s:\n{log_path.read_text()[-4000:]}")
            time.sleep(0.1)
        yield RunningService(
            url=url,
            admin_client_id=admin["client_id"],
            admin_client_secret=admin["client_secret"],
            data_dir=data_dir,
            process=process,
            env=full_env,
        )
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
