"""HTTP issuance benchmark: stored CSR signing over HTTP, weighstation against OpenBao PKI on the same box.

    .venv/bin/python -m bench.http_issuance [--seconds 15] [--connections 16] [--workers 2]

Systems, each started by this script on 127.0.0.1, loaded one at a time, and stopped again:

* ``bao-dev``   OpenBao PKI ``sign`` with dev in-memory storage (not durable: the stretch peer).
* ``bao-raft``  OpenBao PKI ``sign`` with integrated raft storage on disk (durable: the like-for-like peer).
* ``ours``      ``weighstation serve`` ``POST /v1/certificates`` on SQLite (its default durable store).
* ``ours-pg``   the same on a scratch PostgreSQL database (created and dropped by this script).

All issue the same pool of P-256 CSRs with a SPIFFE URI SAN (the truck profile) and store the result.
The load generator (``bench.loadgen``) is a separate process sharing the 2-core box with the server; its
CPU use is measured and printed. Every figure is printed beside ratios to the peers measured in this run.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
BAO = VENV_BIN / "bao"
WEIGHSTATION = VENV_BIN / "weighstation"
OUT = Path(__file__).resolve().parent / "out" / "http_issuance.json"
TRUST_DOMAIN = "bench.test"
ROLE = "truck"
HOST = "127.0.0.1"
STOP_GRACE_S = 5.0

# -- CSRs -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Csr:
    index: int
    pem: str

    @property
    def name(self) -> str:
        return f"t-{self.index}"

    @property
    def uri(self) -> str:
        return f"spiffe://{TRUST_DOMAIN}/fleet/f1/truck/{self.name}"


def make_csrs(count: int) -> list[Csr]:
    """P-256 CSRs with an empty subject and one SPIFFE URI SAN, as a truck would send."""
    out = []
    for i in range(count):
        key = ec.generate_private_key(ec.SECP256R1())
        uri = f"spiffe://{TRUST_DOMAIN}/fleet/f1/truck/t-{i}"
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([]))
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=False)
            .sign(key, hashes.SHA256())
        )
        out.append(Csr(i, csr.public_bytes(serialization.Encoding.PEM).decode()))
    return out


def raw_sign_rate(csrs: list[Csr], seconds: float) -> float:
    """In-process `cryptography` sign-from-CSR (parse + verify CSR, build, sign): the physical limit."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench CA")])
    not_before = dt.datetime.now(dt.UTC)
    not_after = not_before + dt.timedelta(hours=24)
    done = 0
    deadline = time.perf_counter() + seconds
    start = time.perf_counter()
    while time.perf_counter() < deadline:
        csr = x509.load_pem_x509_csr(csrs[done % len(csrs)].pem.encode())
        if not csr.is_signature_valid:
            raise RuntimeError("bad CSR signature")
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(ca_name)
            .public_key(csr.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(san, critical=True)
            .sign(ca_key, hashes.SHA256())
        )
        done += 1
    return done / (time.perf_counter() - start)


# -- processes --------------------------------------------------------------------------------------


def free_port(*, with_next: bool = False) -> int:
    """A free TCP port on 127.0.0.1 (and port+1 also free when `with_next`, for a cluster listener)."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((HOST, 0))
            port = int(s.getsockname()[1])
        if not with_next:
            return port
        if port < 65535:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s2:
                try:
                    s2.bind((HOST, port + 1))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port pair found")


def _descendants(pid: int) -> list[int]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rfind(")") + 2 :].split()[1])
        tree.setdefault(ppid, []).append(int(entry))
    out: list[int] = []
    stack = list(tree.get(pid, []))
    while stack:
        child = stack.pop()
        out.append(child)
        stack.extend(tree.get(child, []))
    return out


class Managed:
    """A server process this script started; `stop` terminates it (and anything it spawned)."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path, cwd: Path) -> None:
        self.name = name
        self.log = log
        self._log_file = log.open("wb")
        self.proc = subprocess.Popen(
            argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=self._log_file, stderr=subprocess.STDOUT
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, lines: int = 20) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        # Remember the children now: once the parent is gone they are re-parented and harder to find.
        children = _descendants(self.proc.pid) if self.alive() else []
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=STOP_GRACE_S)
        deadline = time.monotonic() + STOP_GRACE_S
        for child in children:
            while time.monotonic() < deadline and _pid_alive(child):
                time.sleep(0.05)
            if _pid_alive(child):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signal.SIGKILL)
        self._log_file.close()


