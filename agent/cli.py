"""`weighstation agent ...`: the truck side of the command line (the parser is in api.cli)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from tpm2_pytss.TSS2_Exception import TSS2_Exception

from agent.attest import attest
from agent.boot import BOOT_PCRS, measure_boot, truck_boot
from agent.client import EnrollmentClient, EnrollmentError, EnrollmentRefused
from agent.enroll import StateDirInUse, enroll
from agent.evidence import request as request_evidence_certificate
from agent.renew import renew
from agent.request_auth import as_truck
from agent.signer import TpmKeyError
from agent.state import AgentState, StateError
from agent.submit import submit
from agent.tpm import TpmError, TruckTpm

ENROLLMENT_ENV_VAR = "WEIGHSTATION_ENROLLMENT_TOKEN"
MAX_EK_INTERMEDIATES = 4  # what the server accepts in one start call
_STDIN = "-"  # --token - : read the token from standard input
EVENT_LOG = "eventlog.bin"  # in the state dir, where `agent boot` writes it
_NOUNS = {
    "enroll": "enrollment",
    "boot": "boot",
    "attest": "attestation",
    "renew": "renewal",
    "submit": "statement",
    "evidence-cert": "evidence certificate",
}


def run(args: argparse.Namespace) -> int:
    commands: dict[str, Callable[[argparse.Namespace], int]] = {
        "enroll": enroll_command,
        "boot": boot_command,
        "golden-pcrs": golden_command,
        "attest": attest_command,
        "renew": renew_command,
        "submit": submit_command,
        "evidence-cert": evidence_cert_command,
    }
    return commands[args.agent_command](args)


def _enrollment_token(args: argparse.Namespace) -> str:
    if args.token == _STDIN:
        token = sys.stdin.readline().strip()
    else:
        token = (args.token or os.environ.get(ENROLLMENT_ENV_VAR, "")).strip()
    if not token:
        raise ValueError(f"no enrollment token: give --token (or '-' for stdin) or set {ENROLLMENT_ENV_VAR}")
    return token


def _ek_intermediates(path: Path | None) -> list[bytes]:
    if path is None:
        return []
    try:
        certificates = x509.load_pem_x509_certificates(path.read_bytes())
    except OSError as exc:
        raise ValueError(f"cannot read --ek-chain: {exc}") from None
    if len(certificates) > MAX_EK_INTERMEDIATES:
        raise ValueError(f"{path}: at most {MAX_EK_INTERMEDIATES} EK intermediates can be sent")
    return [c.public_bytes(Encoding.DER) for c in certificates]


def _guarded(args: argparse.Namespace, work: Callable[[], int]) -> int:
    """Run an agent command; exit 0 done, 1 failed, 2 refused or bad input, 3 TPM error."""
    try:
        return work()
    except EnrollmentRefused as exc:
        print(f"{_NOUNS[args.agent_command]} refused: {exc.status} {exc.code}: {exc.detail}", file=sys.stderr)
        return 2
    except (StateDirInUse, StateError) as exc:
        print(f"weighstation: {exc}", file=sys.stderr)
        return 2
    except EnrollmentError as exc:
        print(f"weighstation: {args.agent_command} failed: {exc}", file=sys.stderr)
        return 1
    except (TpmError, TpmKeyError, TSS2_Exception) as exc:
        print(f"weighstation: TPM error ({args.tpm}): {exc}", file=sys.stderr)
        return 3
    except OSError as exc:  # the CA bundle, the state directory, the event log
        print(f"weighstation: {args.agent_command} failed: {exc}", file=sys.stderr)
        return 1


def _client(args: argparse.Namespace) -> EnrollmentClient:
    verify: Path | bool = args.ca_bundle if args.ca_bundle is not None else True
    return EnrollmentClient(args.server, verify=verify, timeout=args.timeout)


def _describe_certificate(certificate_pem: bytes, state_dir: Path) -> None:
    leaf = x509.load_pem_x509_certificate(certificate_pem)
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    spiffe = next(iter(sans.get_values_for_type(x509.UniformResourceIdentifier)), "")
    # spiffe://<trust domain>/fleet/<fleet>/truck/<id>: the id the authority enrolled.
    _, _, truck = spiffe.rpartition("/truck/")
    print(f"truck:      {truck or '-'}")
    print(f"spiffe id:  {spiffe}")
    print(f"serial:     {leaf.serial_number:x}")
    print(f"not after:  {leaf.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}")
    print(f"state dir:  {state_dir}")


def enroll_command(args: argparse.Namespace) -> int:
    """`weighstation agent enroll`."""
    token = _enrollment_token(args)
    intermediates = _ek_intermediates(args.ek_chain)

    def work() -> int:
        with _client(args) as client, TruckTpm.open(args.tpm) as tpm:
            state = enroll(
                tpm,
                client,
                token,
                ek_kind=args.ek,
                truck=args.truck,
                ek_intermediates=intermediates,
                state_dir=args.state,
                ak_algorithm=args.ak,
                event_log=args.event_log.read_bytes() if args.event_log else None,
            )
        assert state.certificate_pem is not None  # enroll() returns only an enrolled state
        _describe_certificate(state.certificate_pem, args.state)
        return 0

    return _guarded(args, work)


def _event_log(args: argparse.Namespace) -> bytes:
    path: Path = args.event_log or args.state / EVENT_LOG
    return path.read_bytes()


def boot_command(args: argparse.Namespace) -> int:
    """`weighstation agent boot`: measure the simulated boot into a TPM that has just started."""
    overrides = dict(item.split("=", 1) for item in args.override)
    boot = truck_boot(args.model, args.release, overrides={k: v.encode() for k, v in overrides.items()})

    def work() -> int:
        with TruckTpm.open(args.tpm) as tpm:
            # Right after TPM2_Startup(CLEAR) from locality 0, PCRs 0-15 are all zeros.
            if any(any(value) for value in tpm.pcr_read("sha256", list(BOOT_PCRS)).values()):
                print(
                    "weighstation: the TPM's PCRs were extended since it started; restart it", file=sys.stderr
                )
                return 2
            args.state.mkdir(mode=0o700, parents=True, exist_ok=True)
            measured = measure_boot(tpm, boot, log_path=args.state / EVENT_LOG)
        events = len(measured.boot.events)
        print(f"booted {args.model} {args.release}: {events} events, log {args.state / EVENT_LOG}")
        return 0

    return _guarded(args, work)


def golden_command(args: argparse.Namespace) -> int:
    """`weighstation agent golden-pcrs`: what the release team's build computes for a release."""
    pcrs = truck_boot(args.model, args.release).expected_pcrs()
    print(json.dumps({str(pcr): value.hex() for pcr, value in sorted(pcrs.items())}, indent=2))
    return 0


