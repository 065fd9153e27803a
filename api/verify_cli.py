"""`weighstation verify BUNDLE --trust TRUSTFILE [--checkpoint FILE]`: check an evidence bundle fully
offline (no server, no network) and say in plain words what it proved, or exactly why it was refused.

Exit status: 0 verified, 1 refused (the bundle does not prove what it claims), 2 unreadable input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tlog.bundle import describe, parse_trust, verify_bundle
from tlog.errors import MalformedTrust, TlogError


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    verify = sub.add_parser(
        "verify", help="verify an evidence bundle offline against a trust file", description=__doc__
    )
    verify.add_argument("bundle", type=Path, help="the evidence bundle (JSON) to verify")
    verify.add_argument("--trust", type=Path, required=True, help="the trust file (GET /v1/evidence/trust)")
    verify.add_argument(
        "--checkpoint",
        type=Path,
        help="a signed checkpoint you already hold: the bundle must prove it is of the same log",
    )


def run(args: argparse.Namespace) -> int:
    try:
        bundle = args.bundle.read_bytes()
        trust_bytes = args.trust.read_bytes()
        held = args.checkpoint.read_bytes() if args.checkpoint else None
    except OSError as exc:
        print(f"cannot read input: {exc}", file=sys.stderr)
        return 2
    try:
        trust = parse_trust(trust_bytes)
    except MalformedTrust as exc:
        print(f"trust file refused: {exc.reason}", file=sys.stderr)
        return 2
    try:
        verified = verify_bundle(bundle, trust, held_checkpoint=held)
    except TlogError as exc:
        print(f"NOT VERIFIED ({exc.code}): {exc.reason}", file=sys.stderr)
        return 1
    print("VERIFIED")
    for line in describe(verified):
        print(f"- {line}")
    return 0
