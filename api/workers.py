"""Serving with several worker processes, each listening on its own socket (SO_REUSEPORT).

With one listening socket shared by every worker (uvicorn's own multi-worker mode), whichever process
wakes first accepts, and a client's keep-alive connections can all land on one worker: measured here, 31
of 32 connections on one process, one GIL doing the work of two. With a socket per worker bound to the
same address, the kernel spreads incoming connections over the sockets by a hash of each connection's
addresses, so a pool of keep-alive connections is split across the workers.

The supervisor starts the workers, replaces one that dies (logged), and on SIGTERM or SIGINT stops them
all: each is asked to shut down gracefully (uvicorn finishes its requests in flight) and is killed if it
has not exited within the grace period.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import socket
import threading
import time
from multiprocessing.process import BaseProcess
from types import FrameType

import uvicorn

log = logging.getLogger("weighstation.workers")
GRACE_S = 30.0
_POLL_S = 0.5
_RESTART_PAUSE_S = 1.0  # a worker that dies at once is not restarted in a tight loop


def listening_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on (host, port) that other sockets of this user may bind too."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


APP = "api.asgi:app_from_env"


def worker_config(host: str, port: int, app: str = APP) -> uvicorn.Config:
    """How each worker serves (`app`: an import string of an app factory)."""
    return uvicorn.Config(
        app,
        factory=True,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        # The peer address decides whether a forwarded client certificate is believed
        # (WEIGHSTATION_TRUSTED_PROXIES): never let X-Forwarded-For rewrite it.
        proxy_headers=False,
    )


def _worker(host: str, port: int, app: str) -> None:
    """One worker process: its own socket on the shared port, one uvicorn server on it."""
    sock = listening_socket(host, port)
    uvicorn.Server(worker_config(host, port, app)).run(sockets=[sock])


class Supervisor:
    def __init__(self, host: str, port: int, count: int, *, app: str = APP) -> None:
        self._host = host
        self._port = port
        self._count = count
        self._app = app
        # spawn: a fresh interpreter per worker, nothing of the parent's threads or connections.
        self._context = multiprocessing.get_context("spawn")
        self._workers: list[BaseProcess] = []
        self._stopping = threading.Event()

    def run(self) -> int:
        """Serve until SIGTERM or SIGINT; 0 after a clean stop."""
        # Bind once here first: a port in use fails the start now, with the reason, not in N workers.
        listening_socket(self._host, self._port).close()
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            self._workers = [self._start() for _ in range(self._count)]
            while not self._stopping.wait(_POLL_S):
                for index, worker in enumerate(self._workers):
                    if worker.exitcode is not None and not self._stopping.is_set():
                        log.error(
                            "worker exited; starting another",
                            extra={"pid": worker.pid, "exitcode": worker.exitcode},
                        )
                        time.sleep(_RESTART_PAUSE_S)
                        self._workers[index] = self._start()
        finally:
            self._stop_all()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return 0

    def _start(self) -> BaseProcess:
        worker = self._context.Process(target=_worker, args=(self._host, self._port, self._app), daemon=False)
        worker.start()
        return worker

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._stopping.set()

    def _stop_all(self) -> None:
        for worker in self._workers:
            if worker.exitcode is None:
                worker.terminate()  # SIGTERM: uvicorn's graceful shutdown
        deadline = time.monotonic() + GRACE_S
        for worker in self._workers:
            worker.join(max(0.0, deadline - time.monotonic()))
            if worker.exitcode is None:
                log.error("worker did not stop in time; killing it", extra={"pid": worker.pid})
                worker.kill()
                worker.join(5)