def _pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2 :].split()[0] != "Z"


def clean_env(**extra: str) -> dict[str, str]:
    """The parent environment without Vault/OpenBao/weighstation variables, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_", "WEIGHSTATION_"))}
    env.update(extra)
    return env


def wait_until(what: str, check: Callable[[], bool], timeout_s: float, proc: Managed | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{what}: process exited ({proc.proc.returncode}); log tail:\n{proc.tail()}")
        with contextlib.suppress(httpx.HTTPError):
            if check():
                return
        time.sleep(0.1)
    tail = f"; log tail:\n{proc.tail()}" if proc is not None else ""
    raise RuntimeError(f"{what}: not ready after {timeout_s:.0f} s{tail}")


# -- OpenBao ---------------------------------------------------------------------------------------


def bao_call(
    client: httpx.Client, method: str, path: str, token: str | None, body: dict[str, Any] | None = None
) -> dict[str, Any]:
    headers = {"X-Vault-Token": token} if token else {}
    response = client.request(method, f"/v1/{path}", json=body, headers=headers)
    if response.status_code >= 300:
        raise RuntimeError(f"OpenBao {method} {path}: HTTP {response.status_code}: {response.text[:500]}")
    if not response.content:
        return {}
    data: dict[str, Any] = response.json()
    return data


def bao_setup_pki(base: str, token: str, audit_file: Path | None) -> None:
    """Mount PKI, make an internal EC P-256 root, and a role that signs SPIFFE truck CSRs (stored)."""
    with httpx.Client(base_url=base, timeout=30.0) as c:
        bao_call(c, "POST", "sys/mounts/pki", token, {"type": "pki", "config": {"max_lease_ttl": "87600h"}})
        bao_call(
            c,
            "POST",
            "pki/root/generate/internal",
            token,
            {"common_name": "bench root", "key_type": "ec", "key_bits": 256, "ttl": "87600h"},
        )
        bao_call(
            c,
            "POST",
            f"pki/roles/{ROLE}",
            token,
            {
                "allowed_uri_sans": f"spiffe://{TRUST_DOMAIN}/*",
                "allow_any_name": True,
                "key_type": "ec",
                "key_bits": 256,
                "no_store": False,
                "ttl": "24h",
                "max_ttl": "24h",
            },
        )
        if audit_file is not None:
            bao_call(
                c,
                "POST",
                "sys/audit/file",
                token,
                {"type": "file", "options": {"file_path": str(audit_file)}},
            )


def bao_bodies(csrs: list[Csr]) -> list[dict[str, Any]]:
    return [{"csr": c.pem, "common_name": c.name, "uri_sans": c.uri} for c in csrs]


@dataclass
class Target:
    url: str
    headers: dict[str, str]
    bodies: list[dict[str, Any]]
    expected_status: int
    pids: list[int]
    notes: dict[str, Any] = field(default_factory=dict)


@contextlib.contextmanager
def bao_dev(work: Path, csrs: list[Csr], audit: bool) -> Iterator[Target]:
    port = free_port(with_next=True)  # the dev server also listens on port+1 for cluster traffic
    token = uuid.uuid4().hex
    home = work / "bao-dev-home"
    home.mkdir()
    argv = [
        str(BAO),
        "server",
        "-dev",
        f"-dev-listen-address={HOST}:{port}",
        f"-dev-root-token-id={token}",
        "-dev-no-store-token",
    ]
    proc = Managed("bao-dev", argv, clean_env(HOME=str(home)), work / "bao-dev.log", work)
    try:
        base = f"http://{HOST}:{port}"
        wait_until(
            "bao dev", lambda: httpx.get(f"{base}/v1/sys/health", timeout=2).status_code == 200, 30, proc
        )
        bao_setup_pki(base, token, work / "bao-dev-audit.log" if audit else None)
        yield Target(
            f"{base}/v1/pki/sign/{ROLE}", {"X-Vault-Token": token}, bao_bodies(csrs), 200, [proc.pid]
        )
    finally:
        proc.stop()


# Durable peer configuration (HCL). Integrated raft storage on local disk, one node; plain HTTP on
# loopback; mlock disabled (the box does not grant it; it only keeps secrets out of swap):
#
#   storage "raft" { path = "<tmp>/raft"  node_id = "n1" }
#   listener "tcp" { address = "127.0.0.1:<port>"  cluster_address = "127.0.0.1:<port+1>"
#                    tls_disable = true }
#   api_addr      = "http://127.0.0.1:<port>"
#   cluster_addr  = "https://127.0.0.1:<port+1>"
#   disable_mlock = true
#   ui            = false
#
# It is then initialised with one key share (sys/init), unsealed (sys/unseal), and used once sys/health
# answers 200 (raft leader elected, node active).
RAFT_CONFIG = """\
storage "raft" {{
  path    = "{path}"
  node_id = "n1"
}}
listener "tcp" {{
  address         = "{host}:{port}"
  cluster_address = "{host}:{cport}"
  tls_disable     = true
}}
api_addr      = "http://{host}:{port}"
cluster_addr  = "https://{host}:{cport}"
disable_mlock = true
ui            = false
"""


@contextlib.contextmanager
def bao_raft(work: Path, csrs: list[Csr], audit: bool) -> Iterator[Target]:
    port = free_port(with_next=True)
    raft_dir = work / "bao-raft-data"
    raft_dir.mkdir()
    home = work / "bao-raft-home"
    home.mkdir()
    config = work / "bao-raft.hcl"
    config.write_text(RAFT_CONFIG.format(path=raft_dir, host=HOST, port=port, cport=port + 1))
    argv = [str(BAO), "server", f"-config={config}"]
    proc = Managed("bao-raft", argv, clean_env(HOME=str(home)), work / "bao-raft.log", work)
    base = f"http://{HOST}:{port}"
    try:
        # sys/health answers 501 while uninitialised, 503 while sealed, 200 once active.
        wait_until(
            "bao raft listener",
            lambda: httpx.get(f"{base}/v1/sys/health", timeout=2).status_code in (501, 503, 200),
            30,
            proc,
        )
        with httpx.Client(base_url=base, timeout=30.0) as c:
            init = bao_call(c, "PUT", "sys/init", None, {"secret_shares": 1, "secret_threshold": 1})
            token = str(init["root_token"])
            bao_call(c, "PUT", "sys/unseal", None, {"key": init["keys_base64"][0]})
        wait_until(
            "bao raft active",
            lambda: httpx.get(f"{base}/v1/sys/health", timeout=2).status_code == 200,
            60,
            proc,
        )
        bao_setup_pki(base, token, work / "bao-raft-audit.log" if audit else None)
        yield Target(
            f"{base}/v1/pki/sign/{ROLE}",
            {"X-Vault-Token": token},
            bao_bodies(csrs),
            200,
            [proc.pid],
            {"raft_dir": str(raft_dir)},
        )
    finally:
        proc.stop()


# -- weighstation ----------------------------------------------------------------------------------


@contextlib.contextmanager
def ours(work: Path, csrs: list[Csr], workers: int, database_url: str | None, tag: str) -> Iterator[Target]:
    port = free_port()
    data_dir = work / f"{tag}-data"
    data_dir.mkdir()
    env = clean_env(
        WEIGHSTATION_DATA_DIR=str(data_dir),
        WEIGHSTATION_ACCESS_TOKEN_TTL="1h",  # outlives the run: one token for every request
        WEIGHSTATION_PORT=str(port),
        WEIGHSTATION_HOST=HOST,
        WEIGHSTATION_TRUST_DOMAIN=TRUST_DOMAIN,
        WEIGHSTATION_WORKERS=str(workers),
        WEIGHSTATION_LOG_LEVEL="WARNING",
        WEIGHSTATION_PUBLIC_URL=f"http://{HOST}:{port}",
    )
    if database_url:
        env["WEIGHSTATION_DATABASE_URL"] = database_url
    # The first operator is created on the box, before the server starts (README: bootstrap).
    created = subprocess.run(
        [str(WEIGHSTATION), "client", "create", "--kind=operator", "--name=bench", "--global-admin"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    admin = json.loads(created.stdout)
    proc = Managed(tag, [str(WEIGHSTATION), "serve"], env, work / f"{tag}.log", REPO)
    base = f"http://{HOST}:{port}"
    try:
        wait_until(
            "weighstation /readyz",
            lambda: httpx.get(f"{base}/readyz", timeout=2).status_code == 200,
            90,
            proc,
        )
        issued = httpx.post(
            f"{base}/v1/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=(admin["client_id"], admin["client_secret"]),
            timeout=30,
        )
        issued.raise_for_status()
        token = issued.json()["access_token"]
        bodies = [{"profile": "truck", "csr": c.pem} for c in csrs]
        yield Target(
            f"{base}/v1/certificates",
            {"Authorization": f"Bearer {token}"},
            bodies,
            201,
            [proc.pid],
            {"workers": workers, "database": "postgresql" if database_url else "sqlite"},
        )
    finally:
        proc.stop()


@contextlib.contextmanager
def scratch_postgres() -> Iterator[str]:
    """A fresh database on the local PostgreSQL, dropped afterwards; yields its SQLAlchemy URL."""
    name = f"ws_bench_{uuid.uuid4().hex[:10]}"
    psql = ["psql", "-h", HOST, "-U", "postgres", "-d", "test", "-v", "ON_ERROR_STOP=1", "-q", "-c"]
    subprocess.run([*psql, f"create database {name}"], check=True, timeout=30, capture_output=True)
    try:
        yield f"postgresql+psycopg://postgres@{HOST}:5432/{name}"
    finally:
        subprocess.run(
            [*psql, f"drop database if exists {name} with (force)"],
            check=False,
            timeout=30,
            capture_output=True,
        )


# -- load -------------------------------------------------------------------------------------------


def run_load(
    target: Target, connections: int, seconds: float, warmup: float, work: Path, client: str
) -> dict[str, Any]:
    spec = {
        "client": client,
        "url": target.url,
        "headers": target.headers,
        "bodies": target.bodies,
        "expected_status": target.expected_status,
        "connections": connections,
        "warmup_s": warmup,
        "seconds": seconds,
        "watch_pids": target.pids,
    }
    spec_file = work / f"spec-{uuid.uuid4().hex[:8]}.json"
    spec_file.write_text(json.dumps(spec))
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.loadgen", str(spec_file)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = proc.communicate(timeout=warmup + seconds + 60)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"load generator failed ({proc.returncode}):\n{err[-2000:]}")
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


# -- main -------------------------------------------------------------------------------------------


def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def _sigterm(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


SYSTEMS = ("bao-dev", "bao-raft", "ours", "ours-pg")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.http_issuance", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--seconds", type=float, default=15.0, help="measured seconds per system (default 15)"
    )
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds, not measured (default 2)")
    parser.add_argument("--connections", type=int, default=16, help="concurrent connections (default 16)")
    parser.add_argument("--workers", type=int, default=2, help="weighstation workers (default 2)")
    parser.add_argument("--csrs", type=int, default=200, help="CSR pool size (default 200)")
    parser.add_argument("--rounds", type=int, default=1, help="repeat all systems; medians reported")
    parser.add_argument(
        "--only", action="append", choices=SYSTEMS, help="run only these systems (repeatable; default all)"
    )
    parser.add_argument(
        "--client",
        choices=("raw", "httpx"),
        default="raw",
        help="load generator client: raw asyncio HTTP/1.1 (default) or httpx.AsyncClient (client-bound here)",
    )
    parser.add_argument("--bao-audit", action="store_true", help="enable a file audit device on OpenBao")
    parser.add_argument("--out", type=Path, default=OUT, help=f"JSON results (default {OUT})")
    args = parser.parse_args(argv)
    systems = [s for s in SYSTEMS if not args.only or s in args.only]

    signal.signal(signal.SIGTERM, _sigterm)
    cores = os.cpu_count() or 0
    print(
        f"HTTP issuance benchmark: {cores} cores, {args.connections} connections, "
        f"{args.warmup:.0f} s warm-up + {args.seconds:.0f} s measured, {args.rounds} round(s), "
        f"{args.client} client in a separate process on the same box"
    )
    print(f"generating {args.csrs} P-256 CSRs (spiffe://{TRUST_DOMAIN}/fleet/f1/truck/t-<i>) ...")
    csrs = make_csrs(args.csrs)
    raw = raw_sign_rate(csrs, 2.0)
    print(f"reference: in-process cryptography sign-from-CSR, 1 core: {raw:,.0f} certs/s")

    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in systems}
    failures: dict[str, str] = {}
    work = Path(tempfile.mkdtemp(prefix="ws-bench-http-"))
    try:
        for round_no in range(args.rounds):
            for system in systems:
                if system in failures:
                    continue
                sub = work / f"r{round_no}-{system}"
                sub.mkdir()
                print(f"[round {round_no + 1}] {system}: starting ...", flush=True)
                try:
                    with contextlib.ExitStack() as stack:
                        if system == "bao-dev":
                            target = stack.enter_context(bao_dev(sub, csrs, args.bao_audit))
                        elif system == "bao-raft":
                            target = stack.enter_context(bao_raft(sub, csrs, args.bao_audit))
                        elif system == "ours":
                            target = stack.enter_context(ours(sub, csrs, args.workers, None, "ours"))
                        else:
                            url = stack.enter_context(scratch_postgres())
                            target = stack.enter_context(ours(sub, csrs, args.workers, url, "ours-pg"))
                        result = run_load(
                            target, args.connections, args.seconds, args.warmup, sub, args.client
                        )
                        result["notes"] = target.notes
                except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                    failures[system] = str(exc)
                    print(f"  {system}: NOT RUN: {str(exc)[:1500]}", flush=True)
                    continue
                runs[system].append(result)
                print(
                    f"  {system}: {result['rate']:,.0f} req/s  p50 {result['p50_ms']:.1f} ms  "
                    f"p99 {result['p99_ms']:.1f} ms  errors {result['errors']}  "
                    f"server {_fmt(result['server_cores'], '.2f')} cores "
                    f"({_fmt(result['server_cpu_ms_per_req'], '.2f')} ms CPU/req)  "
                    f"client {result['client_cores']:.2f} cores",
                    flush=True,
                )
                for sample in result["error_samples"]:
                    print(f"    error sample: {sample[:200]}")
    except KeyboardInterrupt:
        print("interrupted; servers stopped", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(work, ignore_errors=True)

    summary: dict[str, dict[str, Any]] = {}
    for system, results in runs.items():
        if not results:
            continue
        summary[system] = {
            "rate": statistics.median(r["rate"] for r in results),
            "p50_ms": statistics.median(r["p50_ms"] for r in results),
            "p99_ms": statistics.median(r["p99_ms"] for r in results),
            "errors": sum(r["errors"] for r in results),
            "client_cores": statistics.median(r["client_cores"] for r in results),
            "server_cores": statistics.median(r["server_cores"] for r in results),
            "server_cpu_ms_per_req": statistics.median(r["server_cpu_ms_per_req"] or 0.0 for r in results),
        }

    def ratio(a: str, b: str) -> float | None:
        if a in summary and b in summary and summary[b]["rate"] > 0:
            return float(summary[a]["rate"] / summary[b]["rate"])
        return None

    print()
    print(
        f"{'system':<10} {'certs/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} "
        f"{'srv cores':>9} {'CPU ms/req':>10} {'cli cores':>9} {'/bao-raft':>9} {'/bao-dev':>9}"
    )
    for system in SYSTEMS:
        if system not in summary:
            reason = "not run" if system not in failures else "FAILED (see above)"
            if system in systems:
                print(f"{system:<10} {reason}")
            continue
        s = summary[system]
        print(
            f"{system:<10} {s['rate']:>9,.0f} {s['p50_ms']:>8.1f} {s['p99_ms']:>8.1f} {s['errors']:>7} "
            f"{s['server_cores']:>9.2f} {s['server_cpu_ms_per_req']:>10.2f} {s['client_cores']:>9.2f} "
            f"{_fmt(ratio(system, 'bao-raft'), '>9.2f')} {_fmt(ratio(system, 'bao-dev'), '>9.2f')}"
        )
    print(
        f"(client = the load generator, on the same {cores}-core box as the server; cores = CPU-seconds "
        "per wall second over the measured window; reference in-process sign-from-CSR "
        f"{raw:,.0f}/s)"
    )
    targets = {
        "ours/bao-raft (target >= 1.0)": ratio("ours", "bao-raft"),
        "ours/bao-dev (stretch >= 1.0)": ratio("ours", "bao-dev"),
        "ours-pg/bao-raft": ratio("ours-pg", "bao-raft"),
        "ours-pg/bao-dev": ratio("ours-pg", "bao-dev"),
        "bao-raft/bao-dev": ratio("bao-raft", "bao-dev"),
    }
    for label, value in targets.items():
        if value is not None:
            print(f"  {label}: {value:.2f}")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "benchmark": "http_issuance",
                "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "cores": cores,
                "connections": args.connections,
                "seconds": args.seconds,
                "warmup_s": args.warmup,
                "rounds": args.rounds,
                "workers": args.workers,
                "client": args.client,
                "bao_audit": args.bao_audit,
                "raw_sign_from_csr_per_s": raw,
                "summary": summary,
                "ratios": {k: v for k, v in targets.items()},
                "runs": runs,
                "failures": failures,
            },
            indent=2,
        )
    )
    print(f"results written to {args.out}")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
