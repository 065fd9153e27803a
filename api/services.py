"""What the lifespan opens and closes: the database engine, the key backend and the authority."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from litestar import Request
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from api.context import request_id_var
from api.settings import Settings, SettingsError, enrollment_token_key, load_pem_bundle
from pki.errors import PkiError
from pki.signer import KeyBackend
from policies.engine import PolicyEngine
from provision import audit
from provision.access import RouteAccess
from provision.attestation import Attestation, AttestationPolicy
from provision.audit import Actor
from provision.authority import Authority, utcnow
from provision.clients import ACCESS, Clients
from provision.config import AuthorityConfig
from provision.coverage import FleetCoverage
from provision.db import make_engine, ping
from provision.decisions import Decisions
from provision.enrollment import Enrollment, ManufacturerTrust
from provision.evidence import EvidenceBundles
from provision.evidence_certificates import TruckEvidenceCertificates
from provision.fleets import FleetRegistry
from provision.keys import open_key_backend
from provision.migrate import upgrade_to_head
from provision.policy_store import PolicyStore
from provision.releases import Releases
from provision.renewal import TruckRenewal
from provision.sigstore import Sigstore
from provision.statement_sigstore import StatementSigstore
from provision.statements import Statements
from provision.tlog_store import TransparencyLog
from provision.token_keys import TokenKeys
from provision.tokens import EnrollmentTokens
from provision.truck_requests import TruckRequests

log = logging.getLogger("weighstation.audit")


@dataclass
class Services:
    settings: Settings
    engine: Engine
    keys: KeyBackend
    authority: Authority
    fleets: FleetRegistry
    tokens: EnrollmentTokens
    enrollment: Enrollment
    releases: Releases
    token_keys: TokenKeys
    attestation: Attestation
    renewal: TruckRenewal
    clients: Clients
    policies: PolicyStore
    decisions: Decisions
    access: RouteAccess
    log: TransparencyLog
    statements: Statements
    truck_requests: TruckRequests
    evidence: EvidenceBundles
    coverage: FleetCoverage
    sigstore: Sigstore | None = None
    evidence_certificates: TruckEvidenceCertificates | None = None
    statement_sigstore: StatementSigstore | None = None

    @classmethod
    def open(cls, settings: Settings, *, bootstrap: bool = True) -> Services:
        """Migrate, open the key backend and (by default) create or load the CA hierarchy."""
        settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        trust = manufacturer_trust(settings)
        engine = make_engine(settings.effective_database_url)
        try:
            upgrade_to_head(engine)
            keys = open_key_backend(
                data_dir=settings.data_dir,
                passphrase=settings.key_passphrase,
                vault_addr=settings.vault_addr,
                vault_token=settings.vault_token,
                vault_mount=settings.vault_mount,
            )
        except BaseException:
            engine.dispose()
            raise
        authority = Authority(engine, keys, authority_config(settings))
        tokens = EnrollmentTokens(
            engine,
            key=enrollment_token_key(settings),
            issuer=authority.config.public_url,
            default_ttl=settings.enrollment_token_ttl,
            clock=utcnow,
        )
        releases = Releases(engine, clock=utcnow)
        # Validated against the schema here: an invalid shipped or uploaded set stops the start.
        policies = PolicyStore(engine, PolicyEngine.from_directory(), clock=utcnow)
        token_keys = TokenKeys(engine, keys, clock=utcnow)
        attestation = Attestation(engine, releases, token_keys, attestation_policy(settings), clock=utcnow)
        transparency_log = TransparencyLog(
            engine,
            keys,
            origin=settings.effective_log_origin,
            algorithm=settings.log_key_algorithm,
            clock=utcnow,
        )
        statements = Statements(engine, authority, transparency_log, clock=utcnow)
        services = cls(
            settings=settings,
            engine=engine,
            keys=keys,
            authority=authority,
            fleets=FleetRegistry(engine, trust_domain=settings.trust_domain, clock=utcnow),
            coverage=FleetCoverage(engine, clock=utcnow),
            tokens=tokens,
            enrollment=Enrollment(
                engine,
                authority,
                tokens,
                trust,
                challenge_ttl=settings.enrollment_challenge_ttl,
                clock=utcnow,
                attestation=attestation if settings.enrollment_first_quote else None,
                require_release=settings.enrollment_require_release,
            ),
            releases=releases,
            token_keys=token_keys,
            attestation=attestation,
            clients=Clients(
                engine,
                token_keys,
                issuer=settings.public_url.rstrip("/"),
                token_ttl=settings.access_token_ttl,
                clock=utcnow,
                clock_skew=settings.clock_skew,
            ),
            policies=policies,
            decisions=Decisions(engine, policies, clock=utcnow),
            access=RouteAccess(engine, policies, clock=utcnow),
            renewal=TruckRenewal(
                engine, authority, attestation, window=settings.renewal_attestation_window, clock=utcnow
            ),
            log=transparency_log,
            statements=statements,
            evidence=EvidenceBundles(
                engine,
                authority,
                statements,
                transparency_log,
                token_keys,
                result_issuer=settings.public_url.rstrip("/"),
                clock=utcnow,
            ),
            truck_requests=TruckRequests(
                engine,
                authority.cas.authorities,
                trust_domain=settings.trust_domain,
                audience=settings.public_url.rstrip("/"),
                clock=utcnow,
                leeway=settings.clock_skew,
            ),
        )
        if bootstrap:
            try:
                authority.cas.bootstrap(Actor("system"))
                token_keys.ensure(Actor("system"))
                token_keys.ensure(Actor("system"), ACCESS)
                services.log.ensure(Actor("system"))
                services.sigstore = Sigstore(
                    engine, keys, authority, services.log, settings.data_dir / "sigstore", clock=utcnow
                )
                services.sigstore.ensure(Actor("system"))
                services.evidence_certificates = TruckEvidenceCertificates(engine, authority, clock=utcnow)
                services.statement_sigstore = StatementSigstore(
                    engine, services.sigstore, services.log, clock=utcnow
                )
                statements.sigstore = services.statement_sigstore
            except BaseException:
                services.close()
                raise
        try:
            # Certificates are logged asynchronously: wake this process's sequencer after each commit.
            if services.log.start():
                authority.log_wake = services.log.wake
                services.attestation.log_wake = services.log.wake
                services.decisions.log_wake = services.log.wake
        except BaseException:
            services.close()
            raise
        return services

    def close(self) -> None:
        self.log.close()
        self.authority.close()
        self.decisions.close()
        self.keys.close()
        self.engine.dispose()

    def readiness(self) -> dict[str, str]:
        """Each dependency's state; the caller answers 503 unless all are 'ok'."""
        checks: dict[str, str] = {}
        try:
            ping(self.engine)
            checks["database"] = "ok"
        except SQLAlchemyError as exc:
            checks["database"] = f"unavailable: {type(exc).__name__}"
        try:
            self.keys.check()
            checks["keys"] = "ok"
        except PkiError as exc:
            checks["keys"] = f"unavailable: {type(exc).__name__}"
        return checks

    def audit_refusal(
        self,
        request: Request[Any, Any, Any],
        *,
        code: str,
        reason: str,
        action: str | None = None,
        target: str | None = None,
    ) -> None:
        try:
            audit.record_refusal(
                self.engine,
                actor_of(request),
                action or f"{request.method} {request.url.path}"[:64],
                at=utcnow(),
                code=code,
                reason=reason,
                target=target,
            )
        except SQLAlchemyError:
            # The refusal still goes out; the log line carries what the audit row would have.
            log.exception("audit write failed", extra={"code": code, "reason": reason})


