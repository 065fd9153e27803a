"""Certificate use cases: issue, renew, look up, revoke.

Joins the pure pki core with storage and the key backend. Every change is stored with its audit row in
one transaction; a refusal leaves only an audit row. Signing happens before anything is written, so a
key backend that is down (Vault unreachable) leaves nothing half-done. The CA hierarchy and the
revocation status services live beside this one (provision.hierarchy, provision.status).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import Engine, insert, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, SQLModel, col

from pki import errors
from pki.ca import Issuer
from pki.issue import IssuerUrls, issue_certificate, renewal_request
from pki.profiles import ProfileName, ValidatedRequest, parse_csr, profile_for, validate_request
from pki.revocation import parse_reason
from pki.serials import random_serial
from pki.signer import KeyBackend
from provision import audit
from provision.audit import Actor
from provision.config import AuthorityConfig
from provision.hierarchy import CaHierarchy
from provision.idempotency import TABLE as IDEMPOTENCY
from provision.idempotency import Pending, commit_with, lost_race
from provision.status import RevocationStatus
from provision.tables import AuditEvent, CrlRecord, IssuedCertificate
from provision.tlog_store import certificate_issued, certificate_revoked
from provision.writer import BatchWriter, Rows

_ISSUE = "certificate.issue"
_CERTIFICATES = SQLModel.metadata.tables[IssuedCertificate.__tablename__]
_AUDIT = SQLModel.metadata.tables[AuditEvent.__tablename__]


def utcnow() -> datetime:
    return datetime.now(UTC)


def _nothing() -> None:
    return None


@dataclass(frozen=True)
class CertificateView:
    serial: str
    profile: str
    issuer_id: str
    subject: str
    status: str
    not_before: datetime
    not_after: datetime
    revoked_at: datetime | None
    revocation_reason: str | None
    renewed_from: str | None
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]


@dataclass(frozen=True)
class Built:
    """A signed certificate, its issuer, and rows stored with it (e.g. its precertificate's log entry)."""

    issuer_id: str
    issuer: Issuer
    certificate: x509.Certificate
    rows: Rows


@dataclass(frozen=True)
class Prepared:
    """A signed certificate and the rows (certificate, audit) that store it; nothing written yet."""

    view: CertificateView
    rows: Rows


def serial_hex(serial: int) -> str:
    return format(serial, "x")


def normalise_serial(text_serial: str) -> str:
    """Accept 'AB:CD', 'abcd', '0xabcd'; refuse anything else as an unknown certificate."""
    cleaned = text_serial.strip().lower().removeprefix("0x").replace(":", "")
    if not cleaned or len(cleaned) > 42 or any(c not in "0123456789abcdef" for c in cleaned):
        raise errors.UnknownCertificate(f"no certificate with serial {text_serial[:64]!r}")
    return cleaned.lstrip("0") or "0"


class Authority:
    def __init__(
        self,
        engine: Engine,
        keys: KeyBackend,
        config: AuthorityConfig,
        *,
        clock: Callable[[], datetime] = utcnow,
        serials: Callable[[], int] = random_serial,
    ) -> None:
        self.engine = engine
        self.config = config
        self._clock = clock
        self._serials = serials
        self.cas = CaHierarchy(engine, keys, config, clock=clock, serials=serials)
        self.status = RevocationStatus(engine, self.cas, config, clock=clock)
        self._writer = BatchWriter(engine)
        # Called after a commit that wrote transparency-log entries (the service wakes its sequencer).
        self.log_wake: Callable[[], None] = _nothing
        # Set by the service (provision.sigstore): builds evidence-profile certificates with their SCT.
        self.evidence: Callable[[ValidatedRequest, datetime, int], Built] | None = None

    def close(self) -> None:
        self._writer.close()

    async def issue_async(
        self,
        actor: Actor,
        *,
        profile: str,
        csr: bytes,
        uri_sans: list[str] | None = None,
        dns_sans: list[str] | None = None,
        ttl: timedelta | None = None,
        idempotency: Pending[CertificateView] | None = None,
    ) -> CertificateView:
        """Signing runs on the caller's thread (it holds the GIL either way) and only the durable write
        is awaited, so on the HTTP hot path no thread pool competes with the writer for the GIL."""
        try:
            prepared = self.prepare(
                actor, profile=profile, csr=csr, uri_sans=uri_sans, dns_sans=dns_sans, ttl=ttl
            )
        except errors.PkiError as exc:
            await asyncio.wrap_future(self._refusal(actor, _ISSUE, exc, target=profile))
            raise
        try:
            await asyncio.wrap_future(self._writer.submit(self._rows(prepared, idempotency)))
        except IntegrityError as exc:
            raise lost_race(self.engine, exc, idempotency) from None
        self.log_wake()
        return prepared.view

    def prepare(
        self,
        actor: Actor,
        *,
        profile: str,
        csr: bytes,
        uri_sans: list[str] | None = None,
        dns_sans: list[str] | None = None,
        ttl: timedelta | None = None,
    ) -> Prepared:
        """Validate and sign; the caller stores `rows` (in its own transaction, for enrollment)."""
        prof = profile_for(profile, truck_default_ttl=self.config.truck_cert_ttl)
        request = validate_request(
            prof,
            parse_csr(csr),
            trust_domain=self.config.trust_domain,
            uri_sans=uri_sans,
            dns_sans=dns_sans,
            ttl=ttl,
        )
        return self._sign(actor, _ISSUE, request, renewed_from=None)

    def renew(
        self,
        actor: Actor,
        serial: str,
        *,
        csr: bytes,
        ttl: timedelta | None = None,
        idempotency: Pending[CertificateView] | None = None,
    ) -> CertificateView:
        """Same identity, possibly a new key; the old certificate stays valid until it expires."""
        action = "certificate.renew"
        try:
            old = self._row(serial)
            if old.status != "valid":
                raise errors.AlreadyRevoked(f"certificate {old.serial} is revoked and cannot be renewed")
            if old.not_after <= self._clock():
                raise errors.ProfileViolation(f"certificate {old.serial} has expired; enroll again")
            prof = profile_for(old.profile, truck_default_ttl=self.config.truck_cert_ttl)
            request = renewal_request(
                x509.load_der_x509_certificate(old.certificate_der),
                prof,
                parse_csr(csr),
                trust_domain=self.config.trust_domain,
                ttl=ttl,
            )
            prepared = self._sign(actor, action, request, renewed_from=old.serial)
        except errors.PkiError as exc:
            self._refusal(actor, action, exc, target=serial).result()
            raise
        self._write(prepared, idempotency)
        return prepared.view

    def get(self, serial: str) -> CertificateView:
        return self._view(self._row(serial))

    def revoke(
        self, actor: Actor, serial: str, reason: str, *, idempotency: Pending[CertificateView] | None = None
    ) -> CertificateView:
        action = "certificate.revoke"
        try:
            parsed_reason = parse_reason(reason)
            key = normalise_serial(serial)
            now = self._clock()
            with Session(self.engine) as session:
                # Conditional update: of two concurrent revocations exactly one wins.
                result = session.connection().execute(
                    update(IssuedCertificate)
                    .where(col(IssuedCertificate.serial) == key, col(IssuedCertificate.status) == "valid")
                    .values(status="revoked", revoked_at=now, revocation_reason=parsed_reason.value)
                )
                if result.rowcount == 0:
                    if session.get(IssuedCertificate, key) is None:
                        raise errors.UnknownCertificate(f"no certificate with serial {key}")
                    raise errors.AlreadyRevoked(f"certificate {key} is already revoked")
                row = session.get(IssuedCertificate, key)
                assert row is not None
                session.execute(
                    update(CrlRecord).where(col(CrlRecord.issuer_id) == row.issuer_id).values(stale=True)
                )
                audit.record(
                    session,
                    audit.values(actor, action, at=now, target=key, detail={"reason": parsed_reason.value}),
                )
                # The log entry commits with the revocation (the CT of our own PKI).
                table, event = certificate_revoked(
                    serial=key,
                    issuer=row.issuer_id,
                    subject=row.subject,
                    revoked_at=now,
                    reason=parsed_reason.value,
                    certificate_der=row.certificate_der,
                )
                session.connection().execute(insert(table), event)
                view = self._view(row)
                commit_with(session, view, idempotency, now)
        except errors.PkiError as exc:
            self._refusal(actor, action, exc, target=serial).result()
            raise
        self.log_wake()
        # Regenerated at once so relying parties fetching the CRL see the revocation. Evidence-signing
        # certificates are short-lived and name no CRL (as Fulcio's): their CA publishes none.
        if view.issuer_id in self.cas.issuing_ids():
            self.status.crl(view.issuer_id)
        return view

    # -- internals ------------------------------------------------------------------------------

    def _sign(
        self, actor: Actor, action: str, request: ValidatedRequest, *, renewed_from: str | None
    ) -> Prepared:
        """Sign and build the rows to store; nothing is written here. Serials are 159 random bits, so a
        collision (which the primary key would refuse) is not worth a retry path."""
        now = self._clock()
        if request.profile.name is ProfileName.EVIDENCE:
            # Evidence-signing certificates carry an SCT: precertificate, CT key, final certificate.
            if self.evidence is None:
                raise errors.ProfileViolation("evidence-signing certificates need the service's CT log")
            built = self.evidence(request, now, self._serials())
        else:
            issuer_id, issuer = self.cas.active()
            urls = IssuerUrls(
                crl_url=f"{self.config.public_url}/v1/ca/authorities/{issuer_id}/crl",
                ocsp_url=f"{self.config.public_url}/v1/ocsp",
            )
            certificate = issue_certificate(issuer, request, now=now, serial=self._serials(), urls=urls)
            built = Built(issuer_id, issuer, certificate, [])
        issuer_id, issuer, certificate = built.issuer_id, built.issuer, built.certificate
        subject = (request.uri_sans or request.dns_sans or ("",))[0]
        # Plain values, not a SQLModel instance: model construction is a visible cost on this hot path.
        view = CertificateView(
            serial=serial_hex(certificate.serial_number),
            profile=request.profile.name,
            issuer_id=issuer_id,
            subject=subject,
            status="valid",
            not_before=certificate.not_valid_before_utc,
            not_after=certificate.not_valid_after_utc,
            revoked_at=None,
            revocation_reason=None,
            renewed_from=renewed_from,
            certificate=certificate,
            chain=issuer.chain_with_self,
        )
        row = {
            "serial": view.serial,
            "issuer_id": issuer_id,
            "profile": view.profile,
            "subject": subject,
            "status": view.status,
            "not_before": view.not_before,
            "not_after": view.not_after,
            "certificate_der": (der := certificate.public_bytes(serialization.Encoding.DER)),
            "revoked_at": None,
            "revocation_reason": None,
            "renewed_from": renewed_from,
            "created_at": now,
        }
        event = audit.values(
            actor,
            action,
            at=now,
            target=view.serial,
            detail={"profile": view.profile, "subject": subject, "issuer": issuer_id},
        )
        # Every path that stores these rows (issue, renew, enrollment) logs the certificate with them.
        logged = certificate_issued(
            serial=view.serial,
            issuer=issuer_id,
            subject=subject,
            profile=view.profile,
            not_before=view.not_before,
            not_after=view.not_after,
            certificate_der=der,
            renewed_from=renewed_from,
            at=now,
        )
        return Prepared(view=view, rows=[(_CERTIFICATES, row), (_AUDIT, event), logged, *built.rows])

    def _rows(self, prepared: Prepared, idempotency: Pending[CertificateView] | None) -> Rows:
        if idempotency is None:
            return prepared.rows
        return [*prepared.rows, (IDEMPOTENCY, idempotency.row(prepared.view, self._clock()))]

    def _write(self, prepared: Prepared, idempotency: Pending[CertificateView] | None) -> None:
        try:
            self._writer.write(self._rows(prepared, idempotency))
        except IntegrityError as exc:
            raise lost_race(self.engine, exc, idempotency) from None
        self.log_wake()

    def _refusal(
        self, actor: Actor, action: str, exc: errors.PkiError, *, target: str | None
    ) -> Future[None]:
        """The refusal's audit row, through the same group commit as everything else."""
        event = audit.values(
            actor,
            action,
            at=self._clock(),
            outcome="error" if exc.kind == "unavailable" else "refused",
            target=target,
            code=exc.code,
            detail={"reason": exc.reason[:1000]},
        )
        return self._writer.submit([(_AUDIT, event)])

    def _row(self, serial: str) -> IssuedCertificate:
        key = normalise_serial(serial)
        with Session(self.engine) as session:
            row = session.get(IssuedCertificate, key)
        if row is None:
            raise errors.UnknownCertificate(f"no certificate with serial {key}")
        return row

    def _view(self, row: IssuedCertificate) -> CertificateView:
        issuer = self.cas.issuer(row.issuer_id)
        return CertificateView(
            serial=row.serial,
            profile=row.profile,
            issuer_id=row.issuer_id,
            subject=row.subject,
            status=row.status,
            not_before=row.not_before,
            not_after=row.not_after,
            revoked_at=row.revoked_at,
            revocation_reason=row.revocation_reason,
            renewed_from=row.renewed_from,
            certificate=x509.load_der_x509_certificate(row.certificate_der),
            chain=issuer.chain_with_self,
        )
