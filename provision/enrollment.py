"""Enrollment: a truck proves with its TPM that its keys live in a genuine TPM, and gets its identity.

start:    token → EK chain to a pinned manufacturer root, EK public = certificate key, AK checked and
          named here → MakeCredential (32-byte secret sealed to the EK for that name), a Certify nonce
          and a first-quote nonce (a stored attestation nonce, purpose "enroll", the policy's selection).
activate: the secret the TPM recovered (constant-time compare against its stored hash), the identity
          key's Certify by that AK over the nonce, the first quote by that AK over the quote nonce
          (verify_quote, event log replayed, appraised against the model's golden releases: it must
          match an active one) → truck certificate, the truck ↔ EK ↔ AK ↔ identity-key binding, and the
          first quote's result as the truck's first attestation, in one transaction.

A model without any release refuses enrollment (no-golden-release) unless the operator allows it
(WEIGHSTATION_ENROLLMENT_REQUIRE_RELEASE=false): the first quote must still verify and its log replay,
and the truck is enrolled with a "warning" attestation naming no release.

Each challenge is answered once: it is claimed (pending → activating) in its own transaction before
anything is checked, and ends activated or failed. Every refusal is audited with its code and truck.
The binding never changes silently: a truck enrolled with one EK re-enrolls with another only after an
operator-approved hardware swap, which that enrollment consumes; one EK serves at most one truck.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import Engine, update
from sqlmodel import Session, col, select

from attest.ak import VerifiedAk, check_attestation_key
from attest.appraise import Appraisal
from attest.certify import verify_certify
from attest.credential import make_credential, secrets_match
from attest.ek import check_ek_matches, verify_ek_certificate
from attest.errors import AttestError, MalformedEkCertificate
from attest.public import parse_tpmt_public
from attest.quote import VerifiedQuote
from pki.errors import PkiError
from pki.profiles import parse_csr
from provision import audit
from provision.attestation import Attestation, Evidence
from provision.audit import Actor
from provision.authority import Authority, CertificateView
from provision.errors import (
    EkBoundToOtherTruck,
    EkNotRegisteredForTruck,
    EnrollmentChallengeExpired,
    EnrollmentChallengeUsed,
    EnrollmentNotConfigured,
    EnrollmentTokenWrongTruck,
    FirmwareNotApproved,
    FirstQuoteRequired,
    HardwareSwapNotApproved,
    NoGoldenRelease,
    ProvisionError,
    UnknownEnrollment,
    UnknownTruck,
)
from provision.fleets import spiffe_id
from provision.idempotency import Pending, commit_with
from provision.tables import (
    AttestationNonce,
    CrlRecord,
    EnrollmentChallenge,
    HardwareSwap,
    IssuedCertificate,
    Truck,
    TruckEnrollment,
)
from provision.tokens import EnrollmentTokens

Refusal = AttestError | ProvisionError | PkiError
_SECRET_BYTES = 32  # 256 bits; fits every EK nameAlg digest we accept (SHA-256, SHA-384)
_NONCE_BYTES = 32


@dataclass(frozen=True)
class ManufacturerTrust:
    """The TPM-manufacturer roots the operator pinned, and intermediates the authority may use."""

    roots: tuple[x509.Certificate, ...]
    intermediates: tuple[x509.Certificate, ...] = ()


@dataclass(frozen=True)
class StartRequest:
    truck: str | None
    ek_certificate: bytes
    ek_intermediates: Sequence[bytes]
    ek_public: bytes
    ak_public: bytes


@dataclass(frozen=True)
class Challenge:
    enrollment_id: str
    truck: str
    credential_blob: bytes
    encrypted_secret: bytes
    certify_nonce: bytes
    expires_at: datetime
    # What the first quote must carry and cover; None when the authority asks for none.
    quote_nonce: bytes | None = None
    quote_bank: str | None = None
    quote_pcrs: tuple[int, ...] = ()


@dataclass(frozen=True)
class ActivateRequest:
    secret: bytes
    identity_public: bytes
    certify_info: bytes
    certify_signature: bytes
    csr: bytes
    first_quote: Evidence | None = None  # by the AK being enrolled, over the challenge's quote nonce


@dataclass(frozen=True)
class Enrolled:
    truck: str
    fleet: str
    spiffe_id: str
    certificate: CertificateView


def ek_fingerprint(certificate: x509.Certificate) -> str:
    """SHA-256 of the EK's DER SubjectPublicKeyInfo: stable across re-issued EK certificates."""
    spki = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).hexdigest()