def actor_of(request: Request[Any, Any, Any]) -> Actor:
    """Who is asking: set by the auth guard (never by the request body), with the request id."""
    user = request.scope.get("user")
    return Actor(user if isinstance(user, str) else "anonymous", request_id_var.get() or None)


def services_of(request: Request[Any, Any, Any]) -> Services:
    services: Services = request.app.state.services
    return services


def authority_of(request: Request[Any, Any, Any]) -> Authority:
    return services_of(request).authority


def attestation_policy(settings: Settings) -> AttestationPolicy:
    return AttestationPolicy(
        bank=settings.attestation_bank,
        pcrs=settings.attestation_pcr_list,
        nonce_ttl=settings.attestation_nonce_ttl,
        result_ttl=settings.attestation_result_ttl,
        auto_lift_quarantine=settings.quarantine_auto_lift,
        trust_domain=settings.trust_domain,
        issuer=settings.public_url.rstrip("/"),
    )


def manufacturer_trust(settings: Settings) -> ManufacturerTrust:
    roots = load_pem_bundle("TPM_MANUFACTURER_ROOTS", settings.tpm_manufacturer_roots)
    if settings.tpm_manufacturer_roots and not roots:
        raise SettingsError("WEIGHSTATION_TPM_MANUFACTURER_ROOTS: the bundle holds no certificate")
    intermediates = load_pem_bundle("TPM_MANUFACTURER_INTERMEDIATES", settings.tpm_manufacturer_intermediates)
    return ManufacturerTrust(roots=roots, intermediates=intermediates)


def authority_config(settings: Settings) -> AuthorityConfig:
    return AuthorityConfig(
        trust_domain=settings.trust_domain,
        public_url=settings.public_url.rstrip("/"),
        ca_key_algorithm=settings.ca_key_algorithm,
        root_ca_ttl=settings.root_ca_ttl,
        issuing_ca_ttl=settings.issuing_ca_ttl,
        truck_cert_ttl=settings.truck_cert_ttl,
        crl_validity=settings.crl_validity,
        ocsp_validity=settings.ocsp_validity,
    )
