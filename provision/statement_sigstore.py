"""Truck statements exported for Sigstore, stamped when they are submitted.

A truck that holds an evidence certificate for its identity key (provision.evidence_certificates) sends
it with a statement. The statement's submission (provision.statements) then, before anything is written:
1. checks the certificate: one issued here by the evidence CA with the evidence profile (stored bytes
   equal), over the same key as the identity certificate that signed the statement and for the same
   SPIFFE ID, not revoked and in date now;
2. builds the hashedrekord 0.0.2 entry (statement digest, signature, evidence certificate) and has the
   TSA stamp the signature now, while the certificate is valid;
and in the statement's own transaction re-reads the certificate's status, appends the entry to the log's
pending rows and stores entry and timestamp. A bad certificate refuses the whole statement (typed,
audited, nothing stored): a truck asking for Sigstore evidence never gets a statement silently without.

`bundle` rebuilds the Sigstore bundle v0.3 from what was stored, at any later time: the timestamp dates
the signature within the certificate's validity, so it verifies after the certificate expired.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import Engine, insert
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, SQLModel, col, select

from pki.errors import PkiError
from provision.errors import ProvisionError, UnknownStatement, UnknownTruck
from provision.sequencer import LogNotReady, Placed, item, known_entries, receipts
from provision.sigstore import HASHEDREKORD, Sigstore
from provision.tables import IssuedCertificate, Truck, TruckStatementRow, TruckStatementSigstore
from provision.tlog_store import TransparencyLog, pending_row
from tlog.checkpoint import verify_checkpoint
from tlog.errors import TlogError
from tlog.merkle import leaf_hash
from tlog.sigstore import LoggedEntry, bundle, hashedrekord_body

log = logging.getLogger("weighstation.statements")

MAX_EVIDENCE_CERTIFICATES = 4
# How long an export waits for the sequencer to place a just-submitted statement's entry.
SEQUENCE_WAIT_SECONDS = 5.0
_DER = serialization.Encoding.DER
_SPKI = (_DER, serialization.PublicFormat.SubjectPublicKeyInfo)
_STORED = SQLModel.metadata.tables[TruckStatementSigstore.__tablename__]


class StatementEvidenceInvalid(ProvisionError):
    """The evidence certificate sent with a statement is not PEM, not an evidence certificate issued
    here, or not for the key and SPIFFE ID of the identity certificate that signed the statement."""

    code = "statement-evidence-certificate-invalid"
    kind = "forbidden"


class StatementEvidenceRevoked(ProvisionError):
    code = "statement-evidence-certificate-revoked"
    kind = "forbidden"


class StatementEvidenceExpired(ProvisionError):
    """The evidence certificate is outside its validity period at submission."""

    code = "statement-evidence-certificate-expired"
    kind = "forbidden"


class SigstoreNotLoaded(ProvisionError):
    """This process holds no Sigstore keys (evidence CA, CT key, TSA)."""

    code = "sigstore-unavailable"
    kind = "unavailable"


class StatementWithoutSigstore(ProvisionError):
    """The statement was submitted without an evidence certificate: there is no Sigstore bundle of it."""

    code = "statement-without-evidence-certificate"
    kind = "conflict"


class StatementNotSequenced(ProvisionError):
    """The statement's hashedrekord entry is not in the log yet; ask again shortly."""

    code = "statement-not-sequenced"
    kind = "conflict"


@dataclass(frozen=True)
class Stamped:
    """A statement's Sigstore material, made before its transaction and stored in it (`store`)."""

    evidence_serial: str
    body: bytes  # the hashedrekord 0.0.2 entry
    timestamp: bytes  # TimeStampResp (DER) over SHA-256(signature)
    stamped_at: datetime


def _sans(certificate: x509.Certificate) -> list[str]:
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return names.get_values_for_type(x509.UniformResourceIdentifier)


