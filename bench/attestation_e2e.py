"""Attestation end to end over HTTP: many swtpm trucks doing nonce → quote → PCR read → attest (result
token) against `weighstation serve`, beside the TPM-side ceiling of the same trucks in the same run.

    .venv/bin/python -m bench.attestation_e2e [--trucks 16] [--seconds 15] [--workers 2] [--processes 2]
        [--tpm agent|resident] [--rounds 1] [--no-split]

--trucks, --workers and --processes also take comma-separated lists (e.g. --trucks 8,16,32): every
combination is measured in one run, on the same enrolled trucks (the first N of them), the server
restarted on the same data dir when the worker count changes.

Setup (all on 127.0.0.1, stopped again on exit, Ctrl-C or error): a TPM-manufacturer CA; max(--trucks)
swtpm TPMs, each provisioned on its own (distinct EKs); `weighstation serve` on SQLite in a temp data dir
with that CA's root pinned. The operator (HTTP, an access token) creates a fleet and the trucks (model
hauler-9), registers a release-signing key and the signed golden release of the default simulated boot
(`truck_boot().expected_pcrs()`, as the integration tests' `golden` fixture). Each truck boots
(`agent.boot.measure_boot`: PCRs 0-15 and the event log), enrolls with the agent (`agent.enroll.enroll`
with that event log: the authority's first quote at enrollment must match the golden release) and is
checked to attest as affirming once.

Runs, per configuration and round (trucks spread over P spawned processes, one thread per truck; TPM and
HTTP calls release the GIL), warm-up then a measured window; only attestations that *complete* inside the
window count, and only affirming results count (anything else is an error, never throughput):

* tpm:  the TPM side alone, no server: quote of PCRs 0-15 (sha256) over a random nonce + PCR read.
* e2e:  `agent.attest.attest` over `agent.client.EnrollmentClient` (httpx): POST attestation-nonces, quote,
        PCR read, POST attestations with the event log; the answer's status must be "affirming". Each POST
        carries a fresh single-use request JWT signed in the TPM by the truck's identity key
        (`agent.request_auth.as_truck`), as the authority requires: two TPM signatures per attestation
        besides the quote, and the server checks each JWT (x5c chain, certificate status, jti spent).

--tpm agent (default) quotes as the agent does (`TruckTpm.quote`: an EK policy session, TPM2_Load of the
AK, the quote, two flushes, per quote); --tpm resident loads each truck's AK once and keeps it loaded (as a
long-running agent with a resource manager could), so the truck side is cheaper and the server shows more.
The e2e loop is the same in both; with resident it calls the client's two requests itself.

CPU (from /proc) of the server (the uvicorn process and its workers), the swtpm processes and the truck
processes is sampled at the window's edges and printed per attestation.

Split (unless --no-split): after the runs, in this process on the same data dir (server stopped), one
truck's attestations through `provision.attestation.Attestation` directly, timed per step: nonce issue (DB
insert + commit), the whole `attest` call, and the pure steps it contains measured alone on the same
evidence (AK re-check, `verify_quote`, event-log parse + replay, golden-release read + appraisal, ES256
result-token signing; the AK and the log's appraisal as `attest` gets them, from their caches, beside the
uncached figures); the rest of `attest` is its database work (reads of the nonce, truck and state, then
one transaction: nonce claim, result, status, audit and log rows). The HTTP layer is the server CPU per
attestation minus these. Then one thread per truck (up to 8) calls `nonce` and `attest` at once, to show
whether the calls scale or wait on each other.
--profile FILE adds a cProfile of --split more `attest` calls (printed, and saved to FILE).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import itertools
import json
import os
import pstats
import secrets
import signal
import statistics
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx
import tpm2_pytss.constants as tpm_c
import tpm2_pytss.types as tpm_t

from agent.attest import attest
from agent.boot import truck_boot
from agent.client import AttestationResult, EnrollmentClient, EnrollmentError
from agent.request_auth import as_truck
from agent.state import AgentState, KeyBlob
from agent.tpm import TruckTpm
from api.services import Services
from api.settings import load_settings
from attest.ak import check_attestation_key
from attest.alg import Alg
from attest.appraise import appraise
from attest.errors import AttestError
from attest.eventlog import parse_event_log
from attest.log_cache import AppraisedLogCache
from attest.public import parse_tpmt_public
from attest.quote import PcrRequest, verify_quote
from attest.replay import appraise_event_log
from bench.trucks import Tally, Watch, created, raise_interrupt, run_window, workdir
from pki.jws import b64url, sign_compact
from provision.attestation import Attestation, Evidence, NonceView, enrolled_ak
from provision.audit import Actor
from provision.token_keys import RESULTS
from tests.support.enrolling import boot_and_enroll
from tests.support.releases import ReleaseSigner
from tests.support.service import RunningService, running_service
from tests.support.swtpm import RunningTpm, manufacturer_ca, running_tpms

OUT = Path(__file__).resolve().parent / "out" / "attestation_e2e.json"
MODEL = "hauler-9"
RELEASE = "2026.11.1"
PCRS = tuple(range(16))

Mode = Literal["e2e", "tpm"]
TpmPath = Literal["agent", "resident"]
# What one attestation may fail with: the server's refusal or no answer, the TPM (TpmError and tpm2-pytss's
# TSS2_Exception are RuntimeErrors), a result that is not affirming (NotAffirming), a malformed structure.
FAILURES = (EnrollmentError, AttestError, RuntimeError, ValueError, OSError, httpx.HTTPError)


class NotAffirming(RuntimeError):
    """The server answered, but not "affirming": never counted as throughput."""


# -- the truck side ---------------------------------------------------------------------------------


class Quoter:
    """Quote + PCR read of PCRs 0-15 (sha256) with a truck's AK: as the agent does it (`TruckTpm.quote`
    loads the AK under the EK for every quote), or with the AK loaded once and kept (`resident`)."""

    def __init__(self, tpm: TruckTpm, ak: KeyBlob, path: TpmPath) -> None:
        self._tpm = tpm
        self._ak = ak
        self._stack = contextlib.ExitStack()
        self._handle: Any = None
        if path == "resident":
            # The agent's own loading (EK policy session, TPM2_Load, name check); flushed on close.
            self._handle = self._stack.enter_context(tpm._loaded(ak))
            self._selection = tpm_t.TPML_PCR_SELECTION.parse("sha256:" + ",".join(str(p) for p in PCRS))

    def quote(self, extra_data: bytes) -> tuple[bytes, bytes]:
        if self._handle is None:
            return self._tpm.quote(self._ak, extra_data, "sha256", PCRS)
        attest_info, signature = self._tpm._ctx.quote(
            self._handle,
            self._selection,
            tpm_t.TPM2B_DATA(extra_data),
            tpm_t.TPMT_SIG_SCHEME(scheme=tpm_c.TPM2_ALG.NULL),  # the AK's own pinned scheme
            session1=tpm_c.ESYS_TR.PASSWORD,
        )
        return bytes(attest_info), bytes(signature.marshal())

    def pcr_read(self) -> dict[int, bytes]:
        return self._tpm.pcr_read("sha256", PCRS)

    def close(self) -> None:
        self._stack.close()


@dataclass(frozen=True)
class TruckJob:
    index: int
    tcti: str
    truck: str
    state_dir: str


@dataclass(frozen=True)
class WorkerSpec:
    mode: Mode
    tpm_path: TpmPath
    url: str
    jobs: tuple[TruckJob, ...]
    sequential: bool = False

    def open_trucks(self) -> list[_Truck]:
        event_log = truck_boot().event_log()
        return [_Truck(self, job, event_log) for job in self.jobs]


class _Truck:
    def __init__(self, spec: WorkerSpec, job: TruckJob, event_log: bytes) -> None:
        self.spec = spec
        self.job = job
        self.event_log = event_log
        self.tally = Tally(job.index)
        self.state = AgentState.load(Path(job.state_dir))
        self.tpm = TruckTpm.open(job.tcti)
        self.quoter = Quoter(self.tpm, self.state.ak, spec.tpm_path)
        # The truck's calls signed with its identity key (request JWTs), as the agent makes them.
        self.client = (
            as_truck(EnrollmentClient(spec.url, retries=0), self.tpm, self.state)
            if spec.mode == "e2e"
            else None
        )

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
        self.quoter.close()
        self.tpm.close()

    def _attest(self, client: EnrollmentClient) -> AttestationResult:
        if self.spec.tpm_path == "agent":
            return attest(self.tpm, client, self.state, event_log=self.event_log)
        nonce = client.attestation_nonce(self.job.truck)
        quote_info, signature = self.quoter.quote(nonce.extra_data)
        return client.attest(
            self.job.truck,
            nonce.id,
            quote_info=quote_info,
            signature=signature,
            pcr_values=self.quoter.pcr_read(),
            event_log=self.event_log,
        )

    def _one(self) -> None:
        if self.client is not None:
            result = self._attest(self.client)
            if result.status != "affirming":
                raise NotAffirming(f"status {result.status}: {'; '.join(result.reasons)}")
        else:
            self.quoter.quote(os.urandom(32))
            self.quoter.pcr_read()

    def once(self) -> bool:
        self.tally.timed(self._one, FAILURES)
        return True


# -- one measured run -------------------------------------------------------------------------------


def run_once(
    mode: Mode,
    jobs: list[TruckJob],
    *,
    tpm_path: TpmPath,
    url: str,
    processes: int,
    warmup: float,
    seconds: float,
    watch: Watch,
) -> dict[str, Any]:
    """The trucks spread over `processes` workers, warmed up, measured for `seconds`; the run's figures."""
    groups = [tuple(jobs[i::processes]) for i in range(processes)]
    specs = [WorkerSpec(mode, tpm_path, url, group) for group in groups if group]
    figures = run_window(specs, warmup=warmup, seconds=seconds, watch=watch, unit="attestation")
    return {"mode": mode, **figures}