class Enrollment:
    def __init__(
        self,
        engine: Engine,
        authority: Authority,
        tokens: EnrollmentTokens,
        trust: ManufacturerTrust,
        *,
        challenge_ttl: timedelta,
        clock: Callable[[], datetime],
        attestation: Attestation | None = None,
        require_release: bool = True,
    ) -> None:
        """`attestation`: ask for and appraise a first quote at every enrollment (None: the ceremony
        without it, for deployments and tests that do not boot their trucks yet)."""
        self._engine = engine
        self._authority = authority
        self._tokens = tokens
        self._trust = trust
        self._challenge_ttl = challenge_ttl
        self._clock = clock
        self._attestation = attestation
        self._require_release = require_release

    # -- start -----------------------------------------------------------------------------------

    def start(
        self,
        actor: Actor,
        token: str,
        request: StartRequest,
        *,
        idempotency: Pending[Challenge] | None = None,
    ) -> Challenge:
        with self._refusals(actor, "enrollment.start", request.truck):
            claims = self._tokens.claims(token)
        with self._refusals(actor, "enrollment.start", claims.truck):
            if request.truck is not None and request.truck != claims.truck:
                raise EnrollmentTokenWrongTruck(
                    f"the token was minted for another truck than {request.truck[:64]!r}"
                )
            if not self._trust.roots:
                raise EnrollmentNotConfigured("no TPM-manufacturer roots are configured on this authority")
            verified_ek = verify_ek_certificate(
                request.ek_certificate,
                intermediates=[*_certificates(request.ek_intermediates), *self._trust.intermediates],
                roots=self._trust.roots,
                now=self._clock(),
            )
            ek_public = parse_tpmt_public(request.ek_public)
            check_ek_matches(verified_ek, ek_public)
            ak = check_attestation_key(parse_tpmt_public(request.ak_public))
            ek_sha256 = ek_fingerprint(verified_ek.certificate)

            secret, nonce = os.urandom(_SECRET_BYTES), os.urandom(_NONCE_BYTES)
            made = make_credential(ek_public, ak.name, secret)
            now = self._clock()
            enrollment_id = secrets.token_urlsafe(24)
            expires_at = now + self._challenge_ttl
            with Session(self._engine) as session:
                truck = _lock_truck(session, claims.truck)
                self._check_hardware(session, truck, ek_sha256)
                self._tokens.consume(session, claims, now)
                challenge = Challenge(
                    enrollment_id=enrollment_id,
                    truck=claims.truck,
                    credential_blob=made.credential_blob,
                    encrypted_secret=made.encrypted_secret,
                    certify_nonce=nonce,
                    expires_at=expires_at,
                )
                if self._attestation is not None:
                    quote_nonce = self._attestation.enrollment_nonce(
                        session, truck.id, enrollment_id, expires_at
                    )
                    challenge = replace(
                        challenge,
                        quote_nonce=quote_nonce.extra_data,
                        quote_bank=quote_nonce.bank,
                        quote_pcrs=quote_nonce.pcrs,
                    )
                session.add(
                    EnrollmentChallenge(
                        id=challenge.enrollment_id,
                        truck_id=truck.id,
                        token_jti=claims.jti,
                        ek_sha256=ek_sha256,
                        ek_certificate_der=request.ek_certificate,
                        ak_public=request.ak_public,
                        secret_sha256=hashlib.sha256(secret).digest(),
                        certify_nonce=nonce,
                        status="pending",
                        created_at=now,
                        expires_at=challenge.expires_at,
                    )
                )
                detail = {
                    "enrollment": challenge.enrollment_id,
                    "ek_sha256": ek_sha256,
                    "ak_name": ak.name.hex(),
                }
                audit.record(
                    session, audit.values(actor, "enrollment.start", at=now, target=truck.id, detail=detail)
                )
                commit_with(session, challenge, idempotency, now)
        return challenge

    # -- activate --------------------------------------------------------------------------------

    def activate(
        self,
        actor: Actor,
        enrollment_id: str,
        request: ActivateRequest,
        *,
        idempotency: Pending[Enrolled] | None = None,
    ) -> Enrolled:
        action = "enrollment.activate"
        with self._refusals(actor, action, None):
            row = self._claim(enrollment_id)
        try:
            with self._refusals(actor, action, row.truck_id):
                return self._activate(actor, row, request, idempotency)
        except BaseException as exc:
            self._fail(row.id, getattr(exc, "code", "error"))
            raise

    def _claim(self, enrollment_id: str) -> EnrollmentChallenge:
        """Move the challenge from pending to activating; exactly one caller ever gets it."""
        now = self._clock()
        with Session(self._engine) as session:
            row = session.get(EnrollmentChallenge, enrollment_id[:64])
            if row is None:
                raise UnknownEnrollment(f"no enrollment {enrollment_id[:64]!r}")
            result = session.connection().execute(
                update(EnrollmentChallenge)
                .where(col(EnrollmentChallenge.id) == row.id, col(EnrollmentChallenge.status) == "pending")
                .values(status="activating")
            )
            if result.rowcount != 1:
                raise EnrollmentChallengeUsed(f"enrollment {row.id} was already answered; start again")
            # Its first-quote nonce (if any) is spent with it, whatever the activation's outcome.
            session.execute(
                update(AttestationNonce)
                .where(col(AttestationNonce.id) == row.id, col(AttestationNonce.consumed_at).is_(None))
                .values(consumed_at=now)
            )
            expired = row.expires_at <= now
            if expired:
                session.execute(
                    update(EnrollmentChallenge)
                    .where(col(EnrollmentChallenge.id) == row.id)
                    .values(status="failed", failure_code=EnrollmentChallengeExpired.code, completed_at=now)
                )
            session.commit()
            session.refresh(row)
        if expired:
            raise EnrollmentChallengeExpired(f"enrollment {row.id} expired at {row.expires_at.isoformat()}")
        return row

    def _activate(
        self,
        actor: Actor,
        row: EnrollmentChallenge,
        request: ActivateRequest,
        idempotency: Pending[Enrolled] | None,
    ) -> Enrolled:
        # 1. Only the TPM holding the EK, with the AK of the computed name loaded, recovers the secret.
        secrets_match(row.secret_sha256, hashlib.sha256(request.secret).digest())
        # 2. The identity key: certified by that AK over our nonce, TPM-bound, and the CSR's key.
        ak: VerifiedAk = check_attestation_key(parse_tpmt_public(row.ak_public))
        identity = parse_tpmt_public(request.identity_public)
        csr = parse_csr(request.csr)
        verify_certify(
            request.certify_info,
            request.certify_signature,
            ak=ak,
            qualifying_data=row.certify_nonce,
            identity=identity,
            csr_public_key=csr.public_key(),
        )
        # 3. A first quote must pass: by this AK, over the quote nonce, PCRs of an approved release.
        first = self._first_quote(row, ak, request.first_quote)
        # 4. The certificate names the registered truck, whatever the CSR asks for.
        with Session(self._engine) as session:
            truck = _lock_truck(session, row.truck_id)
            swap = self._check_hardware(session, truck, row.ek_sha256)
            uri = spiffe_id(self._authority.config.trust_domain, truck.fleet_id, truck.id)
            prepared = self._authority.prepare(actor, profile="truck", csr=request.csr, uri_sans=[uri])
            now = self._clock()
            retired: list[tuple[str, str]] = []
            if swap is not None:
                swap.consumed_at = now
                session.add(swap)
                # The old TPM left the truck with its keys: its certificates must not outlive the swap.
                retired = _revoke_identity(session, actor, uri, now, swap.id)
            for table, values in prepared.rows:
                session.connection().execute(table.insert(), values)
            truck.state = "enrolled"
            truck.ek_sha256 = row.ek_sha256
            truck.ak_public, truck.ak_name = row.ak_public, ak.name.hex()
            truck.identity_name = identity.name().hex()
            truck.certificate_serial = prepared.view.serial
            truck.enrolled_at = now
            session.add(truck)
            session.add(
                TruckEnrollment(
                    truck_id=truck.id,
                    challenge_id=row.id,
                    ek_sha256=row.ek_sha256,
                    ek_certificate_der=row.ek_certificate_der,
                    ak_public=row.ak_public,
                    ak_name=ak.name.hex(),
                    identity_public=request.identity_public,
                    identity_name=identity.name().hex(),
                    certificate_serial=prepared.view.serial,
                    hardware_swap_id=swap.id if swap is not None else None,
                    enrolled_at=now,
                )
            )
            session.execute(
                update(EnrollmentChallenge)
                .where(col(EnrollmentChallenge.id) == row.id)
                .values(status="activated", completed_at=now)
            )
            detail: dict[str, object] = {
                "enrollment": row.id,
                "serial": prepared.view.serial,
                "ek_sha256": row.ek_sha256,
                "ak_name": ak.name.hex(),
                "identity_name": identity.name().hex(),
            }
            if swap is not None:
                detail["hardware_swap"] = swap.id
                detail["revoked"] = [serial for serial, _ in retired]
            if first is not None:
                assert self._attestation is not None
                nonce, quote, appraisal = first
                result = self._attestation.record(
                    session, actor=actor, truck=truck, nonce=nonce, quote=quote, appraisal=appraisal
                )
                detail["first_attestation"] = {"result": result.id, "status": result.status}
            audit.record(
                session, audit.values(actor, "enrollment.activate", at=now, target=truck.id, detail=detail)
            )
            enrolled = Enrolled(
                truck=truck.id, fleet=truck.fleet_id, spiffe_id=uri, certificate=prepared.view
            )
            commit_with(session, enrolled, idempotency, now)
        if first is not None:
            assert self._attestation is not None
            self._attestation.log_wake()
        for issuer_id in {issuer for _, issuer in retired}:
            # Regenerated at once, so relying parties see the old hardware's certificates revoked.
            self._authority.status.crl(issuer_id)
        return enrolled

    def _first_quote(
        self, row: EnrollmentChallenge, ak: VerifiedAk, evidence: Evidence | None
    ) -> tuple[AttestationNonce, VerifiedQuote, Appraisal] | None:
        """Verify and appraise the first quote; None when this authority asks for none."""
        if self._attestation is None:
            return None
        if evidence is None:
            raise FirstQuoteRequired(
                "activation needs the first quote: quote, quote_signature, pcr_values and event_log over "
                "the challenge's quote_nonce"
            )
        with Session(self._engine) as session:
            nonce = session.get(AttestationNonce, row.id)
            truck = session.get(Truck, row.truck_id)
            session.expunge_all()
        if nonce is None or truck is None:
            raise FirstQuoteRequired(f"enrollment {row.id} was started without a quote nonce; start again")
        golden = self._attestation.golden(truck.model)
        if not golden and self._require_release:
            raise NoGoldenRelease(
                f"model {truck.model!r} has no registered release to appraise the first quote against"
            )
        # The first quote of this AK: no earlier clock to order it against (a new TPM may be behind).
        quote, appraisal = self._attestation.verify_evidence(
            ak, nonce, evidence, golden=golden, previous=None
        )
        if appraisal.release is None and golden:
            raise FirmwareNotApproved(
                f"the first quote's PCRs match no active release of model {truck.model!r}: "
                + "; ".join(appraisal.reasons)
            )
        return nonce, quote, appraisal

    # -- shared ----------------------------------------------------------------------------------

    def _check_hardware(self, session: Session, truck: Truck, ek_sha256: str) -> HardwareSwap | None:
        """Refuse an EK that is pinned elsewhere, bound to another truck, or a swap nobody approved.
        Returns the approval this enrollment will consume, if it needs one."""
        if truck.expected_ek_sha256 is not None and truck.expected_ek_sha256 != ek_sha256:
            raise EkNotRegisteredForTruck(f"truck {truck.id} was registered with another EK")
        owner = session.exec(select(Truck.id).where(col(Truck.ek_sha256) == ek_sha256)).first()
        if owner is not None and owner != truck.id:
            raise EkBoundToOtherTruck(f"this TPM is already bound to another truck ({owner})")
        if truck.ek_sha256 is None or truck.ek_sha256 == ek_sha256:
            return None
        swap = session.exec(
            select(HardwareSwap)
            .where(col(HardwareSwap.truck_id) == truck.id, col(HardwareSwap.consumed_at).is_(None))
            .order_by(col(HardwareSwap.id))
        ).first()
        if swap is None:
            raise HardwareSwapNotApproved(
                f"truck {truck.id} is enrolled with another TPM; the operator must approve a hardware swap"
            )
        return swap

    def _fail(self, enrollment_id: str, code: str) -> None:
        with Session(self._engine) as session:
            session.execute(
                update(EnrollmentChallenge)
                .where(
                    col(EnrollmentChallenge.id) == enrollment_id,
                    col(EnrollmentChallenge.status) == "activating",
                )
                .values(status="failed", failure_code=code[:64], completed_at=self._clock())
            )
            session.commit()

    def _refusals(self, actor: Actor, action: str, truck: str | None) -> AbstractContextManager[None]:
        return audit.refusals(self._engine, actor, action, target=truck, clock=self._clock)


