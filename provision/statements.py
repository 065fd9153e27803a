"""Truck statements: a truck's signed mission manifests and telemetry snapshots, chained per truck and
appended to the transparency log, answered with a receipt.

submit checks, in order, and refuses with one typed error each (audited, nothing stored):
1. the bytes are one canonical statement (`tlog.statement.parse_statement`) for the truck in the path;
   the exact same statement again gets its first receipt (dedup by SHA-256, signature still checked);
2. the leaf of the chain is the truck's current identity certificate: issued by one of our issuing CAs
   (signature checked), for the truck's SPIFFE ID, over the identity key the truck enrolled; any further
   certificate in the chain is one of our CAs;
3. the signature is ECDSA P-256 / SHA-256 over the statement's bytes by that key;
4. the checkpoint it names is one this log signed (origin, size, root);
5. in the write transaction: the certificate is not revoked and in date (recorded as its status at
   submission); the sequence is the chain head + 1 (else `statement-sequence-gap`) and `previous` is the
   head's hash (else `statement-fork`; also for a sequence already held with other content). A fork is
   the truck's TPM signing two histories: it is refused, and recorded on the truck's chain
   (`chain_broken_at`, a fork row with both hashes, an audit row, a log entry).
The statement row, the chain head and the log's pending row commit in one transaction; then the
sequencer is woken and the call waits (bounded) for the entry to be sequenced to give the receipt.
Unique keys (statement hash, (truck, sequence), the chain head's expected sequence) keep replicas
from accepting two statements at one place in a chain.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import NoReturn

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import Engine, func, insert, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlmodel import Session, SQLModel, col, select

from attest.public import parse_tpmt_public
from pki.errors import PkiError
from provision import audit
from provision.audit import Actor
from provision.authority import Authority
from provision.errors import (
    StatementCertificateExpired,
    StatementCertificateInvalid,
    StatementCertificateNotCurrent,
    StatementCertificateRevoked,
    StatementCheckpointUnknown,
    StatementFork,
    StatementSequenceGap,
    StatementSignatureInvalid,
    StatementWrongTruck,
    TruckNotEnrolled,
    UnknownStatement,
    UnknownTruck,
)
from provision.fleets import spiffe_id
from provision.sequencer import CHECKPOINTS, ENTRIES, LogNotReady, item, known_entries, receipts
from provision.statement_sigstore import SigstoreNotLoaded, Stamped, StatementSigstore
from provision.tables import (
    AuditEvent,
    IssuedCertificate,
    Truck,
    TruckEnrollment,
    TruckStatementChain,
    TruckStatementFork,
    TruckStatementRow,
)
from provision.tlog_store import TransparencyLog
from provision.tlog_store import event as tlog_event
from tlog.errors import TlogError
from tlog.merkle import leaf_hash
from tlog.statement import TruckStatement, parse_statement

log = logging.getLogger("weighstation.statements")

ENTRY_KIND = "truck.statement"
FORK_KIND = "truck.statement.fork"
ACTION = "truck.statement.submit"
# How long a submission waits for the sequencer before answering 202 with a URL to poll.
RECEIPT_WAIT_SECONDS = 5.0
MAX_CHAIN_CERTIFICATES = 4
_DER = serialization.Encoding.DER
_SPKI = (_DER, serialization.PublicFormat.SubjectPublicKeyInfo)
_STATEMENTS = SQLModel.metadata.tables[TruckStatementRow.__tablename__]
_CHAINS = SQLModel.metadata.tables[TruckStatementChain.__tablename__]
_FORKS = SQLModel.metadata.tables[TruckStatementFork.__tablename__]
_AUDIT = SQLModel.metadata.tables[AuditEvent.__tablename__]


@dataclass(frozen=True)
class ReceiptView:
    """The statement's log entry is at `index` in the tree `checkpoint` (a signed note) signs."""

    index: int
    leaf_hash: bytes
    proof: tuple[bytes, ...]
    checkpoint: bytes
    entry: bytes
    log_key: str


