"""The certificate authority use cases: bootstrap, issue, renew, revoke, CRL, OCSP, rotation.

Joins the pure pki core with storage and the key backend. Every change is stored with its audit row in
one transaction; a refusal leaves only an audit row. Signing happens before anything is written, so a
key backend that is down (Vault unreachable) leaves nothing half-done.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import ocsp as x509_ocsp
from sqlalchemy import Engine, text, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, SQLModel, col, select

from pki import errors
from pki.ca import Issuer, build_issuing_ca, build_root_ca
from pki.issue import IssuerUrls, issue_certificate, renewal_request
from pki.ocsp import CertStatus, build_ocsp_response, issuer_matches, ocsp_error_response, parse_ocsp_request
from pki.profiles import ValidatedRequest, parse_csr, profile_for, validate_request
from pki.revocation import RevokedEntry, build_crl, parse_reason
from pki.serials import random_serial
from pki.signer import KeyAlgorithm, KeyBackend
from provision import audit
from provision.audit import Actor
from provision.errors import IdempotencyKeyInUse
from provision.idempotency import TABLE as idempotency_table
from provision.idempotency import Pending
from provision.idempotency import lookup as idempotency_lookup
from provision.tables import AuditEvent, CertificateAuthority, CrlRecord, IdempotencyRecord, IssuedCertificate
from provision.writer import BatchWriter, Rows

_BOOTSTRAP_LOCK = 0x7765_6963  # PostgreSQL advisory lock ids: one for CA creation/rotation
_CACHE_SECONDS = 5.0  # how stale another replica's rotation may look to this one
_ISSUE = "certificate.issue"
T = TypeVar("T")
_CERTIFICATES = SQLModel.metadata.tables[IssuedCertificate.__tablename__]
_AUDIT = SQLModel.metadata.tables[AuditEvent.__tablename__]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class AuthorityConfig:
    trust_domain: str
    public_url: str
    ca_key_algorithm: KeyAlgorithm = KeyAlgorithm.EC_P256
    root_ca_ttl: timedelta = timedelta(days=3650)
    issuing_ca_ttl: timedelta = timedelta(days=365)
    truck_cert_ttl: timedelta = timedelta(hours=24)
    crl_validity: timedelta = timedelta(hours=24)
    ocsp_validity: timedelta = timedelta(hours=1)


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
class _Prepared:
    view: CertificateView
    rows: Rows


@dataclass(frozen=True)
class CaView:
    id: str
    kind: str
    status: str
    not_before: datetime
    not_after: datetime
    certificate: x509.Certificate


def serial_hex(serial: int) -> str:
    return format(serial, "x")


def normalise_serial(text_serial: str) -> str:
    """Accept 'AB:CD', 'abcd', '0xabcd'; refuse anything else as an unknown certificate."""
    cleaned = text_serial.strip().lower().removeprefix("0x").replace(":", "")
    if not cleaned or len(cleaned) > 42 or any(c not in "0123456789abcdef" for c in cleaned):
        raise errors.UnknownCertificate(f"no certificate with serial {text_serial[:64]!r}")
    return cleaned.lstrip("0") or "0"


def ca_id_of(certificate: x509.Certificate) -> str:
    ski = certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return ski.digest.hex()


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
        self.keys = keys
        self.config = config
        self._clock = clock
        self._serials = serials
        self._lock = threading.Lock()
        self._loaded_at = 0.0
        self._cas: dict[str, CertificateAuthority] = {}
        self._issuers: dict[str, Issuer] = {}
        self._active_id = ""
        self._writer = BatchWriter(engine)

    def close(self) -> None:
        self._writer.close()

    # -- CA hierarchy -------------------------------------------------------------------------

    def bootstrap(self, actor: Actor) -> None:
        """Create the root and first issuing CA on an empty database; otherwise just load them."""
        with Session(self.engine) as session:
            self._lock_ca_changes(session)
            existing = session.exec(select(CertificateAuthority).limit(1)).first()
            if existing is None:
                now = self._clock()
                root_signer = self.keys.create(self.config.ca_key_algorithm, "root-ca")
                root_cert = build_root_ca(
                    root_signer,
                    common_name=f"weighstation root CA {self.config.trust_domain}",
                    now=now,
                    ttl=self.config.root_ca_ttl,
                    serial=self._serials(),
                )
                root = Issuer(certificate=root_cert, signer=root_signer, chain=())
                session.add(self._ca_row(root_cert, "root", None, root_signer.key_ref, now))
                issuing = self._new_issuing(session, root, now)
                audit.record(
                    session,
                    audit.values(
                        actor,
                        "ca.bootstrap",
                        at=now,
                        target=issuing.id,
                        detail={"root": ca_id_of(root_cert), "issuing": issuing.id},
                    ),
                )
            session.commit()
        self._reload()

    def rotate(self, actor: Actor, *, idempotency: Pending[CaView] | None = None) -> CaView:
        """A new issuing CA under the same root; the old one is retired but stays trusted until expiry."""
        with Session(self.engine) as session:
            self._lock_ca_changes(session)
            now = self._clock()
            rows = list(session.exec(select(CertificateAuthority)).all())
            root_row = next(r for r in rows if r.kind == "root" and r.status == "active")
            root_cert = x509.load_der_x509_certificate(root_row.certificate_der)
            root = Issuer(certificate=root_cert, signer=self.keys.load(root_row.key_ref), chain=())
            for row in rows:
                if row.kind == "issuing" and row.status == "active":
                    row.status = "retired"
                    session.add(row)
            new = self._new_issuing(session, root, now)
            audit.record(session, audit.values(actor, "ca.rotate", at=now, target=new.id))
            view = self._ca_view(new)
            self._commit(session, view, idempotency, now)
        self._reload()
        return view

    def authorities(self) -> list[CaView]:
        self._refresh()
        return [self._ca_view(row) for row in self._cas.values()]

    def bundle_pem(self) -> bytes:
        """Root plus every issuing CA still valid: old and new are both served during a rotation."""
        now = self._clock()
        return b"".join(
            view.certificate.public_bytes(serialization.Encoding.PEM)
            for view in self.authorities()
            if view.not_after > now
        )

    # -- certificates -------------------------------------------------------------------------

    def issue(
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
        try:
            prepared = self._prepare_issue(
                actor, profile=profile, csr=csr, uri_sans=uri_sans, dns_sans=dns_sans, ttl=ttl
            )
        except errors.PkiError as exc:
            self._refusal(actor, _ISSUE, exc, target=profile).result()
            raise
        self._write(prepared, idempotency)
        return prepared.view

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
        """The HTTP hot path: signing runs on the caller's thread (it holds the GIL either way) and only
        the durable write is awaited, so no thread pool competes with the writer for the GIL."""
        try:
            prepared = self._prepare_issue(
                actor, profile=profile, csr=csr, uri_sans=uri_sans, dns_sans=dns_sans, ttl=ttl
            )
        except errors.PkiError as exc:
            await asyncio.wrap_future(self._refusal(actor, _ISSUE, exc, target=profile))
            raise
        try:
            await asyncio.wrap_future(self._writer.submit(self._rows(prepared, idempotency)))
        except IntegrityError as exc:
            raise self._lost_race(exc, idempotency) from None
        return prepared.view

    def _prepare_issue(
        self,
        actor: Actor,
        *,
        profile: str,
        csr: bytes,
        uri_sans: list[str] | None,
        dns_sans: list[str] | None,
        ttl: timedelta | None,
    ) -> _Prepared:
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
                view = self._view(row)
                self._commit(session, view, idempotency, now)
        except errors.PkiError as exc:
            self._refusal(actor, action, exc, target=serial).result()
            raise
        # Regenerated at once so relying parties fetching the CRL see the revocation.
        self.crl(view.issuer_id)
        return view

    # -- revocation status ----------------------------------------------------------------------

    def crl(self, issuer_id: str | None = None) -> bytes:
        self._refresh()
        issuer_id = issuer_id or self._active_id
        if issuer_id not in self._cas or self._cas[issuer_id].kind != "issuing":
            raise errors.UnknownCertificate(f"no issuing CA {issuer_id[:64]!r}")
        now = self._clock()
        with Session(self.engine) as session:
            current = session.get(CrlRecord, issuer_id)
            fresh_until = now + self.config.crl_validity / 2
            if current is not None and not current.stale and current.next_update > fresh_until:
                return current.crl_der
            issuer = self._issuer(issuer_id)
            revoked = session.exec(
                select(IssuedCertificate).where(
                    col(IssuedCertificate.issuer_id) == issuer_id,
                    col(IssuedCertificate.status) == "revoked",
                    # Expired entries may leave the CRL (RFC 5280 §3.3).
                    col(IssuedCertificate.not_after) > now,
                )
            ).all()
            entries = [
                RevokedEntry(
                    serial=int(r.serial, 16),
                    revoked_at=r.revoked_at or now,
                    reason=parse_reason(r.revocation_reason or "unspecified"),
                )
                for r in revoked
            ]
            number = (current.crl_number if current else 0) + 1
            crl = build_crl(issuer, entries, crl_number=number, now=now, next_update=self.config.crl_validity)
            der = crl.public_bytes(serialization.Encoding.DER)
            record = current or CrlRecord(
                issuer_id=issuer_id,
                crl_number=number,
                crl_der=der,
                this_update=now,
                next_update=now + self.config.crl_validity,
            )
            record.crl_number, record.crl_der, record.stale = number, der, False
            record.this_update, record.next_update = now, now + self.config.crl_validity
            session.add(record)
            session.commit()
            return der

    def ocsp(self, request_der: bytes) -> bytes:
        """RFC 6960: always a DER OCSPResponse; malformed and foreign requests get error statuses."""
        try:
            query = parse_ocsp_request(request_der)
        except errors.MalformedOcspRequest:
            return ocsp_error_response(x509_ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
        self._refresh()
        issuer_id = next(
            (
                cid
                for cid, row in self._cas.items()
                if row.kind == "issuing" and issuer_matches(query, self._issuer(cid))
            ),
            None,
        )
        if issuer_id is None:
            return ocsp_error_response(x509_ocsp.OCSPResponseStatus.UNAUTHORIZED)
        issuer = self._issuer(issuer_id)
        with Session(self.engine) as session:
            row = session.get(IssuedCertificate, serial_hex(query.serial))
        now = self._clock()
        if row is None or row.issuer_id != issuer_id:
            return build_ocsp_response(
                issuer, query, CertStatus.UNKNOWN, now=now, validity=self.config.ocsp_validity
            )
        if row.status == "revoked":
            return build_ocsp_response(
                issuer,
                query,
                CertStatus.REVOKED,
                now=now,
                validity=self.config.ocsp_validity,
                revoked_at=row.revoked_at,
                reason=parse_reason(row.revocation_reason or "unspecified"),
            )
        return build_ocsp_response(
            issuer, query, CertStatus.GOOD, now=now, validity=self.config.ocsp_validity
        )

    # -- internals ------------------------------------------------------------------------------

    def _sign(
        self, actor: Actor, action: str, request: ValidatedRequest, *, renewed_from: str | None
    ) -> _Prepared:
        """Sign and build the rows to store; nothing is written here. Serials are 159 random bits, so a
        collision (which the primary key would refuse) is not worth a retry path."""
        issuer_id, issuer = self._active_issuer()
        urls = IssuerUrls(
            crl_url=f"{self.config.public_url}/v1/ca/authorities/{issuer_id}/crl",
            ocsp_url=f"{self.config.public_url}/v1/ocsp",
        )
        subject = (request.uri_sans or request.dns_sans or ("",))[0]
        now = self._clock()
        certificate = issue_certificate(issuer, request, now=now, serial=self._serials(), urls=urls)
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
            "certificate_der": certificate.public_bytes(serialization.Encoding.DER),
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
        return _Prepared(view=view, rows=[(_CERTIFICATES, row), (_AUDIT, event)])

    def _rows(self, prepared: _Prepared, idempotency: Pending[CertificateView] | None) -> Rows:
        if idempotency is None:
            return prepared.rows
        return [*prepared.rows, (idempotency_table, idempotency.row(prepared.view, self._clock()))]

    def _write(self, prepared: _Prepared, idempotency: Pending[CertificateView] | None) -> None:
        try:
            self._writer.write(self._rows(prepared, idempotency))
        except IntegrityError as exc:
            raise self._lost_race(exc, idempotency) from None

    def _commit(self, session: Session, result: T, idempotency: Pending[T] | None, now: datetime) -> None:
        """Commit the session's change together with the stored response for its Idempotency-Key."""
        if idempotency is not None:
            session.add(IdempotencyRecord(**idempotency.row(result, now)))
        try:
            session.commit()
        except IntegrityError as exc:
            raise self._lost_race(exc, idempotency) from None

    def _lost_race(self, exc: IntegrityError, idempotency: Pending[Any] | None) -> Exception:
        """A concurrent request with the same Idempotency-Key committed first: nothing of ours was
        stored, and a retry replays the winner. Any other integrity error is a real fault."""
        if idempotency is not None and idempotency_lookup(self.engine, idempotency.claim) is not None:
            return IdempotencyKeyInUse(
                f"a request with Idempotency-Key {idempotency.claim.key!r} completed concurrently; retry"
            )
        return exc

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

    def _view(
        self,
        row: IssuedCertificate,
        issuer: Issuer | None = None,
        certificate: x509.Certificate | None = None,
    ) -> CertificateView:
        issuer = issuer or self._issuer(row.issuer_id)
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

    def _new_issuing(self, session: Session, root: Issuer, now: datetime) -> CertificateAuthority:
        signer = self.keys.create(self.config.ca_key_algorithm, "issuing-ca")
        cert = build_issuing_ca(
            root,
            signer.public_key(),
            common_name=f"weighstation issuing CA {self.config.trust_domain} {now:%Y-%m-%d %H:%M:%S}",
            trust_domain=self.config.trust_domain,
            now=now,
            ttl=self.config.issuing_ca_ttl,
            serial=self._serials(),
        )
        row = self._ca_row(cert, "issuing", ca_id_of(root.certificate), signer.key_ref, now)
        session.add(row)
        return row

    @staticmethod
    def _ca_row(
        cert: x509.Certificate, kind: str, parent: str | None, key_ref: str, now: datetime
    ) -> CertificateAuthority:
        return CertificateAuthority(
            id=ca_id_of(cert),
            kind=kind,
            status="active",
            parent_id=parent,
            key_ref=key_ref,
            certificate_der=cert.public_bytes(serialization.Encoding.DER),
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            created_at=now,
        )

    @staticmethod
    def _ca_view(row: CertificateAuthority) -> CaView:
        return CaView(
            id=row.id,
            kind=row.kind,
            status=row.status,
            not_before=row.not_before,
            not_after=row.not_after,
            certificate=x509.load_der_x509_certificate(row.certificate_der),
        )

    def _lock_ca_changes(self, session: Session) -> None:
        if self.engine.dialect.name == "postgresql":
            session.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _BOOTSTRAP_LOCK})

    def _reload(self) -> None:
        with Session(self.engine) as session:
            rows = list(session.exec(select(CertificateAuthority)).all())
        with self._lock:
            self._cas = {row.id: row for row in rows}
            active = [r for r in rows if r.kind == "issuing" and r.status == "active"]
            self._active_id = max(active, key=lambda r: r.created_at).id if active else ""
            self._issuers = {cid: iss for cid, iss in self._issuers.items() if cid in self._cas}
            self._loaded_at = time.monotonic()

    def _refresh(self) -> None:
        if time.monotonic() - self._loaded_at > _CACHE_SECONDS:
            self._reload()

    def _active_issuer(self) -> tuple[str, Issuer]:
        self._refresh()
        if not self._active_id:
            raise errors.SignerUnavailable("no active issuing CA: the authority has not been bootstrapped")
        return self._active_id, self._issuer(self._active_id)

    def _issuer(self, ca_id: str) -> Issuer:
        cached = self._issuers.get(ca_id)
        if cached is not None:
            return cached
        row = self._cas[ca_id]
        chain: tuple[x509.Certificate, ...] = ()
        if row.parent_id is not None:
            parent = self._cas[row.parent_id]
            chain = (x509.load_der_x509_certificate(parent.certificate_der),)
        issuer = Issuer(
            certificate=x509.load_der_x509_certificate(row.certificate_der),
            signer=self.keys.load(row.key_ref),
            chain=chain,
        )
        with self._lock:
            self._issuers[ca_id] = issuer
        return issuer