def _revoke_identity(
    session: Session, actor: Actor, uri: str, now: datetime, swap: int | None
) -> list[tuple[str, str]]:
    """Revoke (superseded) every valid certificate naming this truck, in the caller's transaction;
    returns (serial, issuer id) of each."""
    rows = session.exec(
        select(IssuedCertificate).where(
            col(IssuedCertificate.subject) == uri, col(IssuedCertificate.status) == "valid"
        )
    ).all()
    for cert in rows:
        cert.status, cert.revoked_at, cert.revocation_reason = "revoked", now, "superseded"
        session.add(cert)
        session.execute(
            update(CrlRecord).where(col(CrlRecord.issuer_id) == cert.issuer_id).values(stale=True)
        )
        detail = {"reason": "superseded", "hardware_swap": swap}
        audit.record(
            session, audit.values(actor, "certificate.revoke", at=now, target=cert.serial, detail=detail)
        )
    return [(cert.serial, cert.issuer_id) for cert in rows]


def _lock_truck(session: Session, truck_id: str) -> Truck:
    """Take the truck's row (PostgreSQL) or the database (SQLite) for this transaction, so two
    enrollments of one truck, or two trucks presenting one EK, are decided one after the other."""
    session.execute(update(Truck).where(col(Truck.id) == truck_id).values(state=col(Truck.state)))
    truck = session.get(Truck, truck_id)
    if truck is None:
        raise UnknownTruck(f"no truck {truck_id[:64]!r}")
    return truck


def _certificates(ders: Sequence[bytes]) -> list[x509.Certificate]:
    try:
        return [x509.load_der_x509_certificate(der) for der in ders]
    except ValueError as exc:
        raise MalformedEkCertificate(f"an EK intermediate is not a DER X.509 certificate: {exc}") from None