@dataclass(frozen=True)
class StatementView:
    truck: str
    sequence: int
    kind: str
    sha256: bytes
    statement: bytes
    signature: bytes
    certificate_chain_pem: str
    certificate_serial: str
    certificate_status: str
    submitted_at: datetime
    receipt: ReceiptView | None  # None until the sequencer has logged it
    repeated: bool = False  # this submission was the same statement again


@dataclass(frozen=True)
class ForkView:
    sequence: int
    refused_sha256: str
    held_sha256: str
    previous: str
    detected_at: datetime


@dataclass(frozen=True)
class ChainView:
    truck: str
    sequence: int  # 0 before the first statement
    head_sha256: str  # "" before the first statement
    updated_at: datetime | None
    chain_broken_at: datetime | None
    forks: tuple[ForkView, ...]


@dataclass(frozen=True)
class _Signer:
    """The checked signing certificate: the truck's current one, by our CA, over its enrolled key."""

    leaf: x509.Certificate
    serial: str
    chain_pem: str


class _HeadMoved(Exception):
    """Another replica moved the truck's chain head between our read and our write."""


@dataclass(frozen=True)
class _Fork:
    held_sha256: str
    reason: str


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class Statements:
    def __init__(
        self,
        engine: Engine,
        authority: Authority,
        log: TransparencyLog,
        *,
        clock: Callable[[], datetime],
        wait: float = RECEIPT_WAIT_SECONDS,
    ) -> None:
        self._engine = engine
        self._authority = authority
        self._log = log
        self._clock = clock
        self._wait = wait
        # Set by the service once its Sigstore keys are loaded: stamps statements sent with an
        # evidence certificate (provision.statement_sigstore).
        self.sigstore: StatementSigstore | None = None

    # -- submit ----------------------------------------------------------------------------------

    def submit(
        self,
        actor: Actor,
        truck_id: str,
        statement: bytes,
        signature: bytes,
        chain_pem: str,
        *,
        evidence_certificate_pem: str | None = None,
    ) -> StatementView:
        try:
            with audit.refusals(self._engine, actor, ACTION, target=truck_id, clock=self._clock):
                stored = self._submit(
                    actor, truck_id, statement, signature, chain_pem, evidence_pem=evidence_certificate_pem
                )
        except TlogError as exc:
            # The pure core's parse errors carry no audit flag: their one row is written here.
            audit.record_refusal(
                self._engine,
                actor,
                ACTION,
                at=self._clock(),
                code=exc.code,
                reason=exc.reason,
                target=truck_id,
            )
            raise
        return self._with_receipt(stored, wait=True)

    def _submit(
        self,
        actor: Actor,
        truck_id: str,
        data: bytes,
        signature: bytes,
        chain_pem: str,
        *,
        evidence_pem: str | None = None,
    ) -> StatementView:
        # 1. One canonical statement, for this truck.
        statement = parse_statement(data)
        if statement.truck != truck_id:
            raise StatementWrongTruck(f"the statement is for truck {statement.truck!r}, not {truck_id!r}")
        first = self._stored(statement.sha256.hex())
        if first is not None:
            _verify_signature(_leaf_of(first.certificate_chain_pem), data, signature)
            return _repeated(first)
        # 2. The truck's current identity certificate, by our CA, over its enrolled key.
        signer = self._signer(truck_id, chain_pem)
        # 3. The truck's TPM signed these bytes.
        _verify_signature(signer.leaf, data, signature)
        # 4. A checkpoint this log signed.
        self._check_checkpoint(statement)
        # 4b. Sent with an evidence certificate: its Sigstore entry and timestamp, stored with it.
        stamped = None
        if evidence_pem is not None:
            if self.sigstore is None:
                raise SigstoreNotLoaded("the Sigstore keys are not loaded in this process")
            stamped = self.sigstore.prepare(data, signature, evidence_pem, signer.leaf)
        # 5. Status, chain position and the writes, in one transaction (retried once after a race).
        for attempt in (1, 2):
            try:
                outcome = self._append(actor, statement, signature, signer, stamped)
            except (IntegrityError, _HeadMoved):
                if attempt == 2:
                    raise
                first = self._stored(statement.sha256.hex())
                if first is not None:
                    return _repeated(first)
                continue
            if isinstance(outcome, _Fork):
                self._record_fork(actor, statement, signature, outcome)
            return outcome
        raise AssertionError("unreachable")

    def _signer(self, truck_id: str, chain_pem: str) -> _Signer:
        try:
            chain = x509.load_pem_x509_certificates(chain_pem.encode())
        except ValueError as exc:
            raise StatementCertificateInvalid(f"the certificate chain is not PEM: {exc}") from None
        if not 1 <= len(chain) <= MAX_CHAIN_CERTIFICATES:
            raise StatementCertificateInvalid(f"the chain holds 1..{MAX_CHAIN_CERTIFICATES} certificates")
        leaf, serial = chain[0], format(chain[0].serial_number, "x")
        with Session(self._engine) as session:
            truck = session.get(Truck, truck_id)
            if truck is None:
                raise UnknownTruck(f"no truck {truck_id[:64]!r}")
            binding = session.exec(
                select(TruckEnrollment)
                .where(col(TruckEnrollment.truck_id) == truck_id)
                .order_by(col(TruckEnrollment.id).desc())
            ).first()
            issued = session.get(IssuedCertificate, serial)
        if binding is None or truck.state != "enrolled":
            raise TruckNotEnrolled(f"truck {truck_id} has not enrolled")
        if issued is None or issued.certificate_der != leaf.public_bytes(_DER):
            raise StatementCertificateInvalid("the leaf certificate is not one this authority issued")
        authorities = self._authority.cas.authorities()
        issuer = next((ca.certificate for ca in authorities if ca.id == issued.issuer_id), None)
        if issuer is None:
            raise StatementCertificateInvalid("the leaf's issuer is not one of our CAs")
        try:
            leaf.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature) as exc:
            raise StatementCertificateInvalid(
                f"the leaf does not verify under our issuing CA: {exc}"
            ) from None
        ours = {ca.certificate.public_bytes(_DER) for ca in authorities}
        if any(c.public_bytes(_DER) not in ours for c in chain[1:]):
            raise StatementCertificateInvalid("the chain holds a certificate that is not one of our CAs")
        expected = spiffe_id(self._authority.config.trust_domain, truck.fleet_id, truck.id)
        try:
            sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            sans = x509.SubjectAlternativeName([])
        if sans.get_values_for_type(x509.UniformResourceIdentifier) != [expected]:
            raise StatementCertificateInvalid(f"the certificate is not for {expected}")
        enrolled = parse_tpmt_public(binding.identity_public).public_key()
        if leaf.public_key().public_bytes(*_SPKI) != enrolled.public_bytes(*_SPKI):
            raise StatementCertificateInvalid(
                "the certificate's key is not the identity key the truck enrolled"
            )
        if truck.certificate_serial != serial:
            raise StatementCertificateNotCurrent(
                f"certificate {serial} is not truck {truck_id}'s current one ({truck.certificate_serial})"
            )
        return _Signer(leaf=leaf, serial=serial, chain_pem=chain_pem)

    def _check_checkpoint(self, statement: TruckStatement) -> None:
        seen = statement.checkpoint
        if seen.origin != self._log.origin:
            raise StatementCheckpointUnknown(
                f"the checkpoint is of log {seen.origin!r}, not {self._log.origin!r}"
            )
        with self._engine.connect() as conn:
            root = conn.execute(
                select(CHECKPOINTS.c.root_hash).where(CHECKPOINTS.c.size == seen.size)
            ).scalar()
        if root is None or bytes(root) != seen.root_hash:
            raise StatementCheckpointUnknown(
                f"this log signed no checkpoint of size {seen.size} with that root"
            )

    def _append(
        self,
        actor: Actor,
        statement: TruckStatement,
        signature: bytes,
        signer: _Signer,
        stamped: Stamped | None = None,
    ) -> StatementView | _Fork:
        now = self._clock()
        digest = statement.sha256.hex()
        with Session(self._engine) as session:
            conn = session.connection()
            cert_query = select(IssuedCertificate).where(col(IssuedCertificate.serial) == signer.serial)
            if conn.dialect.name == "postgresql":
                # Serialises with a concurrent revocation of this certificate.
                cert_query = cert_query.with_for_update(read=True)
            cert = session.exec(cert_query).one()
            if cert.status == "revoked":
                raise StatementCertificateRevoked(
                    f"certificate {signer.serial} was revoked at {cert.revoked_at} ({cert.revocation_reason})"
                )
            if not cert.not_before <= now < cert.not_after:
                raise StatementCertificateExpired(
                    f"certificate {signer.serial} is valid {cert.not_before:%Y-%m-%dT%H:%M:%SZ}.."
                    f"{cert.not_after:%Y-%m-%dT%H:%M:%SZ}, not at submission"
                )
            head = session.get(TruckStatementChain, statement.truck)
            head_sequence, head_sha256 = (head.sequence, head.head_sha256) if head else (0, "")
            if statement.sequence > head_sequence + 1:
                raise StatementSequenceGap(
                    f"statement {statement.sequence} skips past the chain head {head_sequence}; "
                    f"submit {head_sequence + 1} first"
                )
            if statement.sequence <= head_sequence:
                held = session.exec(
                    select(TruckStatementRow.sha256).where(
                        col(TruckStatementRow.truck_id) == statement.truck,
                        col(TruckStatementRow.sequence) == statement.sequence,
                    )
                ).one()
                if held == digest:
                    # The same statement, committed by a concurrent call since our first look.
                    return _repeated(_view(session.get_one(TruckStatementRow, digest), None))
                return _Fork(held, f"sequence {statement.sequence} is already held by {held}, not {digest}")
            previous = statement.previous.hex() if statement.previous else ""
            if previous != head_sha256:
                return _Fork(
                    head_sha256,
                    f"statement {statement.sequence} names previous {previous}, "
                    f"the chain head is {head_sha256}",
                )
            table, pending = tlog_event(
                ENTRY_KIND,
                {
                    "truck": statement.truck,
                    "sequence": statement.sequence,
                    "statement_kind": statement.kind,
                    "statement_sha256": digest,
                    "statement": _b64(statement.data),
                    "signature": _b64(signature),
                    "certificate": _b64(signer.leaf.public_bytes(_DER)),
                    "certificate_serial": signer.serial,
                    "certificate_status": "good",
                },
                now,
            )
            leaf = leaf_hash(pending["entry"])
            row = TruckStatementRow(
                sha256=digest,
                truck_id=statement.truck,
                sequence=statement.sequence,
                kind=statement.kind,
                statement=statement.data,
                signature=signature,
                certificate_chain_pem=signer.chain_pem,
                certificate_serial=signer.serial,
                certificate_status="good",
                checkpoint_size=statement.checkpoint.size,
                leaf_hash=leaf,
                issued_at=statement.issued_at,
                submitted_at=now,
            )
            session.add(row)
            if head is None:
                conn.execute(
                    insert(_CHAINS),
                    {
                        "truck_id": statement.truck,
                        "sequence": 1,
                        "head_sha256": digest,
                        "updated_at": now,
                        "forks": 0,
                    },
                )
            else:
                moved = conn.execute(
                    update(_CHAINS)
                    .where(_CHAINS.c.truck_id == statement.truck, _CHAINS.c.sequence == head_sequence)
                    .values(sequence=statement.sequence, head_sha256=digest, updated_at=now)
                )
                if moved.rowcount != 1:
                    raise _HeadMoved(statement.truck)
            conn.execute(table.insert(), pending)
            detail: dict[str, object] = {
                "sequence": statement.sequence,
                "sha256": digest,
                "kind": statement.kind,
                "serial": signer.serial,
            }
            if stamped is not None:
                assert self.sigstore is not None
                session.flush()  # the statement row first: the Sigstore row references it
                self.sigstore.store(session, digest, stamped, now)
                detail["evidence_serial"] = stamped.evidence_serial
            audit.record(session, audit.values(actor, ACTION, at=now, target=statement.truck, detail=detail))
            session.commit()
            view = _view(row, None)
        self._log.wake()
        return view

    def _record_fork(
        self, actor: Actor, statement: TruckStatement, signature: bytes, fork: _Fork
    ) -> NoReturn:
        """The refused statement is the truck's own signed evidence of a second history: keep it."""
        now = self._clock()
        digest = statement.sha256.hex()
        previous = statement.previous.hex() if statement.previous else ""
        with Session(self._engine) as session:
            conn = session.connection()
            conn.execute(
                insert(_FORKS),
                {
                    "truck_id": statement.truck,
                    "sequence": statement.sequence,
                    "refused_sha256": digest,
                    "held_sha256": fork.held_sha256,
                    "previous": previous,
                    "statement": statement.data,
                    "signature": signature,
                    "detected_at": now,
                },
            )
            conn.execute(
                update(_CHAINS)
                .where(_CHAINS.c.truck_id == statement.truck)
                .values(
                    forks=_CHAINS.c.forks + 1, chain_broken_at=func.coalesce(_CHAINS.c.chain_broken_at, now)
                )
            )
            table, pending = tlog_event(
                FORK_KIND,
                {
                    "truck": statement.truck,
                    "sequence": statement.sequence,
                    "refused_sha256": digest,
                    "held_sha256": fork.held_sha256,
                    "statement": _b64(statement.data),
                    "signature": _b64(signature),
                },
                now,
            )
            conn.execute(table.insert(), pending)
            detail = {
                "reason": fork.reason,
                "sequence": statement.sequence,
                "refused_sha256": digest,
                "held_sha256": fork.held_sha256,
            }
            conn.execute(
                insert(_AUDIT),
                audit.values(
                    actor,
                    ACTION,
                    at=now,
                    outcome="refused",
                    target=statement.truck,
                    code=StatementFork.code,
                    detail=detail,
                ),
            )
            session.commit()
        self._log.wake()
        error = StatementFork(f"{fork.reason}; recorded as a fork of truck {statement.truck}'s chain")
        error.audited = True
        raise error

    # -- receipts --------------------------------------------------------------------------------

    def _with_receipt(self, view: StatementView, *, wait: bool) -> StatementView:
        receipt = self._receipt(view)
        if receipt is None and wait:
            try:
                self._log.sync(self._wait)
            except (TimeoutError, LogNotReady, SQLAlchemyError, PkiError, TlogError, RuntimeError) as exc:
                # Stored and pending: the caller gets 202 and polls; the sequencer logs it later.
                log.warning("statement %s not sequenced yet: %s", view.sha256.hex(), exc)
            receipt = self._receipt(view)
        return replace(view, receipt=receipt)

    def _receipt(self, view: StatementView) -> ReceiptView | None:
        with Session(self._engine) as session:
            leaf = session.exec(
                select(TruckStatementRow.leaf_hash).where(col(TruckStatementRow.sha256) == view.sha256.hex())
            ).one()
            conn = session.connection()
            placed = known_entries(conn, [bytes(leaf)]).get(bytes(leaf))
            if placed is None:
                return None
            entry = bytes(
                conn.execute(select(ENTRIES.c.entry).where(ENTRIES.c.idx == placed.index)).scalar_one()
            )
            (receipt,) = receipts(conn, [item(entry, ENTRY_KIND, view.submitted_at)], [placed])
        return ReceiptView(
            index=receipt.index,
            leaf_hash=receipt.leaf_hash,
            proof=receipt.proof,
            checkpoint=receipt.checkpoint,
            entry=entry,
            log_key=str(self._log.verifier_key()),
        )

    # -- reads -----------------------------------------------------------------------------------

    def _stored(self, sha256_hex: str) -> StatementView | None:
        with Session(self._engine) as session:
            row = session.get(TruckStatementRow, sha256_hex)
        return _view(row, None) if row is not None else None

    def get(self, truck_id: str, sequence: int) -> StatementView:
        with Session(self._engine) as session:
            row = session.exec(
                select(TruckStatementRow).where(
                    col(TruckStatementRow.truck_id) == truck_id, col(TruckStatementRow.sequence) == sequence
                )
            ).first()
            if row is None and session.get(Truck, truck_id) is None:
                raise UnknownTruck(f"no truck {truck_id[:64]!r}")
        if row is None:
            raise UnknownStatement(f"truck {truck_id} has no statement {sequence}")
        return self._with_receipt(_view(row, None), wait=False)

    def at_index(self, index: int) -> StatementView:
        """The statement logged at `index` (statement bytes, signature, certificate chain, receipt)."""
        with Session(self._engine) as session:
            leaf = (
                session.connection()
                .execute(select(ENTRIES.c.leaf_hash).where(ENTRIES.c.idx == index))
                .scalar()
            )
            row = None
            if leaf is not None:
                row = session.exec(
                    select(TruckStatementRow).where(col(TruckStatementRow.leaf_hash) == bytes(leaf))
                ).first()
        if row is None:
            raise UnknownStatement(f"the log entry at {index} is not a truck statement")
        return self._with_receipt(_view(row, None), wait=False)

    def chain(self, truck_id: str) -> ChainView:
        with Session(self._engine) as session:
            if session.get(Truck, truck_id) is None:
                raise UnknownTruck(f"no truck {truck_id[:64]!r}")
            head = session.get(TruckStatementChain, truck_id)
            forks = session.exec(
                select(TruckStatementFork)
                .where(col(TruckStatementFork.truck_id) == truck_id)
                .order_by(col(TruckStatementFork.id))
            ).all()
        return ChainView(
            truck=truck_id,
            sequence=head.sequence if head else 0,
            head_sha256=head.head_sha256 if head else "",
            updated_at=head.updated_at if head else None,
            chain_broken_at=head.chain_broken_at if head else None,
            forks=tuple(
                ForkView(f.sequence, f.refused_sha256, f.held_sha256, f.previous, f.detected_at)
                for f in forks
            ),
        )


def _leaf_of(chain_pem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificates(chain_pem.encode())[0]


def _verify_signature(leaf: x509.Certificate, data: bytes, signature: bytes) -> None:
    key = leaf.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise StatementCertificateInvalid("the certificate's key is not an EC key")
    try:
        key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError) as exc:
        raise StatementSignatureInvalid(
            "the signature is not ECDSA P-256/SHA-256 over the statement's bytes by the certificate's key"
        ) from exc


def _view(row: TruckStatementRow, receipt: ReceiptView | None) -> StatementView:
    return StatementView(
        truck=row.truck_id,
        sequence=row.sequence,
        kind=row.kind,
        sha256=bytes.fromhex(row.sha256),
        statement=bytes(row.statement),
        signature=bytes(row.signature),
        certificate_chain_pem=row.certificate_chain_pem,
        certificate_serial=row.certificate_serial,
        certificate_status=row.certificate_status,
        submitted_at=row.submitted_at,
        receipt=receipt,
    )


def _repeated(view: StatementView) -> StatementView:
    return replace(view, repeated=True)
