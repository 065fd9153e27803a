"""Sigstore interop: evidence-signing certificates with an SCT from our CT key, an RFC 3161 TSA, the
export of a signed artifact as a Sigstore bundle (v0.3, hashedrekord 0.0.2 entry in our log), and the
`ClientTrustConfig` a stock Sigstore client verifies it with, offline.

Keys and certificates, created once on first use:
- the evidence CA: a row of `certificate_authorities` (kind "evidence") under the active root, so the
  certificates it signs resolve their issuer like any other (see `pki.evidence_signing` for why it is not one
  of the name-constrained issuing CAs);
- the CT key and the TSA key (EC P-256, through the key backend) and the TSA certificate (issued by
  the evidence CA): their key references and the certificate are files under `<data dir>/sigstore/`
  (no table is reserved for them), created exclusively so two processes sharing the directory agree.

Export appends the hashedrekord body to our log when it is exported (idempotent: the log dedups by
leaf hash, so exporting again gives the first receipt), because only the exporter knows a relying
party wants the Sigstore view; the signed artifact itself was logged when it was submitted. The TSA
stamps the signature at export time: the certificate must be valid then (Rekor v2 bundles carry no
integrated time, so the timestamp is what dates the signature).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from sqlalchemy import Engine, text, update
from sqlmodel import Session, select

from pki.ca import Issuer
from pki.evidence_signing import build_evidence_ca, issue_evidence_certificate
from pki.profiles import ValidatedRequest
from pki.sct import CtLog, spki_sha256
from pki.serials import random_serial
from pki.signer import KeyAlgorithm, KeyBackend, Signer
from pki.tsa import TimeStampAuthority, build_tsa_certificate
from provision import audit
from provision.audit import Actor
from provision.authority import Authority, Built, serial_hex
from provision.errors import ProvisionError
from provision.hierarchy import ca_id_of
from provision.tables import CertificateAuthority, IssuedCertificate
from provision.tlog_store import TransparencyLog, event
from tlog.checkpoint import verify_checkpoint
from tlog.sigstore import (
    CertificateAuthority as TrustedAuthority,
)
from tlog.sigstore import (
    KeyedLog,
    LoggedEntry,
    bundle,
    hashedrekord_body,
    log_id,
    trust_config,
)

EVIDENCE_CA = "evidence"
PRECERTIFICATE = "certificate.precertificate"
HASHEDREKORD = "sigstore.hashedrekord"
MAX_ARTIFACT_BYTES = 1 << 20
_CA_LOCK = 0x7765_6963  # the CA hierarchy's advisory lock (provision.hierarchy): one evidence CA
_TSA_TTL = timedelta(days=365)


class EvidenceCertificateUnknown(ProvisionError):
    """The certificate is not an evidence-signing certificate this authority issued and stored."""

    code = "evidence-certificate-unknown"
    kind = "not_found"


class EvidenceCertificateInvalid(ProvisionError):
    """The certificate is ours but cannot sign evidence now: revoked, expired, or not the profile."""

    code = "evidence-certificate-invalid"


class EvidenceSignatureInvalid(ProvisionError):
    """The signature is not ECDSA P-256/SHA-256 over the artifact by the certificate's key."""

    code = "evidence-signature-invalid"


class ArtifactTooLarge(ProvisionError):
    code = "artifact-too-large"


