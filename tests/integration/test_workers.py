"""`weighstation serve` with several workers (api.workers): each worker listens on its own socket, so a
client's pool of keep-alive connections is spread over the workers; a worker that dies is replaced; SIGTERM
stops every worker and the supervisor exits 0."""

from __future__ import annotations

import collections
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.support.service import RunningService, running_service


def children(pid: int) -> set[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False).stdout
    return {int(p) for p in found.split()}


def wait_for(what: str, check: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def socket_pids(service: RunningService, *state: str) -> list[int]:
    """The pid of each of the service port's sockets in `state` (ss: listening or established ones)."""
    port = service.url.rsplit(":", 1)[1]
    listing = subprocess.run(
        ["ss", "-tnpH", *state, f"( sport = :{port} )"], capture_output=True, text=True, check=True
    ).stdout
    return [int(p) for p in re.findall(r"pid=(\d+)", listing)]


def workers_of(service: RunningService) -> set[int]:
    """The serving workers: the supervisor's children that listen on the service's port."""
    return set(socket_pids(service, "-l")) & children(service.process.pid)


def connections_per_worker(service: RunningService) -> collections.Counter[int]:
    return collections.Counter(socket_pids(service, "state", "established"))


def test_connections_spread_a_dead_worker_is_replaced_and_sigterm_stops_all(tmp_path: Path) -> None:
    with running_service(tmp_path / "data", workers=2) as service:
        wait_for("two listening workers", lambda: len(workers_of(service)) == 2)
        first = workers_of(service)

        # 32 keep-alive connections, each kept open across two requests: the kernel hashes each to one of
        # the two sockets; all 32 on one worker would happen once in 2**31 runs.
        clients = [httpx.Client(base_url=service.url, timeout=10) for _ in range(32)]
        try:
            for client in clients:
                assert client.get("/readyz").status_code == 200
            spread = connections_per_worker(service)
            assert set(spread) == first and all(n >= 1 for n in spread.values()), spread
            assert sum(spread.values()) == 32
            for client in clients:
                assert client.get("/healthz").status_code == 200
        finally:
            for client in clients:
                client.close()

        victim = sorted(first)[0]
        os.kill(victim, signal.SIGKILL)

        def replaced() -> bool:
            now = workers_of(service)
            return len(now) == 2 and victim not in now

        wait_for("a replacement worker", replaced)
        for _ in range(20):  # every connection lands on a live worker
            assert httpx.get(f"{service.url}/readyz", timeout=10).status_code == 200
        serving = workers_of(service)

        service.process.send_signal(signal.SIGTERM)
        assert service.process.wait(timeout=60) == 0
        wait_for("every worker gone", lambda: not any(Path(f"/proc/{pid}").exists() for pid in serving), 10)