def attest_command(args: argparse.Namespace) -> int:
    """`weighstation agent attest`: prints the result and, last, the result token."""

    def work() -> int:
        state = AgentState.load(args.state)
        with _client(args) as client, TruckTpm.open(args.tpm) as tpm:
            result = attest(
                tpm,
                as_truck(client, tpm, state),
                state,
                event_log=_event_log(args),
                purpose=args.purpose,
                tender=args.tender,
            )
        print(f"status:     {result.status}")
        print(f"release:    {result.release or 'unknown'}")
        print(f"until:      {result.expires_at:%Y-%m-%dT%H:%M:%SZ}")
        print(result.token)
        return 0

    return _guarded(args, work)


def renew_command(args: argparse.Namespace) -> int:
    """`weighstation agent renew`: attest, then renew the identity certificate (same TPM key)."""

    def work() -> int:
        state = AgentState.load(args.state)
        with _client(args) as client, TruckTpm.open(args.tpm) as tpm:
            renewed = renew(tpm, as_truck(client, tpm, state), state, args.state, event_log=_event_log(args))
        assert renewed.certificate_pem is not None
        _describe_certificate(renewed.certificate_pem, args.state)
        return 0

    return _guarded(args, work)


def submit_command(args: argparse.Namespace) -> int:
    """`weighstation agent submit`: sign with the TPM identity key, log, print the verified receipt."""
    name = args.name or args.payload.name

    def work() -> int:
        payload = args.payload.read_bytes()
        state = AgentState.load(args.state)
        with _client(args) as client, TruckTpm.open(args.tpm) as tpm:
            receipt = submit(
                tpm,
                as_truck(client, tpm, state),
                state,
                args.state,
                kind=args.kind,
                payload=payload,
                name=name,
                log_key=args.log_key,
                timeout=args.timeout,
            )
        print(json.dumps(receipt, indent=2))
        return 0

    return _guarded(args, work)


def evidence_cert_command(args: argparse.Namespace) -> int:
    """`weighstation agent evidence-cert`: an evidence-signing certificate for the TPM identity key."""

    def work() -> int:
        state = AgentState.load(args.state)
        with _client(args) as client, TruckTpm.open(args.tpm) as tpm:
            issued = request_evidence_certificate(
                tpm, as_truck(client, tpm, state), state, args.state, ttl_seconds=args.ttl
            )
        print(json.dumps(issued, indent=2))
        return 0

    return _guarded(args, work)
