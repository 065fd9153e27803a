"""`weighstation agent ...`: the truck side of the command line (the parser is in api.cli)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from tpm2_pytss.TSS2_Exception import TSS2_Exception

from agent.client import EnrollmentClient, EnrollmentError, EnrollmentRefused
from agent.enroll import StateDirInUse, enroll
from agent.signer import TpmKeyError
from agent.tpm import TpmError, TruckTpm

ENROLLMENT_ENV_VAR = "WEIGHSTATION_ENROLLMENT_TOKEN"
MAX_EK_INTERMEDIATES = 4  # what the server accepts in one start call
_STDIN = "-"  # --token - : read the token from standard input


def run(args: argparse.Namespace) -> int:
    if args.agent_command == "enroll":
        return enroll_command(args)
    raise ValueError(f"unknown agent command {args.agent_command!r}")


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


def enroll_command(args: argparse.Namespace) -> int:
    """`weighstation agent enroll`: exit 0 enrolled, 1 failed, 2 refused or bad input, 3 TPM error."""
    token = _enrollment_token(args)
    intermediates = _ek_intermediates(args.ek_chain)
    verify: Path | bool = args.ca_bundle if args.ca_bundle is not None else True
    try:
        with (
            EnrollmentClient(args.server, verify=verify, timeout=args.timeout) as client,
            TruckTpm.open(args.tpm) as tpm,
        ):
            state = enroll(
                tpm,
                client,
                token,
                ek_kind=args.ek,
                truck=args.truck,
                ek_intermediates=intermediates,
                state_dir=args.state,
                ak_algorithm=args.ak,
            )
    except EnrollmentRefused as exc:
        print(f"enrollment refused: {exc.status} {exc.code}: {exc.detail}", file=sys.stderr)
        return 2
    except StateDirInUse as exc:
        print(f"weighstation: {exc}", file=sys.stderr)
        return 2
    except EnrollmentError as exc:
        print(f"weighstation: enrollment failed: {exc}", file=sys.stderr)
        return 1
    except (TpmError, TpmKeyError, TSS2_Exception) as exc:
        print(f"weighstation: TPM error ({args.tpm}): {exc}", file=sys.stderr)
        return 3
    except OSError as exc:  # the CA bundle or the state directory
        print(f"weighstation: enrollment failed: {exc}", file=sys.stderr)
        return 1
    assert state.certificate_pem is not None  # enroll() returns only an enrolled state
    leaf = x509.load_pem_x509_certificate(state.certificate_pem)
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    spiffe = next(iter(sans.get_values_for_type(x509.UniformResourceIdentifier)), "")
    # spiffe://<trust domain>/fleet/<fleet>/truck/<id>: the id the authority enrolled.
    _, _, truck = spiffe.rpartition("/truck/")
    print(f"truck:      {truck or '-'}")
    print(f"spiffe id:  {spiffe}")
    print(f"serial:     {leaf.serial_number:x}")
    print(f"not after:  {leaf.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}")
    print(f"state dir:  {args.state}")
    return 0
