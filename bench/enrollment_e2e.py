"""Enrollment end to end: N swtpm trucks enrolling in parallel against `weighstation serve`, beside the
TPM-side ceiling of the same trucks measured in the same run.

    .venv/bin/python -m bench.enrollment_e2e [--trucks 8] [--seconds 15] [--warmup 3] [--workers 2]
        [--processes 2] [--sequential] [--rounds 1] [--ek ecc|rsa] [--ak ecc-p256|rsa-2048]

Setup (all on 127.0.0.1, all stopped again on exit, Ctrl-C or error): a TPM-manufacturer CA; N swtpm
TPMs, each provisioned on its own (distinct EKs) with EK certificates from that CA; `weighstation serve`
on SQLite in a temp data dir with that CA's root pinned and its intermediate configured.

Operator (HTTP, an access token): one fleet, N trucks, and the signed golden release of the default
simulated boot (the authority asks for a first quote at enrollment and appraises it against the model's
releases: the default). Every truck boots once before the runs (`agent.boot.measure_boot`: PCRs 0-15 and
the event log). Before each measured run the operator mints the enrollment tokens the run will use
(single use, one per enrollment); minting is timed on its own and is not in the measured window.

* e2e: every truck re-enrolls in a loop with the real agent code (`agent.enroll.enroll` over
  `agent.client.EnrollmentClient`, with the boot's event log for the first quote), a fresh token and a
  fresh state dir per enrollment.
* tpm:  the same trucks, processes and threads doing only the truck's TPM work of one enrollment, with
  no server: read the EK certificate and public area, create the AK and the identity key,
  ActivateCredential on a credential made locally (`attest.credential.make_credential` for that AK's
  name), TPM2_Certify over a random nonce, the first quote (PCRs 0-15, sha256) over a random nonce and
  the PCR read, sign a CSR with the TPM identity key.

Trucks are spread over P worker processes (spawn); in each process every truck has its own thread
(the TPM and HTTP calls run mostly outside the GIL: one process of 8 trucks used 1.6 cores), or with
--sequential the process's trucks take turns in one thread. Warm-up, then the measured window: only
enrollments that complete inside it count; a failure is counted as an error, never as throughput. CPU
(from /proc) of the server, the swtpm processes, the truck processes and the rest of the box is sampled
at the window's edges. Results: bench/README.md ("Enrollment end to end") and bench/out/.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from agent.boot import BOOT_PCRS, DEFAULT_RELEASE, measure_boot, truck_boot
from agent.client import EnrollmentClient, EnrollmentError
from agent.enroll import enroll
from agent.state import EkKind
from agent.tpm import AkAlgorithm, TruckTpm
from attest.credential import make_credential
from attest.errors import AttestError
from attest.public import parse_tpmt_public
from bench.trucks import Tally, Watch, created, raise_interrupt, run_window, workdir
from tests.support.releases import ReleaseSigner
from tests.support.service import running_service
from tests.support.swtpm import manufacturer_ca, running_tpms

OUT = Path(__file__).resolve().parent / "out" / "enrollment_e2e.json"

Mode = Literal["e2e", "tpm"]
# What one enrollment may fail with: the server's refusal or no answer, the TPM (TpmError and tpm2-pytss's
# TSS2_Exception are RuntimeErrors), a malformed structure, the state dir.
FAILURES = (EnrollmentError, AttestError, RuntimeError, ValueError, OSError, httpx.HTTPError)

# -- worker processes -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TruckJob:
    index: int
    tcti: str
    truck: str  # the server's truck id (also the CSR's CN in tpm mode)
    tokens: tuple[str, ...]  # e2e: one per enrollment, used in order


@dataclass(frozen=True)
class WorkerSpec:
    mode: Mode
    url: str
    ek_kind: EkKind
    ak_algorithm: AkAlgorithm
    sequential: bool
    scratch: str
    jobs: tuple[TruckJob, ...]

    def open_trucks(self) -> list[_Truck]:
        return [_Truck(self, job) for job in self.jobs]


class _Truck:
    """One truck in a worker: its open TPM, its HTTP client (e2e), and the loop body."""

    def __init__(self, spec: WorkerSpec, job: TruckJob) -> None:
        self.spec = spec
        self.job = job
        self.tally = Tally(job.index)
        self.next_token = 0
        self.event_log = truck_boot().event_log()  # the boot setup measured into every TPM
        self.tpm = TruckTpm.open(job.tcti)
        self.client = EnrollmentClient(spec.url, retries=0) if spec.mode == "e2e" else None
        self.scratch = Path(spec.scratch) / f"truck-{job.index}"
        self.scratch.mkdir(parents=True, exist_ok=True)
        self.count = 0

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
        self.tpm.close()

    def once(self) -> bool:
        """One enrollment (or its TPM work); False when the truck has no token left."""
        token = ""
        if self.spec.mode == "e2e":
            if self.next_token >= len(self.job.tokens):
                return False
            token = self.job.tokens[self.next_token]
            self.next_token += 1
        self.count += 1
        self.tally.timed(lambda: self._enroll(token, self.scratch / f"state-{self.count}"), FAILURES)
        return True

    def _enroll(self, token: str, state_dir: Path) -> None:
        if self.client is None:
            tpm_work(self.tpm, self.spec.ek_kind, self.spec.ak_algorithm, self.job.truck)
            return
        enroll(
            self.tpm,
            self.client,
            token,
            ek_kind=self.spec.ek_kind,
            truck=self.job.truck,
            ek_intermediates=[],
            state_dir=state_dir,
            ak_algorithm=self.spec.ak_algorithm,
            event_log=self.event_log,
        )


def tpm_work(tpm: TruckTpm, ek_kind: EkKind, ak_algorithm: AkAlgorithm, truck: str) -> None:
    """The truck's TPM calls of one enrollment (the same ones `agent.enroll.enroll` makes), no server."""
    tpm.ek_certificate(ek_kind)
    ek_public = tpm.ek_public(ek_kind)
    ak = tpm.create_attestation_key(ek_kind, ak_algorithm)
    identity = tpm.create_identity_key(ek_kind)
    secret = os.urandom(32)
    made = make_credential(parse_tpmt_public(ek_public), ak.name, secret)
    if tpm.activate_credential(ak, ek_kind, made.credential_blob, made.encrypted_secret) != secret:
        raise RuntimeError("ActivateCredential returned another secret")
    tpm.certify(identity, ak, os.urandom(32))
    tpm.quote(ak, os.urandom(32), "sha256", BOOT_PCRS)  # the first quote
    tpm.pcr_read("sha256", BOOT_PCRS)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, truck)])
    x509.CertificateSigningRequestBuilder().subject_name(subject).sign(
        tpm.identity_signer(identity), hashes.SHA256()
    )