# -- setup: operator, enrollment, boot --------------------------------------------------------------


@dataclass(frozen=True)
class Enrolled:
    truck: str
    tpm: RunningTpm
    state_dir: Path


def setup_fleet(service: RunningService, tpms: list[RunningTpm], scratch: Path) -> list[Enrolled]:
    """Fleet, trucks and the golden release (operator), then each truck boots and enrolls with that boot's
    first quote, and attests once, signing its calls (agent)."""
    fleet = "bench-fleet"
    trucks = [f"truck-{i:03d}" for i in range(len(tpms))]
    tokens: list[str] = []
    with httpx.Client(base_url=service.url, timeout=30, headers=service.admin()) as http:
        created(http.post("/v1/fleets", json={"id": fleet, "name": "Bench fleet"}))
        for i, truck in enumerate(trucks):
            body = {"id": truck, "vin": f"BENCH{i:012d}", "model": MODEL}
            created(http.post(f"/v1/fleets/{fleet}/trucks", json=body))
            tokens.append(str(created(http.post(f"/v1/trucks/{truck}/enrollment-tokens", json={}))["token"]))
        signer = ReleaseSigner()
        key = created(
            http.post("/v1/release-keys", json={"name": "release team", "public_key_pem": signer.public_pem})
        )
        manifest = signer.manifest(MODEL, RELEASE, truck_boot().expected_pcrs())
        created(http.post("/v1/releases", json={"key_id": key["id"], "manifest": manifest}))
    enrolled = []
    with EnrollmentClient(service.url) as client:
        for i, (truck, running, token) in enumerate(zip(trucks, tpms, tokens, strict=True)):
            state_dir = scratch / f"agent-{i:03d}"
            with contextlib.ExitStack() as stack:
                booted = boot_and_enroll(stack, running.tcti, client, token, truck, state_dir)
                tpm, state = booted.tpm, booted.state
                result = attest(tpm, as_truck(client, tpm, state), state, event_log=booted.measured.log)
            if result.status != "affirming":
                raise RuntimeError(f"{truck}: first attestation is {result.status}: {result.reasons}")
            enrolled.append(Enrolled(truck, running, state_dir))
    return enrolled


