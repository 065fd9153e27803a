"""The arguments of `weighstation agent ...` (the commands themselves live in agent.cli, loaded only
when one runs: the agent's TPM library is an optional extra)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def _tpm_and_server(parser: argparse.ArgumentParser, *, server: bool = True) -> None:
    parser.add_argument(
        "--tpm", metavar="TCTI", default="device:/dev/tpmrm0", help="TPM TCTI (default %(default)s)"
    )
    if server:
        parser.add_argument(
            "--server", metavar="URL", required=True, help="authority base URL, e.g. https://ws.example:8443"
        )
        parser.add_argument(
            "--ca-bundle", metavar="FILE", type=Path, help="CA bundle for the server's TLS certificate"
        )
        parser.add_argument(
            "--timeout", metavar="SECONDS", type=float, default=30.0, help="seconds per HTTP request"
        )


def add_agent_commands(sub: Any) -> None:
    agent = sub.add_parser("agent", help="the truck agent (needs the 'agent' extra: tpm2-pytss, httpx)")
    agent_sub = agent.add_subparsers(dest="agent_command", required=True)
    enroll = agent_sub.add_parser(
        "enroll",
        help="enroll this truck's TPM with the authority and save its identity",
        description="Exit status: 0 enrolled, 1 failed (server unreachable, bad answer), "
        "2 refused by the server or bad arguments, 3 TPM error.",
    )
    _tpm_and_server(enroll)
    enroll.add_argument(
        "--token",
        metavar="TOKEN",
        help="enrollment token; '-' reads it from stdin (default: $WEIGHSTATION_ENROLLMENT_TOKEN)",
    )
    enroll.add_argument(
        "--truck", metavar="ID", help="the truck id this TPM was provisioned for (checked by the server)"
    )
    enroll.add_argument("--ek", choices=["ecc", "rsa"], default="ecc", help="which EK to enroll")
    enroll.add_argument("--ak", choices=["ecc-p256", "rsa-2048"], default="ecc-p256", help="AK algorithm")
    enroll.add_argument(
        "--ek-chain", metavar="PEM_FILE", type=Path, help="PEM file of EK-issuing intermediates to send along"
    )
    enroll.add_argument(
        "--state", metavar="DIR", type=Path, default=Path("agent-state"), help="new state dir (%(default)s)"
    )
    enroll.add_argument(
        "--event-log",
        metavar="FILE",
        type=Path,
        help="this boot's measured-boot event log (`agent boot` writes one), for the first quote",
    )

    boot = agent_sub.add_parser(
        "boot",
        help="simulate this truck's measured boot into a freshly started TPM; write the event log",
        description="Refuses a TPM whose PCRs 0-15 were extended since it started (restart it first).",
    )
    _tpm_and_server(boot, server=False)
    boot.add_argument(
        "--state", metavar="DIR", type=Path, default=Path("agent-state"), help="state dir (%(default)s)"
    )
    boot.add_argument("--model", default="hauler-9", help="truck model (%(default)s)")
    boot.add_argument("--release", default="2026.11.1", help="firmware release (%(default)s)")
    boot.add_argument(
        "--override", metavar="COMPONENT=TEXT", action="append", default=[], help="boot modified firmware"
    )
    golden = agent_sub.add_parser(
        "golden-pcrs", help="print the PCR values a simulated release boots to (JSON)"
    )
    golden.add_argument("--model", default="hauler-9")
    golden.add_argument("--release", default="2026.11.1")
    for name, text in (
        ("attest", "attest: nonce, quote of the PCRs the authority selects, event log → result token"),
        ("renew", "attest (purpose renew), then renew the identity certificate with the same TPM key"),
    ):
        command = agent_sub.add_parser(name, help=text)
        _tpm_and_server(command)
        command.add_argument(
            "--state", metavar="DIR", type=Path, default=Path("agent-state"), help="state dir (%(default)s)"
        )
        command.add_argument("--event-log", metavar="FILE", type=Path, help="default: DIR/eventlog.bin")
        if name == "attest":
            command.add_argument("--purpose", choices=["attest", "dispatch"], default="attest")
            command.add_argument("--tender", metavar="ID", help="bind the quote to this tender")
    submit = agent_sub.add_parser(
        "submit",
        help="sign a mission manifest or telemetry snapshot with the TPM identity key, log it, "
        "verify and print the receipt (JSON)",
        description="Exit status: 0 logged and verified, 1 failed (server unreachable, receipt does "
        "not verify), 2 refused by the server or bad arguments, 3 TPM error. The log key is pinned "
        "in DIR/statements.json on first use unless --log-key gives it.",
    )
    _tpm_and_server(submit)
    submit.add_argument(
        "--state", metavar="DIR", type=Path, default=Path("agent-state"), help="state dir (%(default)s)"
    )
    submit.add_argument("--kind", choices=["mission_manifest", "telemetry_snapshot"], required=True)
    submit.add_argument(
        "--payload", metavar="FILE", type=Path, required=True, help="the payload (stays local)"
    )
    submit.add_argument(
        "--name", metavar="NAME", help="the payload's name in the statement (default: file name)"
    )
    submit.add_argument(
        "--log-key", metavar="VKEY", help="the log's verifier key to trust (default: pinned on first use)"
    )
    evidence = agent_sub.add_parser(
        "evidence-cert",
        help="get an evidence-signing certificate (Sigstore profile) for the TPM identity key; keep it in "
        "the state dir so `agent submit` sends it and the statements can be exported for Sigstore",
        description="Exit status: 0 issued and kept, 1 failed (server unreachable, bad certificate), "
        "2 refused by the server or bad arguments, 3 TPM error.",
    )
    _tpm_and_server(evidence)
    evidence.add_argument(
        "--state", metavar="DIR", type=Path, default=Path("agent-state"), help="state dir (%(default)s)"
    )
    evidence.add_argument(
        "--ttl", metavar="SECONDS", type=int, help="validity in seconds (default: the authority's, 24 h)"
    )
