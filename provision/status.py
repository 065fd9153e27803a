"""Revocation status for relying parties: CRLs (RFC 5280) and the OCSP responder (RFC 6960)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from cryptography.hazmat.primitives import serialization
from cryptography.x509 import ocsp
from sqlalchemy import Engine, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from pki import errors
from pki.ocsp import CertStatus, build_ocsp_response, issuer_matches, ocsp_error_response, parse_ocsp_request
from pki.revocation import RevokedEntry, build_crl, parse_reason
from provision.config import AuthorityConfig
from provision.hierarchy import CaHierarchy
from provision.tables import CrlRecord, IssuedCertificate


class RevocationStatus:
    def __init__(
        self, engine: Engine, cas: CaHierarchy, config: AuthorityConfig, *, clock: Callable[[], datetime]
    ) -> None:
        self._engine = engine
        self._cas = cas
        self._config = config
        self._clock = clock

    def crl(self, issuer_id: str | None = None) -> bytes:
        """The issuer's current CRL, regenerated when a revocation made it stale or it nears nextUpdate."""
        issuer_id = issuer_id or self._cas.active()[0]
        if issuer_id not in self._cas.issuing_ids():
            raise errors.UnknownAuthority(f"no issuing CA {issuer_id[:64]!r}")
        now = self._clock()
        with Session(self._engine) as session:
            current = session.get(CrlRecord, issuer_id)
            if current is not None:
                if self._fresh(current, now):
                    return current.crl_der
                # Take the row (PostgreSQL) or the database (SQLite) before reading the revoked entries, so
                # no revocation can commit between that read and storing the CRL built from it.
                session.execute(
                    update(CrlRecord)
                    .where(col(CrlRecord.issuer_id) == issuer_id)
                    .values(stale=col(CrlRecord.stale))
                )
                session.refresh(current)
                if self._fresh(current, now):
                    return current.crl_der
            der = self._build(session, issuer_id, (current.crl_number if current else 0) + 1, now)
            if current is None:
                session.add(self._record(issuer_id, 1, der, now))
            else:
                current.crl_number += 1
                current.crl_der, current.stale = der, False
                current.this_update, current.next_update = now, now + self._config.crl_validity
            try:
                session.commit()
            except IntegrityError:
                # Another replica stored the first CRL at the same moment: serve that one.
                session.rollback()
                stored = session.get(CrlRecord, issuer_id)
                assert stored is not None
                return stored.crl_der
            return der

    def ocsp(self, request_der: bytes) -> bytes:
        """Always a DER OCSPResponse: malformed and foreign requests get error statuses, not exceptions."""
        try:
            query = parse_ocsp_request(request_der)
        except errors.MalformedOcspRequest:
            return ocsp_error_response(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
        issuer_id = next(
            (cid for cid in self._cas.issuing_ids() if issuer_matches(query, self._cas.issuer(cid))), None
        )
        if issuer_id is None:
            return ocsp_error_response(ocsp.OCSPResponseStatus.UNAUTHORIZED)
        issuer = self._cas.issuer(issuer_id)
        with Session(self._engine) as session:
            row = session.get(IssuedCertificate, format(query.serial, "x"))
        now, validity = self._clock(), self._config.ocsp_validity
        if row is None or row.issuer_id != issuer_id:
            return build_ocsp_response(issuer, query, CertStatus.UNKNOWN, now=now, validity=validity)
        if row.status == "revoked":
            return build_ocsp_response(
                issuer,
                query,
                CertStatus.REVOKED,
                now=now,
                validity=validity,
                revoked_at=row.revoked_at,
                reason=parse_reason(row.revocation_reason or "unspecified"),
            )
        return build_ocsp_response(issuer, query, CertStatus.GOOD, now=now, validity=validity)

    def _fresh(self, record: CrlRecord, now: datetime) -> bool:
        return not record.stale and record.next_update > now + self._config.crl_validity / 2

    def _build(self, session: Session, issuer_id: str, number: int, now: datetime) -> bytes:
        revoked = session.exec(
            select(IssuedCertificate).where(
                col(IssuedCertificate.issuer_id) == issuer_id,
                col(IssuedCertificate.status) == "revoked",
                col(IssuedCertificate.not_after) > now,  # expired entries may leave the CRL (RFC 5280 §3.3)
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
        crl = build_crl(
            self._cas.issuer(issuer_id),
            entries,
            crl_number=number,
            now=now,
            next_update=self._config.crl_validity,
        )
        return crl.public_bytes(serialization.Encoding.DER)

    def _record(self, issuer_id: str, number: int, der: bytes, now: datetime) -> CrlRecord:
        return CrlRecord(
            issuer_id=issuer_id,
            crl_number=number,
            crl_der=der,
            this_update=now,
            next_update=now + self._config.crl_validity,
            stale=False,
        )