# -- the in-process split of the server's work ------------------------------------------------------


def _time_each(fn: Callable[[int], object], n: int) -> tuple[float, float]:
    """(wall µs, CPU µs) per call of fn(i), i in range(n)."""
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for i in range(n):
        fn(i)
    return (time.perf_counter() - wall0) * 1e6 / n, (time.process_time() - cpu0) * 1e6 / n


_UNCACHED_STEPS = frozenset({"AK re-check from stored TPMT_PUBLIC", "event log parse + replay"})


def server_split(
    env: Mapping[str, str], subjects: list[Enrolled], count: int, profile: Path | None = None
) -> dict[str, Any]:
    """One truck's attestations through `Attestation` in this process, each step timed (µs per call);
    then the same calls from one thread per truck at once (`concurrent_split`)."""
    subject = subjects[0]
    settings = load_settings(env)
    services = Services.open(settings, bootstrap=False)
    actor = Actor("bench")
    try:
        attestation = services.attestation
        state = AgentState.load(subject.state_dir)
        event_log = truck_boot().event_log()
        # Warm the process (token key load, SQLAlchemy statement caches) on a few attestations.
        extra = count if profile is not None else 0
        nonces, evidence = _evidence(attestation, actor, subject, count + extra + 5, event_log)
        for view, ev in zip(nonces[:5], evidence[:5], strict=True):
            attestation.attest(actor, subject.truck, view.id, ev)
        nonces, evidence = nonces[5:], evidence[5:]
        nonce_wall, nonce_cpu = _time_each(lambda _: attestation.nonce(actor, subject.truck, "attest"), count)

        statuses: list[str] = []

        def whole(i: int) -> None:
            statuses.append(attestation.attest(actor, subject.truck, nonces[i].id, evidence[i]).status)

        attest_wall, attest_cpu = _time_each(whole, count)
        if profile is not None:
            profiler = cProfile.Profile()
            profiler.enable()
            for i in range(count, 2 * count):
                whole(i)
            profiler.disable()
            profiler.dump_stats(profile)
            print(f"cProfile of {count} more `attest` calls written to {profile}; top by cumulative time:")
            pstats.Stats(profiler, stream=sys.stdout).sort_stats("cumulative").print_stats(40)
            nonces, evidence = nonces[:count], evidence[:count]
        if set(statuses) != {"affirming"}:
            raise RuntimeError(f"split: results {sorted(set(statuses))}, not all affirming")

        ak_public = state.ak.public
        selection = PcrRequest.of(Alg.SHA256, PCRS)
        ak = check_attestation_key(parse_tpmt_public(ak_public))
        verified = [
            verify_quote(
                ev.quote,
                ev.signature,
                ak=ak,
                nonce=view.extra_data,
                selection=selection,
                pcr_values=ev.pcr_values,
                previous=None,
            )
            for view, ev in zip(nonces, evidence, strict=True)
        ]
        golden = services.releases.golden(MODEL)
        kid, signer = services.token_keys.active(RESULTS)
        claims: dict[str, Any] = {
            "iss": settings.public_url,
            "sub": f"spiffe://{settings.trust_domain}/fleet/bench-fleet/truck/{subject.truck}",
            "jti": secrets.token_urlsafe(18),
            "iat": int(time.time()),
            "exp": int(time.time()) + 600,
            "eat_profile": "tag:github.com,2023:veraison/ear",
            "eat_nonce": b64url(secrets.token_bytes(32)),
            "ear.verifier-id": {"developer": "weighstation", "build": "weighstation-0.1"},
            "submods": {
                "truck": {
                    "ear.status": "affirming",
                    "ear.trustworthiness-vector": {
                        "instance-identity": 2,
                        "hardware": 2,
                        "executables": 2,
                        "configuration": 2,
                    },
                    "ear.appraisal-policy-id": f"release:{golden[0].id}",
                }
            },
            "weighstation": {
                "truck": subject.truck,
                "fleet": "bench-fleet",
                "purpose": "attest",
                "tender": None,
                "release": {"id": golden[0].id, "version": RELEASE},
                "rebooted": False,
            },
        }

        steps: dict[str, Callable[[int], object]] = {
            "AK re-check from stored TPMT_PUBLIC": lambda _: check_attestation_key(
                parse_tpmt_public(ak_public)
            ),
            "AK, cached by its bytes (as in attest)": lambda _: enrolled_ak(ak_public),
            "verify_quote": lambda i: verify_quote(
                evidence[i].quote,
                evidence[i].signature,
                ak=ak,
                nonce=nonces[i].extra_data,
                selection=selection,
                pcr_values=evidence[i].pcr_values,
                previous=None,
            ),
            "event log parse + replay": lambda i: appraise_event_log(
                parse_event_log(event_log), Alg.SHA256, verified[i].pcr_values
            ),
            "event log, cached appraisal (as in attest)": lambda i: logs.appraise(
                event_log, Alg.SHA256, verified[i].pcr_values
            ),
            "golden releases read (DB)": lambda _: services.releases.golden(MODEL),
            "appraisal": lambda i: appraise("sha256", verified[i].pcr_values, golden),
            "result token ES256 signing": lambda _: sign_compact(signer, claims, kid=kid),
        }
        logs = AppraisedLogCache(4)
        logs.appraise(event_log, Alg.SHA256, verified[0].pcr_values)
        timed = {name: _time_each(fn, count) for name, fn in steps.items()}
        concurrent = concurrent_split(attestation, subjects, max(20, count // len(subjects)))
    finally:
        services.close()
    # `attest` re-checks the AK and appraises the log through caches: their uncached figures are shown
    # beside, not subtracted.
    in_attest = [figures for name, figures in timed.items() if name not in _UNCACHED_STEPS]
    pure_wall = sum(w for w, _ in in_attest)
    pure_cpu = sum(c for _, c in in_attest)
    return {
        "count": count,
        "nonce_issue": {"wall_us": nonce_wall, "cpu_us": nonce_cpu},
        "attest": {"wall_us": attest_wall, "cpu_us": attest_cpu},
        "steps": {name: {"wall_us": w, "cpu_us": c} for name, (w, c) in timed.items()},
        "attest_rest_db": {"wall_us": attest_wall - pure_wall, "cpu_us": attest_cpu - pure_cpu},
        "concurrent": concurrent,
    }


def _evidence(
    attestation: Attestation, actor: Actor, subject: Enrolled, count: int, event_log: bytes
) -> tuple[list[NonceView], list[Evidence]]:
    """`count` nonces issued for the truck, each quoted on its TPM (AK resident): ready-made evidence."""
    state = AgentState.load(subject.state_dir)
    nonces: list[NonceView] = [attestation.nonce(actor, subject.truck, "attest") for _ in range(count)]
    evidence = []
    with TruckTpm.open(subject.tpm.tcti) as tpm:
        quoter = Quoter(tpm, state.ak, "resident")
        try:
            for view in nonces:
                quote_info, signature = quoter.quote(view.extra_data)
                evidence.append(Evidence(quote_info, signature, quoter.pcr_read(), event_log))
        finally:
            quoter.close()
    return nonces, evidence


def _concurrently(calls: list[Callable[[], object]]) -> tuple[float, float]:
    """Run each call in its own thread, all at once; (wall seconds, CPU seconds of this process)."""
    threads = [threading.Thread(target=call) for call in calls]
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - wall0, time.process_time() - cpu0


def concurrent_split(attestation: Attestation, subjects: list[Enrolled], per_thread: int) -> dict[str, Any]:
    """One thread per truck calling `Attestation.nonce`, then `Attestation.attest`, all at once (as the
    server's thread pool does under load): calls per second and the cores they kept busy. Below the
    single-thread rate with less than a core busy means the calls wait on each other (SQLite's lock)."""
    actor = Actor("bench")
    event_log = truck_boot().event_log()
    prepared = [_evidence(attestation, actor, subject, per_thread, event_log) for subject in subjects]
    statuses: list[str] = []

    def issue(subject: Enrolled) -> Callable[[], object]:
        return lambda: [attestation.nonce(actor, subject.truck, "attest") for _ in range(per_thread)]

    def attest_all(
        subject: Enrolled, nonces: list[NonceView], evidence: list[Evidence]
    ) -> Callable[[], object]:
        def run() -> None:
            for view, ev in zip(nonces, evidence, strict=True):
                statuses.append(attestation.attest(actor, subject.truck, view.id, ev).status)

        return run

    nonce_wall, nonce_cpu = _concurrently([issue(s) for s in subjects])
    attest_wall, attest_cpu = _concurrently(
        [attest_all(s, n, e) for s, (n, e) in zip(subjects, prepared, strict=True)]
    )
    if set(statuses) != {"affirming"}:
        raise RuntimeError(f"concurrent split: results {sorted(set(statuses))}, not all affirming")
    total = per_thread * len(subjects)
    return {
        "threads": len(subjects),
        "calls_per_thread": per_thread,
        "nonce_per_s": total / nonce_wall,
        "nonce_cores": nonce_cpu / nonce_wall,
        "attest_per_s": total / attest_wall,
        "attest_cores": attest_cpu / attest_wall,
    }


# -- main -------------------------------------------------------------------------------------------


def _ints(text: str) -> list[int]:
    values = [int(part) for part in text.split(",") if part.strip()]
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: positive integers, comma-separated")
    return values


def _print_run(label: str, r: dict[str, Any]) -> None:
    print(
        f"    {label:<10} {r['rate']:>7,.1f} /s ({r['attestations']} in window)  p50 {r['p50_ms']:.1f} ms  "
        f"p99 {r['p99_ms']:.1f} ms  errors {r['errors_in_window']}  cores: server {r['server_cores']:.2f} "
        f"swtpm {r['swtpm_cores']:.2f} trucks {r['truck_process_cores']:.2f}  CPU ms/att: server "
        f"{r['server_cpu_ms_per_attestation']:.2f} swtpm {r['swtpm_cpu_ms_per_attestation']:.2f} "
        f"trucks {r['truck_process_cpu_ms_per_attestation']:.2f}",
        flush=True,
    )
    for sample in r["error_samples"]:
        print(f"      error sample: {sample}")


def _service_env(ca_root: Path, ca_intermediate: Path, data_dir: Path) -> dict[str, str]:
    return {
        "WEIGHSTATION_TPM_MANUFACTURER_ROOTS": str(ca_root),
        "WEIGHSTATION_TPM_MANUFACTURER_INTERMEDIATES": str(ca_intermediate),
        "WEIGHSTATION_LOG_LEVEL": "WARNING",
        "WEIGHSTATION_HOST": "127.0.0.1",
        "WEIGHSTATION_DATA_DIR": str(data_dir),
        "WEIGHSTATION_TRUST_DOMAIN": "fleet.test",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.attestation_e2e", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--trucks", type=_ints, default=[16], help="swtpm trucks (default 16; list allowed)")
    parser.add_argument("--seconds", type=float, default=15.0, help="measured seconds per run (default 15)")
    parser.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds, not measured (default 3)")
    parser.add_argument("--workers", type=_ints, default=[2], help="weighstation workers (default 2; list)")
    parser.add_argument("--processes", type=_ints, default=[2], help="truck processes (default 2; list)")
    parser.add_argument(
        "--tpm", choices=("agent", "resident"), default="agent", help="quote path (see above)"
    )
    parser.add_argument("--rounds", type=int, default=1, help="TPM-only then e2e, repeated; medians")
    parser.add_argument("--split", type=int, default=300, help="attestations in the in-process split (300)")
    parser.add_argument("--no-split", action="store_true", help="skip the in-process split")
    parser.add_argument(
        "--profile",
        type=Path,
        help="also cProfile --split more `attest` calls in the split; stats to this file",
    )
    parser.add_argument("--out", type=Path, default=OUT, help=f"JSON results (default {OUT})")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    tpm_path: TpmPath = args.tpm
    max_trucks = max(args.trucks)

    signal.signal(signal.SIGTERM, raise_interrupt)
    cores = os.cpu_count() or 0
    print(
        f"Attestation end to end: {cores} cores; trucks {args.trucks}, truck processes {args.processes}, "
        f"server workers {args.workers}; quote path {tpm_path}; {args.warmup:.0f} s warm-up + "
        f"{args.seconds:.0f} s measured, {args.rounds} round(s)",
        flush=True,
    )
    results: list[dict[str, Any]] = []
    split: dict[str, Any] | None = None
    try:
        with workdir("ws-bench-attest-") as work, contextlib.ExitStack() as stack:
            print(f"provisioning {max_trucks} distinct swtpm TPMs ...", flush=True)
            ca = manufacturer_ca(work / "manufacturer", "Bench TPM Maker")
            tpms = stack.enter_context(running_tpms(work / "tpms", ca, max_trucks, kind="ecc", distinct=True))
            data_dir = work / "data"
            env = _service_env(ca.root_pem, ca.intermediate_pem, data_dir)
            enrolled: list[Enrolled] = []
            for workers in args.workers:
                with running_service(data_dir, env, workers=workers) as service:
                    if not enrolled:
                        print(
                            "enrolling and booting the trucks, registering the golden release ...", flush=True
                        )
                        started = time.perf_counter()
                        enrolled = setup_fleet(service, tpms, work / "agents")
                        print(
                            f"  {len(enrolled)} trucks enrolled, booted, affirming "
                            f"({time.perf_counter() - started:.0f} s)",
                            flush=True,
                        )
                    watch = Watch(server=[service.process.pid], swtpm=[t.pid for t in tpms])
                    for trucks, wanted in itertools.product(args.trucks, args.processes):
                        processes = min(wanted, trucks)
                        jobs = [
                            TruckJob(i, e.tpm.tcti, e.truck, str(e.state_dir))
                            for i, e in enumerate(enrolled[:trucks])
                        ]
                        common: dict[str, Any] = {
                            "tpm_path": tpm_path,
                            "url": service.url,
                            "processes": processes,
                            "warmup": args.warmup,
                            "seconds": args.seconds,
                            "watch": watch,
                        }
                        config = {"trucks": trucks, "processes": processes, "workers": workers}
                        print(
                            f"  config: {trucks} trucks, {processes} processes, {workers} workers", flush=True
                        )
                        tpm_runs, e2e_runs = [], []
                        for _ in range(args.rounds):
                            tpm_runs.append(run_once("tpm", jobs, **common))
                            _print_run("TPM only", tpm_runs[-1])
                            e2e_runs.append(run_once("e2e", jobs, **common))
                            _print_run("e2e", e2e_runs[-1])
                        results.append(_summary(config, tpm_runs, e2e_runs))
            if not args.no_split:
                print(f"in-process split of the server's work ({args.split} attestations of one truck) ...")
                split = server_split({**os.environ, **env}, enrolled[:8], args.split, args.profile)
    except KeyboardInterrupt:
        print("interrupted; workers, swtpm and the server stopped", file=sys.stderr)
        return 130

    _report(results, split, tpm_path)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "benchmark": "attestation_e2e",
                "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "cores": cores,
                "tpm_path": tpm_path,
                "seconds": args.seconds,
                "warmup_s": args.warmup,
                "rounds": args.rounds,
                "configs": results,
                "split": split,
            },
            indent=2,
        )
    )
    print(f"results written to {args.out}")
    errors = sum(r["errors_in_window"] for c in results for r in c["runs"]["tpm"] + c["runs"]["e2e"])
    return 0 if errors == 0 else 1


