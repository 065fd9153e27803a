"""Decision benchmarks: Cedar in-process vs raw cedarpy, the decision API over HTTP vs an empty Litestar
handler, and one batch of 1,000 trucks over HTTP vs 1,000 in-process decisions.

    python -m bench.decisions [--only inprocess|http|batch ...] [--seconds 10] [--rounds 3]
        [--connections 32] [--workers 2] [--trucks 1000]

Every figure is printed with its ratio to a baseline measured in the same run:

- inprocess: `PolicyEngine.decide` / `decide_batch` (policies/engine.py) against `cedarpy.is_authorized` /
  `is_authorized_batch` on the same pre-parsed policy set, schema and entities (the shipped policies,
  a broker contracting with a fleet of 100 attested trucks; batches of 100), alternating rounds,
  medians;
- http: `POST /v1/decisions` on `weighstation serve` (--workers, SQLite in a temp data dir) with a
  broker's real access token, against an empty Litestar JSON POST handler served by uvicorn with the
  same workers, loop and HTTP parser; load from bench.loadgen (raw client, own process), the two
  servers measured alternately for --rounds rounds, medians;
- batch: `POST /v1/decisions/batch` of all --trucks trucks, one request at a time, against
  --trucks in-process single decisions.

The trucks are seeded straight into the service's database (fleet, truck, a valid certificate row, an
affirming attestation valid for a day): what a decision reads, without enrolling 1,000 swtpm trucks.
Each decision then walks the whole path: token verification, the route guard's Cedar check, the live
state of the truck read from the database, Cedar, the audit row and the transparency-log entry.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cedarpy
import httpx
from litestar import Litestar, post
from sqlalchemy import create_engine, insert, text
from sqlmodel import SQLModel

from bench.common import alternating, table
from bench.http_issuance import (
    HOST,
    REPO,
    WEIGHSTATION,
    Managed,
    Target,
    _sigterm,
    clean_env,
    free_port,
    run_load,
    wait_until,
)
from bench.loadgen import tree_cpu_seconds
from policies.engine import PolicyEngine, read_policy_text
from policies.entities import ClientPrincipal, FleetState, TruckState, gate_context
from policies.policyset import compile_policies
from provision.tables import Fleet, IssuedCertificate, Truck, TruckAttestation

OUT = Path(__file__).resolve().parent / "out" / "decisions.json"
FLEET = "bench-fleet"
PARTS = ("inprocess", "http", "batch")
IN_PROCESS_BATCH = 100
IDLE_CORES = 0.05  # a server below this is idle: its log sequencer has caught up


# -- the baseline server ----------------------------------------------------------------------------


@post("/", status_code=200)
async def _empty(data: dict[str, Any]) -> dict[str, Any]:
    return {}


def baseline_app() -> Litestar:
    """An empty Litestar JSON POST handler: `uvicorn --factory bench.decisions:baseline_app`."""
    return Litestar([_empty], openapi_config=None)


# -- in-process -------------------------------------------------------------------------------------


def _states(count: int, now: datetime) -> list[TruckState]:
    return [
        TruckState(
            id=f"t-{i}",
            fleet=FLEET,
            attestation_status="affirming",
            attested_until=now + timedelta(days=1),
            quarantined=False,
            certificate_status="valid",
            autonomy_mode="unknown",
            release=None,
            release_revoked=False,
        )
        for i in range(count)
    ]


def in_process(trucks: int, n: int, rounds: int) -> dict[str, Any]:
    now = datetime.now(UTC)
    engine = PolicyEngine.from_directory()
    # The raw side gets its own handles of the same text, parsed the same way, and the same entities.
    schema = cedarpy.Schema.from_str(
        (Path(__file__).resolve().parent.parent / "policies" / "schema.cedarschema").read_text()
    )
    raw_policies = compile_policies(read_policy_text(), schema).handle
    broker = ClientPrincipal(
        id="broker-1",
        kind="broker",
        organisation="acme",
        fleets=frozenset({FLEET}),
        insurer_policies=frozenset(),
        global_admin=False,
    )
    # A set of IN_PROCESS_BATCH trucks: cedarpy's per-call cost grows with the entity set (about 0.3-0.5 ms
    # a call at 1,000 entities against 70 us at 100 here), and the API builds a set per request of
    # only the entities it decides on (client, fleets, releases, trucks), so a small set is its case.
    size = min(IN_PROCESS_BATCH, trucks)
    states = _states(size, now)
    entities = engine.entities(
        [broker.entity(), FleetState(FLEET, "Bench").entity(), *(s.entity() for s in states)]
    )
    context = gate_context(now)
    refs = [s.ref for s in states]
    requests = [
        {
            "principal": broker.ref.json(),
            "action": {"type": "Action", "id": "dispatch"},
            "resource": r.json(),
            "context": context,
        }
        for r in refs
    ]
    # Both sides must agree, and allow: a benchmark of refusals would measure the wrong path.
    assert engine.decide(broker.ref, "dispatch", refs[0], context, entities).allowed
    assert cedarpy.is_authorized(requests[0], raw_policies, entities.handle, schema=schema).allowed

    def raw_single(i: int) -> object:
        return cedarpy.is_authorized(requests[i % size], raw_policies, entities.handle, schema=schema)

    def ours_single(i: int) -> object:
        return engine.decide(broker.ref, "dispatch", refs[i % size], context, entities)

    def raw_batch(i: int) -> object:
        return cedarpy.is_authorized_batch(requests[:size], raw_policies, entities.handle, schema=schema)

    def ours_batch(i: int) -> object:
        return engine.decide_batch(broker.ref, "dispatch", refs[:size], context, entities)

    single = alternating(raw_single, ours_single, n, rounds)
    batch_calls = max(1, n // size)
    batch = alternating(raw_batch, ours_batch, batch_calls, rounds)
    return {
        "single": {"raw_per_s": single[0], "ours_per_s": single[1], "ratio": single[1] / single[0]},
        "batch": {
            "size": size,
            "raw_per_s": batch[0] * size,
            "ours_per_s": batch[1] * size,
            "ratio": batch[1] / batch[0],
        },
        # The batch part's baseline: --trucks decisions made one call at a time, in-process.
        "ours_single_calls_for_all_trucks_s": trucks / single[1],
    }


# -- servers ----------------------------------------------------------------------------------------


def _seed(database_url: str, trucks: int) -> None:
    """Fleet, trucks, a valid certificate row each and an affirming attestation valid for a day."""
    now = datetime.now(UTC)
    engine = create_engine(database_url)
    tables = SQLModel.metadata.tables
    try:
        with engine.begin() as conn:
            issuer = conn.execute(text("SELECT id FROM certificate_authorities LIMIT 1")).scalar_one()
            conn.execute(
                insert(tables[Fleet.__tablename__]), [{"id": FLEET, "name": "Bench", "created_at": now}]
            )
            conn.execute(
                insert(tables[IssuedCertificate.__tablename__]),
                [
                    {
                        "serial": f"{i + 1:040x}",
                        "issuer_id": issuer,
                        "profile": "truck",
                        "subject": f"spiffe://bench.test/fleet/{FLEET}/truck/t-{i}",
                        "not_before": now - timedelta(hours=1),
                        "not_after": now + timedelta(days=1),
                        "certificate_der": b"seeded: decisions read the status and validity only",
                        "status": "valid",
                        "created_at": now,
                    }
                    for i in range(trucks)
                ],
            )
            conn.execute(
                insert(tables[Truck.__tablename__]),
                [
                    {
                        "id": f"t-{i}",
                        "fleet_id": FLEET,
                        "vin": f"BENCH{i:012d}",
                        "model": "hauler-9",
                        "state": "enrolled",
                        "certificate_serial": f"{i + 1:040x}",
                        "enrolled_at": now,
                        "created_at": now,
                    }
                    for i in range(trucks)
                ],
            )
            conn.execute(
                insert(tables[TruckAttestation.__tablename__]),
                [
                    {
                        "truck_id": f"t-{i}",
                        "status": "affirming",
                        "reasons": "[]",
                        "attested_at": now,
                        "attested_until": now + timedelta(days=1),
                        "reset_count": 0,
                        "restart_count": 0,
                        "clock": 1,
                        "quarantined": False,
                    }
                    for i in range(trucks)
                ],
            )
    finally:
        engine.dispose()


@contextlib.contextmanager
def ours(work: Path, workers: int, trucks: int) -> Iterator[tuple[Managed, str, str]]:
    """`weighstation serve` with seeded trucks; yields the process, its URL and a broker's token."""
    port = free_port()
    data_dir = work / "ours-data"
    data_dir.mkdir()
    env = clean_env(
        WEIGHSTATION_DATA_DIR=str(data_dir),
        WEIGHSTATION_ACCESS_TOKEN_TTL="1h",  # outlives the run: one token for every request
        WEIGHSTATION_PORT=str(port),
        WEIGHSTATION_HOST=HOST,
        WEIGHSTATION_TRUST_DOMAIN="bench.test",
        WEIGHSTATION_WORKERS=str(workers),
        WEIGHSTATION_LOG_LEVEL="WARNING",
        WEIGHSTATION_PUBLIC_URL=f"http://{HOST}:{port}",
    )
    admin = json.loads(
        subprocess.run(
            [str(WEIGHSTATION), "client", "create", "--kind=operator", "--name=bench", "--global-admin"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    proc = Managed("ours", [str(WEIGHSTATION), "serve"], env, work / "ours.log", REPO)
    base = f"http://{HOST}:{port}"
    try:
        wait_until(
            "weighstation /readyz",
            lambda: httpx.get(f"{base}/readyz", timeout=2).status_code == 200,
            90,
            proc,
        )
        _seed(f"sqlite:///{data_dir / 'weighstation.db'}", trucks)
        with httpx.Client(base_url=base, timeout=30) as client:
            operator = client.post(
                "/v1/oauth/token",
                data={"grant_type": "client_credentials"},
                auth=(admin["client_id"], admin["client_secret"]),
            )
            operator.raise_for_status()
            registered = client.post(
                "/v1/clients",
                json={
                    "name": "broker",
                    "kind": "broker",
                    "organisation": "acme",
                    "fleets": [FLEET],
                    "scopes": ["decisions"],
                },
                headers={"Authorization": f"Bearer {operator.json()['access_token']}"},
            )
            registered.raise_for_status()
            issued = client.post(
                "/v1/oauth/token",
                data={"grant_type": "client_credentials"},
                auth=(registered.json()["client_id"], registered.json()["client_secret"]),
            )
            issued.raise_for_status()
            token: str = issued.json()["access_token"]
            probe = client.post(
                "/v1/decisions",
                json={"action": "dispatch", "truck": "t-0"},
                headers={"Authorization": f"Bearer {token}"},
            )
            if probe.status_code != 200 or probe.json()["decision"] != "allow":
                raise RuntimeError(f"seeded truck not dispatchable: {probe.status_code} {probe.text[:500]}")
        yield proc, base, token
    finally:
        proc.stop()


@contextlib.contextmanager
def baseline(work: Path, workers: int) -> Iterator[tuple[Managed, str]]:
    port = free_port()
    # Served as `weighstation serve` serves: one process, or a supervisor with a socket per worker
    # (api.workers), the same loop, HTTP parser and uvicorn settings.
    argv = [
        sys.executable,
        "-c",
        "import sys; from api.workers import Supervisor, worker_config; import uvicorn; "
        f"app, host, port, n = 'bench.decisions:baseline_app', {HOST!r}, {port}, {workers}; "
        "sys.exit(Supervisor(host, port, n, app=app).run() if n > 1 "
        "else uvicorn.Server(worker_config(host, port, app)).run())",
    ]
    env = clean_env()
    proc = Managed("baseline", argv, env, work / "baseline.log", REPO)
    base = f"http://{HOST}:{port}"
    try:
        wait_until(
            "baseline", lambda: httpx.post(f"{base}/", json={}, timeout=2).status_code == 200, 60, proc
        )
        yield proc, base
    finally:
        proc.stop()


def wait_idle(pid: int, timeout_s: float = 60.0) -> float:
    """Wait until the server uses < IDLE_CORES (its log sequencer has caught up); the seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        before = tree_cpu_seconds([pid])
        time.sleep(1.0)
        if tree_cpu_seconds([pid]) - before < IDLE_CORES:
            break
    return time.monotonic() - started


# -- main -------------------------------------------------------------------------------------------


def _median(runs: list[dict[str, Any]], key: str) -> float:
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else float("nan")


def _line(result: dict[str, Any]) -> str:
    return (
        f"{result['rate']:8,.0f} rps  p50 {result['p50_ms']:6.2f} ms  p99 {result['p99_ms']:6.2f} ms  "
        f"errors {result['errors']}  server {result['server_cores']:.2f} cores  "
        f"client {result['client_cores']:.2f} cores"
    )


def _http_line(side: dict[str, Any]) -> str:
    return f"{side['rps']:8,.0f} rps  p50 {side['p50_ms']:.2f} ms  p99 {side['p99_ms']:.2f} ms"


def http_part(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    bodies = [{"action": "dispatch", "truck": f"t-{i}"} for i in range(args.trucks)]
    runs: dict[str, list[dict[str, Any]]] = {"baseline": [], "ours": []}
    settle: list[float] = []
    with (
        ours(work, args.workers, args.trucks) as (ours_proc, ours_url, token),
        baseline(work, args.workers) as (
            base_proc,
            base_url,
        ),
    ):
        targets = {
            "baseline": Target(f"{base_url}/", {}, bodies, 200, [base_proc.pid]),
            "ours": Target(
                f"{ours_url}/v1/decisions", {"Authorization": f"Bearer {token}"}, bodies, 200, [ours_proc.pid]
            ),
        }
        for round_no in range(args.rounds):
            for name in ("baseline", "ours"):
                result = run_load(targets[name], args.connections, args.seconds, args.warmup, work, "raw")
                runs[name].append(result)
                print(f"  round {round_no + 1} {name:8}: {_line(result)}", flush=True)
                if result["errors"]:
                    print(f"    errors: {result['error_samples']}", flush=True)
                if name == "ours":
                    settle.append(wait_idle(ours_proc.pid))
    summary = {
        name: {
            "rps": _median(r, "rate"),
            "p50_ms": _median(r, "p50_ms"),
            "p99_ms": _median(r, "p99_ms"),
            "server_cores": _median(r, "server_cores"),
            "server_cpu_ms_per_req": _median(r, "server_cpu_ms_per_req"),
            "client_cores": _median(r, "client_cores"),
            "errors": sum(x["errors"] for x in r),
            "per_round_rps": [x["rate"] for x in r],
        }
        for name, r in runs.items()
    }
    return {**summary, "ratio": summary["ours"]["rps"] / summary["baseline"]["rps"], "log_catch_up_s": settle}


def batch_part(args: argparse.Namespace, work: Path, single_s: float) -> dict[str, Any]:
    body = {"action": "dispatch", "trucks": [f"t-{i}" for i in range(args.trucks)]}
    with ours(work, args.workers, args.trucks) as (proc, url, token):
        target = Target(
            f"{url}/v1/decisions/batch", {"Authorization": f"Bearer {token}"}, [body], 200, [proc.pid]
        )
        result = run_load(target, 1, args.seconds, args.warmup, work, "raw")
        settle = wait_idle(proc.pid)
    p50 = result["p50_ms"]
    return {
        "trucks": args.trucks,
        "requests": result["ok"],
        "errors": result["errors"],
        "p50_ms": p50,
        "p99_ms": result["p99_ms"],
        "decisions_per_s": result["rate"] * args.trucks,
        "server_cores": result["server_cores"],
        "client_cores": result["client_cores"],
        "in_process_single_ms": single_s * 1000.0,
        "in_process_single_decisions_per_s": args.trucks / single_s,
        "ratio": (result["rate"] * args.trucks) / (args.trucks / single_s),
        "log_catch_up_s": settle,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.decisions", description=__doc__.split("\n")[0])
    parser.add_argument("--only", action="append", choices=PARTS, help="run only these parts (default all)")
    parser.add_argument(
        "--seconds", type=float, default=10.0, help="measured seconds per HTTP run (default 10)"
    )
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per HTTP run (default 2)")
    parser.add_argument(
        "--rounds", type=int, default=3, help="alternating rounds; medians reported (default 3)"
    )
    parser.add_argument("--connections", type=int, default=32, help="HTTP connections (default 32)")
    parser.add_argument("--workers", type=int, default=2, help="server workers, both servers (default 2)")
    parser.add_argument("--trucks", type=int, default=1000, help="seeded trucks = batch size (default 1000)")
    parser.add_argument("--n", type=int, default=5000, help="in-process decisions per round (default 5000)")
    parser.add_argument("--out", type=Path, default=OUT, help=f"JSON results (default {OUT})")
    args = parser.parse_args(argv)
    parts = [p for p in PARTS if not args.only or p in args.only]
    signal.signal(signal.SIGTERM, _sigterm)
    results: dict[str, Any] = {"cores": os.cpu_count(), "args": {k: str(v) for k, v in vars(args).items()}}

    print(f"Decision benchmark: {os.cpu_count()} cores, {args.trucks} trucks, {args.rounds} rounds")
    inproc = in_process(args.trucks, args.n, args.rounds)
    if "inprocess" in parts:
        results["inprocess"] = inproc
        s, b = inproc["single"], inproc["batch"]
        print(
            table(
                [
                    ("in-process single, raw cedarpy", f"{s['raw_per_s']:10,.0f} decisions/s"),
                    (
                        "in-process single, PolicyEngine",
                        f"{s['ours_per_s']:10,.0f} decisions/s  ratio {s['ratio']:.2f}x",
                    ),
                    (f"in-process batch of {b['size']}, raw cedarpy", f"{b['raw_per_s']:10,.0f} decisions/s"),
                    (
                        f"in-process batch of {b['size']}, PolicyEngine",
                        f"{b['ours_per_s']:10,.0f} decisions/s  ratio {b['ratio']:.2f}x",
                    ),
                ]
            ),
            flush=True,
        )
    try:
        with tempfile.TemporaryDirectory(prefix="ws-bench-decisions-") as tmp:
            work = Path(tmp)
            if "http" in parts:
                print(
                    f"HTTP: {args.connections} connections, {args.warmup:.0f}+{args.seconds:.0f} s per run, "
                    f"{args.workers} workers"
                )
                (work / "http").mkdir()
                h = results["http"] = http_part(args, work / "http")
                print(
                    table(
                        [
                            (
                                "empty Litestar handler (median)",
                                _http_line(h["baseline"]),
                            ),
                            (
                                "POST /v1/decisions (median)",
                                f"{_http_line(h['ours'])}  ratio {h['ratio']:.2f}x",
                            ),
                            (
                                "load generator",
                                f"{h['ours']['client_cores']:.2f} / {h['baseline']['client_cores']:.2f} "
                                "cores (ours / baseline)",
                            ),
                        ]
                    ),
                    flush=True,
                )
            if "batch" in parts:
                (work / "batch").mkdir()
                c = results["batch"] = batch_part(
                    args, work / "batch", inproc["ours_single_calls_for_all_trucks_s"]
                )
                print(
                    table(
                        [
                            (
                                f"{c['trucks']} in-process single decisions",
                                f"{c['in_process_single_ms']:.1f} ms "
                                f"({c['in_process_single_decisions_per_s']:,.0f} decisions/s)",
                            ),
                            (
                                f"POST /v1/decisions/batch of {c['trucks']}",
                                f"p50 {c['p50_ms']:.1f} ms  p99 {c['p99_ms']:.1f} ms  "
                                f"{c['decisions_per_s']:,.0f} decisions/s  ratio {c['ratio']:.2f}x",
                            ),
                        ]
                    ),
                    flush=True,
                )
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str))
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