class StatementSigstore:
    def __init__(
        self,
        engine: Engine,
        sigstore: Sigstore,
        log: TransparencyLog,
        *,
        clock: Callable[[], datetime],
        wait: float = SEQUENCE_WAIT_SECONDS,
    ) -> None:
        self._engine = engine
        self._sigstore = sigstore
        self._log = log
        self._clock = clock
        self._wait = wait

    # -- at submission ---------------------------------------------------------------------------

    def prepare(
        self, data: bytes, signature: bytes, certificate_pem: str, identity: x509.Certificate
    ) -> Stamped:
        """Steps 1 and 2 of the module docstring, for a statement whose signature by `identity`'s key
        the caller has verified."""
        try:
            certificates = x509.load_pem_x509_certificates(certificate_pem.encode())
        except ValueError as exc:
            raise StatementEvidenceInvalid(f"the evidence certificate is not PEM: {exc}") from None
        if not 1 <= len(certificates) <= MAX_EVIDENCE_CERTIFICATES:
            raise StatementEvidenceInvalid(
                f"the evidence chain holds 1..{MAX_EVIDENCE_CERTIFICATES} certificates"
            )
        certificate = certificates[0]
        serial = format(certificate.serial_number, "x")
        with Session(self._engine) as session:
            row = session.get(IssuedCertificate, serial)
        issuer = self._sigstore.evidence_issuer_id()
        if (
            row is None
            or row.certificate_der != certificate.public_bytes(_DER)
            or row.issuer_id != issuer
            or row.profile != "evidence"
        ):
            raise StatementEvidenceInvalid(f"certificate {serial} is not an evidence certificate issued here")
        if certificate.public_key().public_bytes(*_SPKI) != identity.public_key().public_bytes(*_SPKI):
            raise StatementEvidenceInvalid(
                f"evidence certificate {serial} is not for the identity key that signed the statement"
            )
        if _sans(certificate) != _sans(identity):
            raise StatementEvidenceInvalid(f"evidence certificate {serial} names another identity")
        now = self._clock()
        self._check_status(row, now)
        body = hashedrekord_body(hashlib.sha256(data).digest(), signature, certificate)
        # Stamped now, while the certificate is valid: the timestamp is what dates the signature.
        timestamp = self._sigstore.stamp(signature, now)
        return Stamped(evidence_serial=serial, body=body, timestamp=timestamp, stamped_at=now)

    def store(self, session: Session, statement_sha256: str, stamped: Stamped, now: datetime) -> None:
        """In the statement's transaction: the certificate's status again, the log entry, the row."""
        query = select(IssuedCertificate).where(col(IssuedCertificate.serial) == stamped.evidence_serial)
        conn = session.connection()
        if conn.dialect.name == "postgresql":
            # Serialises with a concurrent revocation of the evidence certificate.
            query = query.with_for_update(read=True)
        row = session.exec(query).one()
        self._check_status(row, now)
        table, pending = pending_row(stamped.body, HASHEDREKORD, now)
        conn.execute(table.insert(), pending)
        conn.execute(
            insert(_STORED),
            {
                "statement_sha256": statement_sha256,
                "evidence_serial": stamped.evidence_serial,
                "hashedrekord": stamped.body,
                "leaf_hash": leaf_hash(stamped.body),
                "timestamp": stamped.timestamp,
                "stamped_at": stamped.stamped_at,
            },
        )

    @staticmethod
    def _check_status(row: IssuedCertificate, now: datetime) -> None:
        if row.status != "valid":
            raise StatementEvidenceRevoked(
                f"evidence certificate {row.serial} was revoked at {row.revoked_at} ({row.revocation_reason})"
            )
        if not row.not_before <= now < row.not_after:
            raise StatementEvidenceExpired(
                f"evidence certificate {row.serial} is valid {row.not_before:%Y-%m-%dT%H:%M:%SZ}.."
                f"{row.not_after:%Y-%m-%dT%H:%M:%SZ}, not at submission"
            )

    # -- export ----------------------------------------------------------------------------------

    def bundle(self, truck_id: str, sequence: int) -> dict[str, Any]:
        """The Sigstore bundle v0.3 of statement `sequence` of `truck_id`."""
        with Session(self._engine) as session:
            statement = session.exec(
                select(TruckStatementRow).where(
                    col(TruckStatementRow.truck_id) == truck_id, col(TruckStatementRow.sequence) == sequence
                )
            ).first()
            if statement is None:
                if session.get(Truck, truck_id) is None:
                    raise UnknownTruck(f"no truck {truck_id[:64]!r}")
                raise UnknownStatement(f"truck {truck_id} has no statement {sequence}")
            stored = session.get(TruckStatementSigstore, statement.sha256)
            if stored is None:
                raise StatementWithoutSigstore(
                    f"statement {sequence} of truck {truck_id} was submitted without an evidence "
                    "certificate, so it has no Sigstore bundle (`weighstation agent evidence-cert` first)"
                )
            certificate = session.get(IssuedCertificate, stored.evidence_serial)
            assert certificate is not None  # a foreign key
        entry = self._logged(bytes(stored.hashedrekord), stored.stamped_at)
        return bundle(
            certificate=x509.load_der_x509_certificate(certificate.certificate_der),
            digest=hashlib.sha256(bytes(statement.statement)).digest(),
            signature=bytes(statement.signature),
            entry=entry,
            log=self._log.verifier_key(),
            timestamps=[bytes(stored.timestamp)],
        )

    def _logged(self, body: bytes, stamped_at: datetime) -> LoggedEntry:
        leaf = leaf_hash(body)
        placed = self._place(leaf)
        if placed is None:
            try:
                self._log.sync(self._wait)
            except (TimeoutError, LogNotReady, SQLAlchemyError, PkiError, TlogError, RuntimeError) as exc:
                log.warning("hashedrekord %s not sequenced yet: %s", leaf.hex(), exc)
            placed = self._place(leaf)
        if placed is None:
            raise StatementNotSequenced("the statement's Sigstore entry is not in the log yet; retry shortly")
        with self._engine.connect() as conn:
            (receipt,) = receipts(conn, [item(body, HASHEDREKORD, stamped_at)], [placed])
        key = self._log.verifier_key()
        # Fail closed: never hand out a proof that does not verify against the log's own key.
        checkpoint = verify_checkpoint(receipt.checkpoint, [key], origin=self._log.origin)
        checkpoint.verify_inclusion(receipt.leaf_hash, receipt.index, receipt.proof)
        return LoggedEntry(
            body=body,
            index=receipt.index,
            tree_size=checkpoint.size,
            root_hash=checkpoint.root_hash,
            proof=receipt.proof,
            checkpoint=receipt.checkpoint,
        )

    def _place(self, leaf: bytes) -> Placed | None:
        with self._engine.connect() as conn:
            return known_entries(conn, [leaf]).get(leaf)