# -- one measured run -------------------------------------------------------------------------------


def run_once(
    mode: Mode,
    jobs: list[TruckJob],
    *,
    url: str,
    ek_kind: EkKind,
    ak_algorithm: AkAlgorithm,
    processes: int,
    sequential: bool,
    warmup: float,
    seconds: float,
    scratch: Path,
    watch: Watch,
) -> dict[str, Any]:
    """The trucks spread over `processes` workers, warmed up, measured for `seconds`; the run's figures."""
    scratch.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix=f"{mode}-", dir=scratch))  # fresh state dirs for every run
    groups = [tuple(jobs[i::processes]) for i in range(processes)]
    specs = [
        WorkerSpec(mode, url, ek_kind, ak_algorithm, sequential, str(run_dir / f"p{number}"), group)
        for number, group in enumerate(g for g in groups if g)
    ]
    figures = run_window(specs, warmup=warmup, seconds=seconds, watch=watch, unit="enrollment")
    return {"mode": mode, **figures}


# -- operator ---------------------------------------------------------------------------------------


@dataclass
class Fleet:
    url: str
    admin: dict[str, str]
    fleet: str = "bench-fleet"
    trucks: list[str] = field(default_factory=list)

    def setup(self, count: int) -> None:
        """The fleet, `count` trucks of model hauler-9, and the golden release of the default boot."""
        with httpx.Client(base_url=self.url, timeout=30, headers=self.admin) as http:
            signer = ReleaseSigner()
            key = {"name": "release team", "public_key_pem": signer.public_pem}
            key_id = created(http.post("/v1/release-keys", json=key))["id"]
            manifest = signer.manifest("hauler-9", DEFAULT_RELEASE, truck_boot().expected_pcrs())
            created(http.post("/v1/releases", json={"key_id": key_id, "manifest": manifest}))
            created(http.post("/v1/fleets", json={"id": self.fleet, "name": "Bench fleet"}))
            for i in range(count):
                truck = f"truck-{i:03d}"
                vin = f"BENCH{i:012d}"
                body = {"id": truck, "vin": vin, "model": "hauler-9"}
                created(http.post(f"/v1/fleets/{self.fleet}/trucks", json=body))
                self.trucks.append(truck)

    def mint(self, per_truck: int) -> tuple[list[list[str]], float]:
        """`per_truck` single-use enrollment tokens for every truck; (tokens, tokens per second)."""
        started = time.perf_counter()
        tokens: list[list[str]] = [[] for _ in self.trucks]
        with httpx.Client(base_url=self.url, timeout=30, headers=self.admin) as http:
            for _ in range(per_truck):
                for i, truck in enumerate(self.trucks):
                    answer = created(http.post(f"/v1/trucks/{truck}/enrollment-tokens", json={}))
                    tokens[i].append(str(answer["token"]))
        return tokens, per_truck * len(self.trucks) / (time.perf_counter() - started)


