"""Evidence-signing certificates a truck asks for itself, for its TPM identity key.

The truck sends a CSR signed by its identity key. The CSR's self-signature proves possession of the
key, and the key must be the one the truck enrolled and holds its current identity certificate for:
that match is what authenticates the truck, so no other credential is needed. Issued only if, in
order (each a typed, audited refusal):
1. the CSR parses and its signature verifies (proof of possession);
2. the truck exists and is enrolled;
3. the CSR key is the identity key the truck enrolled (TPM2_Certify-checked at enrollment);
4. the truck is not quarantined;
5. its current identity certificate is over that key, not revoked and in date.
The certificate (evidence profile: P-256, codeSigning, one embedded SCT, see pki.evidence_signing) names
the truck's SPIFFE ID from the truck record; the CSR's names are ignored. It is stored with its log
entries and the audit row in one transaction that re-reads the identity certificate's status and the
quarantine flag, so a revocation or quarantine committed meanwhile is not overtaken.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from attest.public import parse_tpmt_public
from pki.profiles import parse_csr
from provision import audit
from provision.audit import Actor
from provision.authority import Authority, CertificateView
from provision.errors import ProvisionError, TruckNotEnrolled, TruckQuarantined, UnknownTruck
from provision.fleets import spiffe_id
from provision.tables import IssuedCertificate, Truck, TruckAttestation, TruckEnrollment

ACTION = "truck.evidence-certificate.issue"
_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


class EvidenceKeyNotEnrolled(ProvisionError):
    """The CSR's key is not the TPM identity key the truck enrolled: it proves nothing about the truck."""

    code = "evidence-key-not-enrolled"
    kind = "forbidden"


class IdentityCertificateNotValid(ProvisionError):
    """The truck's current identity certificate is missing, revoked, expired or not over its key."""

    code = "identity-certificate-not-valid"
    kind = "forbidden"


@dataclass(frozen=True)
class EvidenceIssued:
    truck: str
    spiffe_id: str
    certificate: CertificateView


@dataclass(frozen=True)
class _Checked:
    spiffe_id: str
    identity_serial: str


class TruckEvidenceCertificates:
    def __init__(self, engine: Engine, authority: Authority, *, clock: Callable[[], datetime]) -> None:
        self._engine = engine
        self._authority = authority
        self._clock = clock

    def issue(
        self, actor: Actor, truck_id: str, csr: bytes, *, ttl: timedelta | None = None
    ) -> EvidenceIssued:
        with audit.refusals(self._engine, actor, ACTION, target=truck_id, clock=self._clock):
            return self._issue(actor, truck_id, csr, ttl)

    def _issue(self, actor: Actor, truck_id: str, csr: bytes, ttl: timedelta | None) -> EvidenceIssued:
        # 1. Proof of possession.
        key = parse_csr(csr).public_key().public_bytes(*_SPKI)
        with Session(self._engine) as session:
            checked = self._check(session, truck_id, key, self._clock())
        # Signed outside any transaction (CA and CT keys may be remote); stored below after a re-check.
        prepared = self._authority.prepare(
            actor, profile="evidence", csr=csr, uri_sans=[checked.spiffe_id], ttl=ttl
        )
        with Session(self._engine) as session:
            now = self._clock()
            self._check(session, truck_id, key, now, lock=True)
            conn = session.connection()
            for table, values in prepared.rows:
                conn.execute(table.insert(), values)
            detail = {"serial": prepared.view.serial, "identity_serial": checked.identity_serial}
            audit.record(session, audit.values(actor, ACTION, at=now, target=truck_id, detail=detail))
            session.commit()
        self._authority.log_wake()
        return EvidenceIssued(truck=truck_id, spiffe_id=checked.spiffe_id, certificate=prepared.view)

    def _check(
        self, session: Session, truck_id: str, key: bytes, now: datetime, *, lock: bool = False
    ) -> _Checked:
        postgres = session.connection().dialect.name == "postgresql"
        # 2. An enrolled truck.
        truck_query = select(Truck).where(col(Truck.id) == truck_id)
        if lock and postgres:
            # Serialises with a concurrent re-enrollment or renewal of this truck.
            truck_query = truck_query.with_for_update(read=True)
        truck = session.exec(truck_query).first()
        if truck is None:
            raise UnknownTruck(f"no truck {truck_id[:64]!r}")
        binding = session.exec(
            select(TruckEnrollment)
            .where(col(TruckEnrollment.truck_id) == truck_id)
            .order_by(col(TruckEnrollment.id).desc())
        ).first()
        if binding is None or truck.state != "enrolled" or truck.certificate_serial is None:
            raise TruckNotEnrolled(f"truck {truck_id} has not enrolled")
        # 3. The key it enrolled.
        enrolled = parse_tpmt_public(binding.identity_public).public_key().public_bytes(*_SPKI)
        if key != enrolled:
            raise EvidenceKeyNotEnrolled(
                f"the CSR's key is not the TPM identity key truck {truck_id} enrolled"
            )
        # 4. Not quarantined.
        state_query = select(TruckAttestation).where(col(TruckAttestation.truck_id) == truck_id)
        if lock and postgres:
            state_query = state_query.with_for_update(read=True)
        state = session.exec(state_query).first()
        if state is not None and state.quarantined:
            raise TruckQuarantined(f"truck {truck_id} is quarantined: {state.quarantine_reason}")
        # 5. Its current identity certificate: over that key, unrevoked, in date.
        serial = truck.certificate_serial
        cert_query = select(IssuedCertificate).where(col(IssuedCertificate.serial) == serial)
        if lock and postgres:
            # Serialises with a concurrent revocation of the identity certificate.
            cert_query = cert_query.with_for_update(read=True)
        cert = session.exec(cert_query).first()
        if cert is None:
            raise IdentityCertificateNotValid(f"truck {truck_id}'s identity certificate {serial} is unknown")
        if cert.status != "valid":
            raise IdentityCertificateNotValid(
                f"truck {truck_id}'s identity certificate {serial} was revoked at {cert.revoked_at} "
                f"({cert.revocation_reason})"
            )
        if not cert.not_before <= now < cert.not_after:
            raise IdentityCertificateNotValid(
                f"truck {truck_id}'s identity certificate {serial} is valid "
                f"{cert.not_before:%Y-%m-%dT%H:%M:%SZ}..{cert.not_after:%Y-%m-%dT%H:%M:%SZ}, not now"
            )
        held = x509.load_der_x509_certificate(cert.certificate_der).public_key().public_bytes(*_SPKI)
        if held != enrolled:
            raise IdentityCertificateNotValid(
                f"truck {truck_id}'s identity certificate {serial} is not over its enrolled key"
            )
        return _Checked(spiffe_id(self._authority.config.trust_domain, truck.fleet_id, truck.id), serial)