def _read_or_create(path: Path, make: Callable[[], bytes]) -> bytes:
    """The file's bytes; if absent, `make()` is written, and a racing writer's bytes win. The file appears
    whole or not at all (written aside, then hard-linked into place), so a reader never sees it empty."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    data = make()
    fd, staged = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.link(staged, path)
    except FileExistsError:
        return path.read_bytes()
    finally:
        os.unlink(staged)
    return data


@dataclass(frozen=True)
class _Material:
    evidence_id: str
    evidence: Issuer
    root: x509.Certificate
    ct: CtLog
    tsa: TimeStampAuthority


class Sigstore:
    def __init__(
        self,
        engine: Engine,
        keys: KeyBackend,
        authority: Authority,
        log: TransparencyLog,
        directory: Path,
        *,
        clock: Callable[[], datetime],
    ) -> None:
        self._engine = engine
        self._keys = keys
        self._authority = authority
        self._log = log
        self._directory = directory
        self._clock = clock
        self._lock = threading.Lock()
        self._material: _Material | None = None
        self._actor = Actor("system")

    # -- set-up ----------------------------------------------------------------------------------

    def ensure(self, actor: Actor) -> None:
        """Route evidence-profile issuance here. The evidence CA, CT key and TSA are created on first
        use (an evidence certificate, an export or the trust config), not at start: a service that
        never speaks Sigstore keeps its CA hierarchy as it was."""
        self._actor = actor
        self._authority.evidence = self._build

    def _ready(self) -> _Material:
        with self._lock:
            if self._material is None:
                self._material = self._create(self._actor)
            return self._material

    def _create(self, actor: Actor) -> _Material:
        self._directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        evidence_id, evidence, root = self._evidence_ca(actor)
        # Idempotent; reloads this process's CA cache so certificates of the new CA resolve their issuer.
        self._authority.cas.bootstrap(actor)
        ct = CtLog(self._key("ct-key-ref", "ct-log"))
        tsa_signer = self._key("tsa-key-ref", "tsa")

        def make_tsa() -> bytes:
            certificate = build_tsa_certificate(
                evidence,
                tsa_signer,
                common_name=f"weighstation TSA {self._authority.config.trust_domain}",
                now=self._clock(),
                ttl=_TSA_TTL,
                serial=random_serial(),
            )
            return certificate.public_bytes(serialization.Encoding.PEM)

        tsa_cert = x509.load_pem_x509_certificate(_read_or_create(self._directory / "tsa.pem", make_tsa))
        return _Material(evidence_id, evidence, root, ct, TimeStampAuthority(tsa_signer, tsa_cert))

    def _key(self, name: str, label: str) -> Signer:
        def make() -> bytes:
            return self._keys.create(KeyAlgorithm.EC_P256, label).key_ref.encode()

        ref = _read_or_create(self._directory / name, make)
        return self._keys.load(ref.decode().strip())

    def _evidence_ca(self, actor: Actor) -> tuple[str, Issuer, x509.Certificate]:
        with Session(self._engine) as session:
            if self._engine.dialect.name == "postgresql":
                session.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _CA_LOCK})
            else:
                # SQLite: take the write lock before reading, so two processes cannot both create it.
                session.execute(update(CertificateAuthority).values(kind=CertificateAuthority.kind))
            rows = list(session.exec(select(CertificateAuthority)).all())
            root_row = next((r for r in rows if r.kind == "root" and r.status == "active"), None)
            if root_row is None:
                raise EvidenceCertificateInvalid("the authority has no root CA yet")
            root_cert = x509.load_der_x509_certificate(root_row.certificate_der)
            row = next((r for r in rows if r.kind == EVIDENCE_CA and r.status == "active"), None)
            if row is None:
                now = self._clock()
                root = Issuer(root_cert, self._keys.load(root_row.key_ref), ())
                config = self._authority.config
                signer = self._keys.create(config.ca_key_algorithm, "evidence-ca")
                cert = build_evidence_ca(
                    root,
                    signer.public_key(),
                    common_name=f"weighstation evidence CA {config.trust_domain}",
                    now=now,
                    ttl=config.issuing_ca_ttl,
                    serial=random_serial(),
                )
                row = CertificateAuthority(
                    id=ca_id_of(cert),
                    kind=EVIDENCE_CA,
                    status="active",
                    parent_id=root_row.id,
                    key_ref=signer.key_ref,
                    certificate_der=cert.public_bytes(serialization.Encoding.DER),
                    not_before=cert.not_valid_before_utc,
                    not_after=cert.not_valid_after_utc,
                    created_at=now,
                )
                session.add(row)
                audit.record(session, audit.values(actor, "ca.evidence.create", at=now, target=row.id))
                session.commit()
                session.refresh(row)
            evidence = Issuer(
                x509.load_der_x509_certificate(row.certificate_der),
                self._keys.load(row.key_ref),
                (root_cert,),
            )
            return row.id, evidence, root_cert

    # -- issuance (called by Authority._sign for the evidence profile) ---------------------------

    def _build(self, request: ValidatedRequest, now: datetime, serial: int) -> Built:
        material = self._ready()
        issued = issue_evidence_certificate(
            material.evidence,
            request,
            material.ct,
            now=now,
            serial=serial,
            urls=None,
            oidc_issuer=self._authority.config.public_url,
        )
        # The precertificate the SCT promises is logged in the certificate's own transaction.
        logged = event(
            PRECERTIFICATE,
            {
                "serial": serial_hex(serial),
                "issuer": material.evidence_id,
                "precertificate": issued.precertificate.public_bytes(serialization.Encoding.DER).hex(),
                "sct_log_id": issued.sct.log_id.hex(),
                "sct_timestamp_ms": issued.sct.timestamp_ms,
            },
            now,
        )
        return Built(material.evidence_id, material.evidence, issued.certificate, [logged])

    # -- export ----------------------------------------------------------------------------------

    def export(
        self, actor: Actor, *, artifact: bytes, signature: bytes, certificate: x509.Certificate
    ) -> dict[str, Any]:
        """The Sigstore bundle for `artifact` signed by `certificate`'s key; see the module docstring."""
        material = self._ready()
        if len(artifact) > MAX_ARTIFACT_BYTES:
            raise ArtifactTooLarge(f"artifacts are at most {MAX_ARTIFACT_BYTES} bytes")
        now = self._clock()
        self._check_certificate(material, certificate, now)
        public_key = certificate.public_key()
        try:
            if not isinstance(public_key, ec.EllipticCurvePublicKey):
                raise InvalidSignature
            public_key.verify(signature, artifact, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            raise EvidenceSignatureInvalid(
                "the signature is not ECDSA P-256/SHA-256 over the artifact by the certificate's key"
            ) from None
        digest = hashlib.sha256(artifact).digest()
        body = hashedrekord_body(digest, signature, certificate)
        receipt = self._log.append(body, HASHEDREKORD)
        key = self._log.verifier_key()
        # Fail closed: never hand out a proof that does not verify against the log's own key.
        checkpoint = verify_checkpoint(receipt.checkpoint, [key], origin=self._log.origin)
        checkpoint.verify_inclusion(receipt.leaf_hash, receipt.index, receipt.proof)
        entry = LoggedEntry(
            body=body,
            index=receipt.index,
            tree_size=checkpoint.size,
            root_hash=checkpoint.root_hash,
            proof=receipt.proof,
            checkpoint=receipt.checkpoint,
        )
        token = material.tsa.respond(hashlib.sha256(signature).digest(), at=now, serial=random_serial())
        with Session(self._engine) as session:
            detail = {"log_index": receipt.index, "artifact_sha256": digest.hex()}
            target = serial_hex(certificate.serial_number)
            audit.record(
                session, audit.values(actor, "sigstore.export", at=now, target=target, detail=detail)
            )
            session.commit()
        return bundle(
            certificate=certificate,
            digest=digest,
            signature=signature,
            entry=entry,
            log=key,
            timestamps=[token],
        )

    # -- for truck statements (provision.statement_sigstore) -------------------------------------

    def evidence_issuer_id(self) -> str:
        """The evidence CA's id: the issuer of every evidence-signing certificate issued here."""
        return self._ready().evidence_id

    def stamp(self, signature: bytes, at: datetime) -> bytes:
        """An RFC 3161 TimeStampResp (DER) from our TSA over SHA-256(signature), dated `at`."""
        material = self._ready()
        return material.tsa.respond(hashlib.sha256(signature).digest(), at=at, serial=random_serial())

    def _check_certificate(self, material: _Material, certificate: x509.Certificate, now: datetime) -> None:
        serial = serial_hex(certificate.serial_number)
        with Session(self._engine) as session:
            row = session.get(IssuedCertificate, serial)
        der = certificate.public_bytes(serialization.Encoding.DER)
        if row is None or row.certificate_der != der or row.issuer_id != material.evidence_id:
            raise EvidenceCertificateUnknown(
                f"certificate {serial} is not an evidence certificate issued here"
            )
        if row.status != "valid":
            raise EvidenceCertificateInvalid(f"certificate {serial} is revoked")
        if not row.not_before <= now <= row.not_after:
            raise EvidenceCertificateInvalid(
                f"certificate {serial} is not valid now ({now:%Y-%m-%dT%H:%M:%SZ})"
            )
        try:
            eku = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound:
            eku = x509.ExtendedKeyUsage([])
        if ExtendedKeyUsageOID.CODE_SIGNING not in eku:
            raise EvidenceCertificateInvalid(f"certificate {serial} is not for code signing")

    # -- trust -----------------------------------------------------------------------------------

    def trust_config(self) -> dict[str, Any]:
        """The ClientTrustConfig for bundles exported here: evidence CA + root, log, CT key, TSA."""
        material = self._ready()
        base = self._authority.config.public_url
        root = material.root
        since = root.not_valid_before_utc
        key = self._log.verifier_key()
        tlog_id = log_id(key)
        evidence = material.evidence.certificate
        tsa = material.tsa.certificate
        return trust_config(
            tlog=KeyedLog(f"{base}/v1/log", key.public_key, tlog_id, since, checkpoint_key_id=tlog_id),
            ctlog=KeyedLog(
                f"{base}/v1/sigstore/ct",
                material.ct.signer.public_key(),
                spki_sha256(material.ct.signer.public_key()),
                since,
            ),
            certificate_authorities=[
                TrustedAuthority(
                    f"{base}/v1/ca/authorities/{material.evidence_id}",
                    (evidence, root),
                    evidence.not_valid_before_utc,
                    evidence.not_valid_after_utc,
                )
            ],
            timestamp_authorities=[
                TrustedAuthority(
                    f"{base}/v1/sigstore",
                    (tsa, evidence, root),
                    tsa.not_valid_before_utc,
                    tsa.not_valid_after_utc,
                )
            ],
            service_url=base,
            operator=self._authority.config.trust_domain,
            since=since,
        )