def _print_run(label: str, r: dict[str, Any]) -> None:
    print(
        f"  {label}: {r['rate']:,.1f} enrollments/s ({r['enrollments']} in window)  "
        f"p50 {r['p50_ms']:.0f} ms  p99 {r['p99_ms']:.0f} ms  errors {r['errors_in_window']}  "
        f"cores: server {r['server_cores']:.2f} swtpm {r['swtpm_cores']:.2f} "
        f"trucks {r['truck_process_cores']:.2f} other {r['other_cores']:.2f}",
        flush=True,
    )
    for sample in r["error_samples"]:
        print(f"    error sample: {sample}")
    if r["trucks_stopped_early"]:
        print(f"    trucks out of tokens before the end (raise --token-margin): {r['trucks_stopped_early']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.enrollment_e2e", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--trucks", type=int, default=8, help="swtpm trucks (default 8)")
    parser.add_argument("--seconds", type=float, default=15.0, help="measured seconds per run (default 15)")
    parser.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds, not measured (default 3)")
    parser.add_argument("--workers", type=int, default=2, help="weighstation workers (default 2)")
    parser.add_argument("--processes", type=int, default=2, help="truck processes (default 2)")
    parser.add_argument("--rounds", type=int, default=1, help="alternate TPM-only and e2e runs; medians")
    parser.add_argument(
        "--sequential", action="store_true", help="trucks of a process take turns in one thread"
    )
    parser.add_argument("--ek", choices=("ecc", "rsa"), default="ecc", help="EK the trucks use (default ecc)")
    parser.add_argument(
        "--ak", choices=("ecc-p256", "rsa-2048"), default="ecc-p256", help="AK algorithm (default ecc-p256)"
    )
    parser.add_argument(
        "--token-margin", type=float, default=1.5, help="tokens minted = margin x TPM-only rate x run time"
    )
    parser.add_argument("--out", type=Path, default=OUT, help=f"JSON results (default {OUT})")
    args = parser.parse_args(argv)
    if args.trucks < 1 or args.processes < 1 or args.rounds < 1:
        parser.error("--trucks, --processes and --rounds must be at least 1")
    processes = min(args.processes, args.trucks)
    ek_kind: EkKind = args.ek
    ak_algorithm: AkAlgorithm = args.ak

    signal.signal(signal.SIGTERM, raise_interrupt)
    cores = os.cpu_count() or 0
    threading_mode = "sequential (one thread per process)" if args.sequential else "one thread per truck"
    print(
        f"Enrollment end to end: {cores} cores, {args.trucks} swtpm trucks "
        f"({ek_kind} EK, {ak_algorithm} AK), "
        f"{processes} truck processes, {threading_mode}, {args.workers} server workers, "
        f"{args.warmup:.0f} s warm-up + {args.seconds:.0f} s measured, {args.rounds} round(s)",
        flush=True,
    )
    tpm_runs: list[dict[str, Any]] = []
    e2e_runs: list[dict[str, Any]] = []
    mint_rates: list[float] = []
    try:
        with workdir("ws-bench-enroll-") as work, contextlib.ExitStack() as stack:
            print("making a manufacturer CA and provisioning distinct swtpm TPMs ...", flush=True)
            ca = manufacturer_ca(work / "manufacturer", "Bench TPM Maker")
            tpms = stack.enter_context(
                running_tpms(work / "tpms", ca, args.trucks, kind=ek_kind, distinct=True)
            )
            env = {
                "WEIGHSTATION_TPM_MANUFACTURER_ROOTS": str(ca.root_pem),
                "WEIGHSTATION_TPM_MANUFACTURER_INTERMEDIATES": str(ca.intermediate_pem),
                "WEIGHSTATION_LOG_LEVEL": "WARNING",
                "WEIGHSTATION_HOST": "127.0.0.1",
            }
            print("starting weighstation serve ...", flush=True)
            service = stack.enter_context(running_service(work / "data", env, workers=args.workers))
            fleet = Fleet(service.url, service.admin())
            fleet.setup(args.trucks)
            print("booting the trucks (measured boot, once) ...", flush=True)
            for running in tpms:
                with TruckTpm.open(running.tcti) as device:
                    measure_boot(device, truck_boot())
            watch = Watch(server=[service.process.pid], swtpm=[t.pid for t in tpms])
            common: dict[str, Any] = {
                "url": service.url,
                "ek_kind": ek_kind,
                "ak_algorithm": ak_algorithm,
                "processes": processes,
                "sequential": args.sequential,
                "warmup": args.warmup,
                "seconds": args.seconds,
                "scratch": work / "agents",
            }
            for round_no in range(args.rounds):
                print(f"[round {round_no + 1}] TPM only ...", flush=True)
                jobs = [
                    TruckJob(i, t.tcti, truck, ())
                    for i, (t, truck) in enumerate(zip(tpms, fleet.trucks, strict=True))
                ]
                tpm_runs.append(run_once("tpm", jobs, watch=watch, **common))
                _print_run("TPM only", tpm_runs[-1])

                per_truck_rate = max(tpm_runs[-1]["rate"], 1.0) / args.trucks
                per_truck = math.ceil(per_truck_rate * (args.warmup + args.seconds) * args.token_margin) + 3
                tokens, mint_rate = fleet.mint(per_truck)
                mint_rates.append(mint_rate)
                print(
                    f"[round {round_no + 1}] minted {per_truck * args.trucks} tokens ({per_truck} a truck) "
                    f"at {mint_rate:,.0f} tokens/s (before the window, not measured in it); end to end ...",
                    flush=True,
                )
                jobs = [
                    TruckJob(i, t.tcti, truck, tuple(tokens[i]))
                    for i, (t, truck) in enumerate(zip(tpms, fleet.trucks, strict=True))
                ]
                e2e_runs.append(run_once("e2e", jobs, watch=watch, **common))
                _print_run("end to end", e2e_runs[-1])
    except KeyboardInterrupt:
        print("interrupted; workers, swtpm and the server stopped", file=sys.stderr)
        return 130

    def median(runs: list[dict[str, Any]], key: str) -> float:
        return float(statistics.median(r[key] for r in runs))

    keys = (
        "rate",
        "p50_ms",
        "p99_ms",
        "server_cores",
        "swtpm_cores",
        "truck_process_cores",
        "other_cores",
        "server_cpu_ms_per_enrollment",
        "swtpm_cpu_ms_per_enrollment",
        "truck_process_cpu_ms_per_enrollment",
    )
    summary = {
        "tpm_only": {k: median(tpm_runs, k) for k in keys},
        "e2e": {k: median(e2e_runs, k) for k in keys},
    }
    ratios = [e["rate"] / t["rate"] for t, e in zip(tpm_runs, e2e_runs, strict=True) if t["rate"] > 0]
    ratio = statistics.median(ratios) if ratios else float("nan")
    runs = e2e_runs + tpm_runs
    errors = sum(r["errors_in_window"] for r in runs)
    errors_total = sum(r["errors_total"] for r in runs)
    short = any(r["trucks_stopped_early"] for r in runs)
    e2e, tpm = summary["e2e"], summary["tpm_only"]

    print()
    print(
        f"{'':<12} {'enroll/s':>9} {'p50 ms':>7} {'p99 ms':>7}  {'CPU ms/enrollment: server':>25} "
        f"{'swtpm':>6} {'trucks':>6}  {'cores: server':>13} {'swtpm':>6} {'trucks':>6} {'other':>6}"
    )
    for label, s in (("TPM only", tpm), ("end to end", e2e)):
        print(
            f"{label:<12} {s['rate']:>9.1f} {s['p50_ms']:>7.0f} {s['p99_ms']:>7.0f}  "
            f"{s['server_cpu_ms_per_enrollment']:>25.1f} {s['swtpm_cpu_ms_per_enrollment']:>6.1f} "
            f"{s['truck_process_cpu_ms_per_enrollment']:>6.1f}  {s['server_cores']:>13.2f} "
            f"{s['swtpm_cores']:>6.2f} {s['truck_process_cores']:>6.2f} {s['other_cores']:>6.2f}"
        )
    print(
        f"end to end / TPM-only ceiling: {ratio:.2f}   server CPU per enrollment: "
        f"{e2e['server_cpu_ms_per_enrollment']:.1f} ms   errors: {errors} in windows, "
        f"{errors_total} in all   token minting (outside the window): "
        f"{statistics.median(mint_rates):,.0f} tokens/s"
    )
    print(
        "(trucks = the truck processes: agent code, tpm2-pytss/tss2 ESAPI; other = everything else busy on "
        f"the {cores}-core box; medians over rounds)"
    )

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "benchmark": "enrollment_e2e",
                "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "cores": cores,
                "trucks": args.trucks,
                "processes": processes,
                "sequential": args.sequential,
                "workers": args.workers,
                "ek": ek_kind,
                "ak": ak_algorithm,
                "seconds": args.seconds,
                "warmup_s": args.warmup,
                "rounds": args.rounds,
                "summary": summary,
                "ratio_e2e_to_tpm_only": ratio,
                "token_mint_per_s": mint_rates,
                "runs": {"tpm_only": tpm_runs, "e2e": e2e_runs},
            },
            indent=2,
        )
    )
    print(f"results written to {args.out}")
    return 0 if errors_total == 0 and not short else 1


if __name__ == "__main__":
    sys.exit(main())
