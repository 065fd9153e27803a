"""The CA hierarchy: root and issuing CAs, created on first start, rotated on demand, cached in memory.

Replicas share it through the database: creation and rotation take a PostgreSQL advisory lock, and each
process reloads its cache at most a few seconds after another one rotated.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import Engine, text
from sqlmodel import Session, select

from pki import errors
from pki.ca import Issuer, build_issuing_ca, build_root_ca, subject_key_identifier_of
from pki.signer import KeyBackend
from provision import audit
from provision.audit import Actor
from provision.config import AuthorityConfig
from provision.idempotency import Pending, commit_with
from provision.tables import CertificateAuthority

_CA_LOCK = 0x7765_6963  # PostgreSQL advisory lock id for CA creation and rotation
_CACHE_SECONDS = 5.0  # how stale another replica's rotation may look to this one


@dataclass(frozen=True)
class CaView:
    id: str
    kind: str
    status: str
    not_before: datetime
    not_after: datetime
    certificate: x509.Certificate


def ca_id_of(certificate: x509.Certificate) -> str:
    return subject_key_identifier_of(certificate).digest.hex()


class CaHierarchy:
    def __init__(
        self,
        engine: Engine,
        keys: KeyBackend,
        config: AuthorityConfig,
        *,
        clock: Callable[[], datetime],
        serials: Callable[[], int],
    ) -> None:
        self._engine = engine
        self._keys = keys
        self._config = config
        self._clock = clock
        self._serials = serials
        self._lock = threading.Lock()
        self._loaded_at = 0.0
        self._rows: dict[str, CertificateAuthority] = {}
        self._issuers: dict[str, Issuer] = {}
        self._active_id = ""

    def bootstrap(self, actor: Actor) -> None:
        """Create the root and first issuing CA on an empty database; otherwise just load them."""
        with Session(self._engine) as session:
            self._lock_changes(session)
            if session.exec(select(CertificateAuthority).limit(1)).first() is None:
                now = self._clock()
                root_signer = self._keys.create(self._config.ca_key_algorithm, "root-ca")
                root_cert = build_root_ca(
                    root_signer,
                    common_name=f"weighstation root CA {self._config.trust_domain}",
                    now=now,
                    ttl=self._config.root_ca_ttl,
                    serial=self._serials(),
                )
                root = Issuer(certificate=root_cert, signer=root_signer, chain=())
                session.add(_row(root_cert, "root", None, root_signer.key_ref, now))
                issuing = self._new_issuing(session, root, now)
                detail: dict[str, object] = {"root": ca_id_of(root_cert), "issuing": issuing.id}
                audit.record(
                    session, audit.values(actor, "ca.bootstrap", at=now, target=issuing.id, detail=detail)
                )
            session.commit()
        self._reload()

    def rotate(self, actor: Actor, *, idempotency: Pending[CaView] | None = None) -> CaView:
        """A new issuing CA under the same root; the old one is retired but stays trusted until expiry."""
        with Session(self._engine) as session:
            self._lock_changes(session)
            now = self._clock()
            rows = list(session.exec(select(CertificateAuthority)).all())
            root_row = next(r for r in rows if r.kind == "root" and r.status == "active")
            root_cert = x509.load_der_x509_certificate(root_row.certificate_der)
            root = Issuer(certificate=root_cert, signer=self._keys.load(root_row.key_ref), chain=())
            for row in rows:
                if row.kind == "issuing" and row.status == "active":
                    row.status = "retired"
                    session.add(row)
            new = self._new_issuing(session, root, now)
            audit.record(session, audit.values(actor, "ca.rotate", at=now, target=new.id))
            view = _view(new)
            commit_with(session, view, idempotency, now)
        self._reload()
        return view

    def authorities(self) -> list[CaView]:
        self._refresh()
        return [_view(row) for row in self._rows.values()]

    def bundle_pem(self) -> bytes:
        """Root plus every issuing CA still valid: old and new are both served during a rotation."""
        now = self._clock()
        return b"".join(
            view.certificate.public_bytes(serialization.Encoding.PEM)
            for view in self.authorities()
            if view.not_after > now
        )

    def active(self) -> tuple[str, Issuer]:
        """The issuing CA new certificates come from."""
        self._refresh()
        if not self._active_id:
            raise errors.SignerUnavailable("no active issuing CA: the authority has not been bootstrapped")
        return self._active_id, self.issuer(self._active_id)

    def issuing_ids(self) -> list[str]:
        """Every issuing CA, active or retired: each still answers for the certificates it signed."""
        self._refresh()
        return [ca_id for ca_id, row in self._rows.items() if row.kind == "issuing"]

    def issuer(self, ca_id: str) -> Issuer:
        cached = self._issuers.get(ca_id)
        if cached is not None:
            return cached
        row = self._rows.get(ca_id)
        if row is None:
            # Created by another replica since our last reload (a rotation, the evidence CA): read again.
            self._reload()
            row = self._rows.get(ca_id)
        if row is None:
            raise errors.SignerUnavailable(f"no certificate authority {ca_id} in this authority")
        chain: tuple[x509.Certificate, ...] = ()
        if row.parent_id is not None:
            chain = (x509.load_der_x509_certificate(self._rows[row.parent_id].certificate_der),)
        issuer = Issuer(
            certificate=x509.load_der_x509_certificate(row.certificate_der),
            signer=self._keys.load(row.key_ref),
            chain=chain,
        )
        with self._lock:
            self._issuers[ca_id] = issuer
        return issuer

    def _new_issuing(self, session: Session, root: Issuer, now: datetime) -> CertificateAuthority:
        signer = self._keys.create(self._config.ca_key_algorithm, "issuing-ca")
        cert = build_issuing_ca(
            root,
            signer.public_key(),
            common_name=f"weighstation issuing CA {self._config.trust_domain} {now:%Y-%m-%d %H:%M:%S}",
            trust_domain=self._config.trust_domain,
            now=now,
            ttl=self._config.issuing_ca_ttl,
            serial=self._serials(),
        )
        row = _row(cert, "issuing", ca_id_of(root.certificate), signer.key_ref, now)
        session.add(row)
        return row

    def _lock_changes(self, session: Session) -> None:
        if self._engine.dialect.name == "postgresql":
            session.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _CA_LOCK})

    def _reload(self) -> None:
        with Session(self._engine) as session:
            rows = list(session.exec(select(CertificateAuthority)).all())
        with self._lock:
            self._rows = {row.id: row for row in rows}
            active = [r for r in rows if r.kind == "issuing" and r.status == "active"]
            self._active_id = max(active, key=lambda r: r.created_at).id if active else ""
            self._issuers = {cid: iss for cid, iss in self._issuers.items() if cid in self._rows}
            self._loaded_at = time.monotonic()

    def _refresh(self) -> None:
        if time.monotonic() - self._loaded_at > _CACHE_SECONDS:
            self._reload()


def _row(
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


def _view(row: CertificateAuthority) -> CaView:
    return CaView(
        id=row.id,
        kind=row.kind,
        status=row.status,
        not_before=row.not_before,
        not_after=row.not_after,
        certificate=x509.load_der_x509_certificate(row.certificate_der),
    )
