"""`weighstation` command line: the server, and operator commands that act on the box directly."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import importlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path

import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from api import verify_cli
from api.agent_args import add_agent_commands
from api.scopes import ADMIN, ATTESTATION_READ, DECISIONS, EVIDENCE_READ, FLEETS, SCOPE_DESCRIPTIONS
from api.services import Services
from api.settings import Settings, SettingsError, load_settings, parse_duration, to_env
from api.workers import Supervisor, worker_config
from attest.release import sign_release_manifest
from pki.errors import PkiError
from pki.profiles import ProfileName
from pki.revocation import RevocationReason
from policies.engine import read_policy_text
from provision.audit import Actor
from provision.authority import CertificateView
from provision.clients import KINDS
from provision.errors import ProvisionError


def _common(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("settings (override WEIGHSTATION_* variables)")
    group.add_argument("--data-dir", type=Path, help="data directory (keys, SQLite, secrets)")
    group.add_argument("--database-url", help="sqlite:///PATH or postgresql+psycopg://USER@HOST/DB")
    group.add_argument("--trust-domain", help="SPIFFE trust domain, e.g. fleet.example")
    group.add_argument("--vault-addr", help="OpenBao/Vault address; CA keys then live in Transit")
    group.add_argument("--vault-mount", help="Transit mount (default transit)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="weighstation", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP service")
    _common(serve)
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", type=int)

    ca = sub.add_parser("ca", help="CA operations").add_subparsers(dest="ca_command", required=True)
    for name, text in (
        ("rotate", "rotate the issuing CA"),
        ("bundle", "print the trust bundle (PEM)"),
        ("list", "list the CA hierarchy"),
    ):
        _common(ca.add_parser(name, help=text))

    cert = sub.add_parser("cert", help="certificate operations").add_subparsers(
        dest="cert_command", required=True
    )
    issue = cert.add_parser("issue", help="issue a certificate from a CSR")
    _common(issue)
    issue.add_argument("--profile", required=True, choices=[p.value for p in ProfileName])
    issue.add_argument("--csr", required=True, type=Path, help="PEM or DER PKCS#10 file")
    issue.add_argument("--uri", action="append", help="URI SAN (repeatable); default: the CSR's SANs")
    issue.add_argument("--dns", action="append", help="DNS SAN (repeatable)")
    issue.add_argument("--ttl", help="lifetime such as 24h or 30d (default: the profile's)")
    issue.add_argument("--out", type=Path, help="write certificate + chain PEM here (default: stdout)")
    revoke = cert.add_parser("revoke", help="revoke a certificate")
    _common(revoke)
    revoke.add_argument("serial")
    revoke.add_argument("--reason", default="unspecified", choices=[r.value for r in RevocationReason])
    show = cert.add_parser("show", help="show a certificate and its status")
    _common(show)
    show.add_argument("serial")
    show.add_argument("--pem", action="store_true", help="print only the certificate PEM")

    client = sub.add_parser("client", help="OAuth2 clients").add_subparsers(
        dest="client_command", required=True
    )
    create = client.add_parser(
        "create",
        help="register a client straight in the database (bootstrap: the first global-admin operator); "
        "prints its id and secret once, as JSON",
    )
    _common(create)
    create.add_argument("--kind", required=True, choices=KINDS)
    create.add_argument("--name", required=True)
    create.add_argument("--organisation", help="default: the name")
    create.add_argument("--global-admin", action="store_true", help="operator only: runs the authority")
    create.add_argument("--fleet", action="append", default=[], help="managed/contracted fleet (repeatable)")
    create.add_argument("--insurer-policy", action="append", default=[], help="insurer only (repeatable)")
    create.add_argument(
        "--scope",
        action="append",
        choices=sorted(SCOPE_DESCRIPTIONS),
        help="allowed scope (repeatable); default: every scope the kind can use",
    )

    policy = sub.add_parser("policy", help="Cedar policy set").add_subparsers(
        dest="policy_command", required=True
    )
    _common(
        policy.add_parser(
            "reset",
            help="activate the policy set shipped in policies/ again (recovery after an upload that "
            "locked every operator out); validated, audited, the uploaded versions are kept",
        )
    )

    add_agent_commands(sub)
    verify_cli.add_parser(sub)
    release = sub.add_parser("release", help="release-team tools").add_subparsers(
        dest="release_command", required=True
    )
    sign = release.add_parser("sign", help="sign a golden release manifest (prints the compact JWS)")
    sign.add_argument(
        "--key", required=True, type=Path, help="PEM EC P-256/P-384 release-signing private key"
    )
    sign.add_argument("--model", required=True)
    sign.add_argument("--version", required=True)
    sign.add_argument("--pcrs", required=True, type=Path, help='JSON {"0": "<hex>", ...} of the sha256 bank')
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    keys = (
        "data_dir",
        "database_url",
        "trust_domain",
        "vault_addr",
        "vault_mount",
        "host",
        "port",
        "workers",
    )
    overrides = {k: getattr(args, k, None) for k in keys}
    return load_settings(os.environ, overrides)


def _describe(view: CertificateView) -> str:
    lines = [
        f"serial:     {view.serial}",
        f"profile:    {view.profile}",
        f"subject:    {view.subject}",
        f"issuer:     {view.issuer_id}",
        f"status:     {view.status}"
        + (f" ({view.revocation_reason} at {view.revoked_at:%Y-%m-%dT%H:%M:%SZ})" if view.revoked_at else ""),
        f"not before: {view.not_before:%Y-%m-%dT%H:%M:%SZ}",
        f"not after:  {view.not_after:%Y-%m-%dT%H:%M:%SZ}",
    ]
    return "\n".join(lines)


def _serve(settings: Settings) -> int:
    # Migrate and create the CA hierarchy once, before any worker starts, so workers never race it.
    Services.open(settings).close()
    os.environ.update(to_env(settings))
    print(
        f"weighstation: serving on http://{settings.host}:{settings.port} (data dir {settings.data_dir}; "
        "operators are OAuth2 clients: `weighstation client create --kind operator --global-admin`)",
        file=sys.stderr,
    )
    if settings.workers > 1:
        return Supervisor(settings.host, settings.port, settings.workers).run()
    uvicorn.Server(worker_config(settings.host, settings.port)).run()
    return 0


def _agent(args: argparse.Namespace) -> int:
    """The agent's commands live with the agent: its libraries (tpm2-pytss) are an optional extra, so
    the module is loaded only when an agent command runs."""
    try:
        module = importlib.import_module("agent.cli")
    except ImportError as exc:
        print(f"weighstation: the agent needs the 'agent' extra (tpm2-pytss, httpx): {exc}", file=sys.stderr)
        return 1
    run: Callable[[argparse.Namespace], int] = module.run
    return run(args)


def _sign_release(args: argparse.Namespace) -> int:
    key = serialization.load_pem_private_key(args.key.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("the release-signing key must be an EC P-256 or P-384 private key")
    raw = json.loads(args.pcrs.read_text())
    pcrs = {int(index): bytes.fromhex(value) for index, value in raw.items()}
    print(sign_release_manifest(key, model=args.model, version=args.version, pcrs=pcrs))
    return 0


def default_scopes(kind: str, global_admin: bool) -> list[str]:
    """Every scope a client of this kind can put to use under the shipped policies."""
    if kind == "operator":
        return [ADMIN, FLEETS, ATTESTATION_READ] if global_admin else [FLEETS, ATTESTATION_READ]
    if kind in ("broker", "tms"):
        return [DECISIONS, ATTESTATION_READ]
    return [EVIDENCE_READ]


def _create_client(services: Services, actor: Actor, args: argparse.Namespace) -> int:
    if args.global_admin and args.kind != "operator":
        raise ValueError("--global-admin is for operators only")
    if args.insurer_policy and args.kind != "insurer":
        raise ValueError("--insurer-policy is for insurers only")
    scopes = args.scope if args.scope else default_scopes(args.kind, args.global_admin)
    registered = services.clients.register(
        actor,
        name=args.name,
        kind=args.kind,
        organisation=args.organisation or args.name,
        fleets=args.fleet,
        insurer_policies=args.insurer_policy,
        global_admin=args.global_admin,
        scopes=scopes,
    )
    view = registered.client
    body = {
        "client_id": view.client_id,
        "client_secret": registered.secret,
        "kind": view.kind,
        "name": view.name,
        "organisation": view.organisation,
        "global_admin": view.global_admin,
        "fleets": list(view.fleets),
        "insurer_policies": list(view.insurer_policies),
        "scopes": list(view.scopes),
    }
    print(json.dumps(body, indent=2))
    return 0


def _run(args: argparse.Namespace) -> int:
    if args.command == "agent":
        return _agent(args)
    if args.command == "release":
        return _sign_release(args)
    if args.command == "verify":
        return verify_cli.run(args)
    settings = _settings(args)
    if args.command == "serve":
        return _serve(settings)
    actor = Actor(f"cli:{getpass.getuser()}")
    services = Services.open(settings)
    try:
        authority = services.authority
        if args.command == "client":
            return _create_client(services, actor, args)
        if args.command == "policy":
            policies = services.policies.upload(actor, read_policy_text())
            print(f"active policy set: {policies.version} (shipped)")
            return 0
        if args.command == "ca":
            if args.ca_command == "rotate":
                ca_view = authority.cas.rotate(actor)
                print(f"new issuing CA {ca_view.id}, valid until {ca_view.not_after:%Y-%m-%dT%H:%M:%SZ}")
            elif args.ca_command == "bundle":
                sys.stdout.write(authority.cas.bundle_pem().decode())
            else:
                for ca in authority.cas.authorities():
                    print(f"{ca.id}  {ca.kind:8} {ca.status:8} until {ca.not_after:%Y-%m-%dT%H:%M:%SZ}")
            return 0
        if args.cert_command == "issue":
            ttl: timedelta | None = parse_duration(args.ttl) if args.ttl else None
            issuing = authority.issue_async(
                actor,
                profile=args.profile,
                csr=args.csr.read_bytes(),
                uri_sans=args.uri,
                dns_sans=args.dns,
                ttl=ttl,
            )
            view = asyncio.run(issuing)
            pem = b"".join(c.public_bytes(Encoding.PEM) for c in (view.certificate, *view.chain))
            if args.out:
                args.out.write_bytes(pem)
                print(_describe(view))
            else:
                sys.stdout.write(pem.decode())
            return 0
        if args.cert_command == "revoke":
            print(_describe(authority.revoke(actor, args.serial, args.reason)))
            return 0
        view = authority.get(args.serial)
        print(view.certificate.public_bytes(Encoding.PEM).decode() if args.pem else _describe(view))
        return 0
    finally:
        services.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except SettingsError as exc:
        print(f"weighstation: configuration error: {exc}", file=sys.stderr)
        return 2
    except (PkiError, ProvisionError) as exc:
        print(f"weighstation: refused ({exc.code}): {exc.reason}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"weighstation: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader (e.g. `| head`) went away: not an error of ours; silence the final flush too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
