"""Run the real service (`weighstation serve`) in a subprocess on a free loopback port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class RunningService:
    url: str
    admin_token: str
    data_dir: Path
    process: subprocess.Popen[bytes]

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)

    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_token}"}


def weighstation_command() -> list[str]:
    return [str(Path(sys.executable).with_name("weighstation"))]


@contextmanager
def running_service(
    data_dir: Path, env: Mapping[str, str] | None = None, workers: int = 1
) -> Iterator[RunningService]:
    port = free_port()
    token = "test-admin-token-" + os.urandom(8).hex()
    full_env = {
        **os.environ,
        "WEIGHSTATION_DATA_DIR": str(data_dir),
        "WEIGHSTATION_ADMIN_TOKEN": token,
        "WEIGHSTATION_PORT": str(port),
        "WEIGHSTATION_WORKERS": str(workers),
        "WEIGHSTATION_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "WEIGHSTATION_TRUST_DOMAIN": "fleet.test",
        **(env or {}),
    }
    data_dir.mkdir(parents=True, exist_ok=True)
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
        yield RunningService(url=url, admin_token=token, data_dir=data_dir, process=process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