KEYS = (
    "rate",
    "p50_ms",
    "p99_ms",
    "server_cores",
    "swtpm_cores",
    "truck_process_cores",
    "server_cpu_ms_per_attestation",
    "swtpm_cpu_ms_per_attestation",
    "truck_process_cpu_ms_per_attestation",
)


def _summary(
    config: dict[str, int], tpm_runs: list[dict[str, Any]], e2e_runs: list[dict[str, Any]]
) -> dict[str, Any]:
    def median(runs: list[dict[str, Any]], key: str) -> float:
        return float(statistics.median(r[key] for r in runs))

    ratios = [e["rate"] / t["rate"] for t, e in zip(tpm_runs, e2e_runs, strict=True) if t["rate"] > 0]
    return {
        **config,
        "tpm_only": {k: median(tpm_runs, k) for k in KEYS},
        "e2e": {k: median(e2e_runs, k) for k in KEYS},
        "ratio_e2e_to_tpm_only": statistics.median(ratios) if ratios else float("nan"),
        "runs": {"tpm": tpm_runs, "e2e": e2e_runs},
    }


def _report(results: list[dict[str, Any]], split: dict[str, Any] | None, tpm_path: str) -> None:
    print()
    print(f"quote path: {tpm_path}; CPU in ms per attestation; cores = CPU-seconds per wall second")
    print(
        f"{'trucks':>6} {'procs':>5} {'wkrs':>4} | {'TPM-only/s':>10} | {'e2e/s':>7} {'ratio':>5} "
        f"{'p50 ms':>7} {'p99 ms':>7} | {'server':>6} {'swtpm':>6} {'trucks':>6} | "
        f"{'srv cores':>9} {'tpm cores':>9} {'trk cores':>9}"
    )
    for r in results:
        t, e = r["tpm_only"], r["e2e"]
        print(
            f"{r['trucks']:>6} {r['processes']:>5} {r['workers']:>4} | {t['rate']:>10,.0f} | "
            f"{e['rate']:>7,.0f} {r['ratio_e2e_to_tpm_only']:>5.2f} "
            f"{e['p50_ms']:>7.1f} {e['p99_ms']:>7.1f} | "
            f"{e['server_cpu_ms_per_attestation']:>6.2f} {e['swtpm_cpu_ms_per_attestation']:>6.2f} "
            f"{e['truck_process_cpu_ms_per_attestation']:>6.2f} | {e['server_cores']:>9.2f} "
            f"{e['swtpm_cores']:>9.2f} {e['truck_process_cores']:>9.2f}"
        )
    best = max(results, key=lambda r: r["e2e"]["rate"]) if results else None
    if best is not None:
        print(
            f"best: {best['e2e']['rate']:,.0f} attestations/s ({best['trucks']} trucks, "
            f"{best['processes']} processes, {best['workers']} workers) = "
            f"{best['ratio_e2e_to_tpm_only']:.2f}x the TPM-only ceiling of the same trucks "
            f"({best['tpm_only']['rate']:,.0f}/s); goal 1,000/s"
        )
    if split is None:
        return

    def row(label: str, figures: dict[str, float]) -> None:
        print(f"  {label:<42} {figures['wall_us']:>7.0f} {figures['cpu_us']:>7.0f}")

    print()
    print(
        f"server work per attestation, in process (one truck, {split['count']} attestations), µs wall / CPU:"
    )
    row("nonce issue (DB insert + commit)", split["nonce_issue"])
    row("attest, whole call", split["attest"])
    for name, step in split["steps"].items():
        row(f"  {name}", step)
    row("  rest: DB claim, rows, audit, commits", split["attest_rest_db"])
    c = split["concurrent"]
    print(
        f"  one thread: {1e6 / split['nonce_issue']['wall_us']:,.0f} nonces/s, "
        f"{1e6 / split['attest']['wall_us']:,.0f} attests/s; "
        f"{c['threads']} threads (one truck each) at once: "
        f"{c['nonce_per_s']:,.0f} nonces/s ({c['nonce_cores']:.2f} cores busy), "
        f"{c['attest_per_s']:,.0f} attests/s ({c['attest_cores']:.2f} cores busy)"
    )
    if best is not None:
        in_process = (split["nonce_issue"]["cpu_us"] + split["attest"]["cpu_us"]) / 1000.0
        over_http = best["e2e"]["server_cpu_ms_per_attestation"]
        print(
            f"  server CPU per attestation over HTTP (best config) {over_http:.2f} ms = {in_process:.2f} ms "
            f"in the services + {over_http - in_process:.2f} ms HTTP, framework, JSON, threads (two requests)"
        )


if __name__ == "__main__":
    sys.exit(main())
