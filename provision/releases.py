"""Golden releases as the operator manages them: release-signing keys, signed release manifests, revocation.

A release is stored only after its manifest verified with the registered key it names; its id is the
SHA-256 of the manifest as registered, so the evidence of what was approved is kept byte for byte.
Revoking a release (or the key that signed it) takes effect at the next appraisal of every truck.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import Connection, Engine, bindparam, update
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from attest.appraise import GoldenRelease
from attest.release import ReleaseManifest, verify_release_manifest
from pki.jws import thumbprint
from provision import audit
from provision.audit import Actor
from provision.errors import (
    InvalidReleaseKey,
    ReleaseExists,
    ReleaseKeyRevoked,
    UnknownRelease,
    UnknownReleaseKey,
)
from provision.idempotency import Pending, commit_with
from provision.tables import Release, ReleaseKey

# Every release of a model with what decides its appraisal: its PCR values, and whether it is revoked, or
# its key is (both read live on every call).
_GOLDEN = (
    sa_select(
        col(Release.id),
        col(Release.version),
        col(Release.bank),
        col(Release.pcrs),
        col(Release.status),
        col(ReleaseKey.revoked_at),
    )
    .select_from(Release)
    .outerjoin(ReleaseKey, col(ReleaseKey.id) == col(Release.key_id))
    .where(col(Release.model) == bindparam("model"))
)


@functools.lru_cache(maxsize=256)
def _golden_pcrs(pcrs: str) -> Mapping[int, bytes]:
    """A release's stored PCR values (JSON {"0": hex}) as a read-only mapping: a pure function of the
    stored text, which a release never changes (its status and its key's revocation are read live)."""
    return MappingProxyType({int(k): bytes.fromhex(v) for k, v in json.loads(pcrs).items()})


def golden_releases(conn: Connection, model: str) -> list[GoldenRelease]:
    """Every release of the model, revoked ones included (a match with one is contraindicated): revoked
    when withdrawn or when its signing key is revoked."""
    return [
        GoldenRelease(
            id=r.id,
            version=r.version,
            bank=r.bank,
            pcrs=_golden_pcrs(r.pcrs),
            revoked=r.status != "active" or r.revoked_at is not None,
        )
        for r in conn.execute(_GOLDEN, {"model": model})
    ]


@dataclass(frozen=True)
class ReleaseKeyView:
    id: str
    name: str
    public_key_pem: str
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True)
class ReleaseView:
    id: str
    model: str
    version: str
    key_id: str
    bank: str
    pcrs: dict[str, str]
    status: str
    created_at: datetime
    revoked_at: datetime | None
    revocation_reason: str | None


def _key_view(row: ReleaseKey) -> ReleaseKeyView:
    return ReleaseKeyView(
        id=row.id,
        name=row.name,
        public_key_pem=row.public_key_pem,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )


def _release_view(row: Release) -> ReleaseView:
    return ReleaseView(
        id=row.id,
        model=row.model,
        version=row.version,
        key_id=row.key_id,
        bank=row.bank,
        pcrs=json.loads(row.pcrs),
        status=row.status,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
        revocation_reason=row.revocation_reason,
    )


def _public_key(pem: str) -> ec.EllipticCurvePublicKey:
    try:
        key = serialization.load_pem_public_key(pem.encode())
    except ValueError as exc:
        raise InvalidReleaseKey(f"not a PEM public key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name not in {"secp256r1", "secp384r1"}:
        raise InvalidReleaseKey("release keys must be EC P-256 or P-384 public keys")
    return key


class Releases:
    def __init__(self, engine: Engine, *, clock: Callable[[], datetime]) -> None:
        self._engine = engine
        self._clock = clock

    # -- keys ------------------------------------------------------------------------------------

    def register_key(
        self,
        actor: Actor,
        name: str,
        public_key_pem: str,
        *,
        idempotency: Pending[ReleaseKeyView] | None = None,
    ) -> ReleaseKeyView:
        key = _public_key(public_key_pem)
        now = self._clock()
        pem = key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()
        row = ReleaseKey(
            id=thumbprint(key), name=name, public_key_pem=pem, registered_by=actor.name[:128], created_at=now
        )
        with Session(self._engine) as session:
            existing = session.get(ReleaseKey, row.id)
            if existing is not None:
                return _key_view(existing)  # the same key again: nothing changes
            session.add(row)
            audit.record(
                session,
                audit.values(actor, "release-key.register", at=now, target=row.id, detail={"name": name}),
            )
            view = _key_view(row)
            commit_with(session, view, idempotency, now)
        return view

    def release_keys(self) -> list[ReleaseKeyView]:
        with Session(self._engine) as session:
            return [
                _key_view(r)
                for r in session.exec(select(ReleaseKey).order_by(col(ReleaseKey.created_at))).all()
            ]

    # -- releases --------------------------------------------------------------------------------

    def register(
        self, actor: Actor, key_id: str, manifest: str, *, idempotency: Pending[ReleaseView] | None = None
    ) -> ReleaseView:
        now = self._clock()
        with Session(self._engine) as session:
            key_row = session.get(ReleaseKey, key_id)
            if key_row is None:
                raise UnknownReleaseKey(f"no release key {key_id[:64]!r}")
            if key_row.revoked_at is not None:
                raise ReleaseKeyRevoked(f"release key {key_id} is revoked")
            verified: ReleaseManifest = verify_release_manifest(manifest, _public_key(key_row.public_key_pem))
            release_id = hashlib.sha256(manifest.encode()).hexdigest()
            clash = session.exec(
                select(Release.id).where(
                    col(Release.model) == verified.model, col(Release.version) == verified.version
                )
            ).first()
            if clash is not None:
                raise ReleaseExists(f"{verified.model} {verified.version} is already registered ({clash})")
            row = Release(
                id=release_id,
                model=verified.model,
                version=verified.version,
                key_id=key_id,
                manifest=manifest,
                bank=verified.bank,
                pcrs=json.dumps({str(i): v.hex() for i, v in sorted(verified.pcrs.items())}),
                status="active",
                registered_by=actor.name[:128],
                created_at=now,
            )
            session.add(row)
            detail = {"model": verified.model, "version": verified.version, "key": key_id}
            audit.record(
                session, audit.values(actor, "release.register", at=now, target=release_id, detail=detail)
            )
            view = _release_view(row)
            commit_with(session, view, idempotency, now)
        return view

    def revoke(
        self, actor: Actor, release_id: str, reason: str, *, idempotency: Pending[ReleaseView] | None = None
    ) -> ReleaseView:
        now = self._clock()
        with Session(self._engine) as session:
            result = session.connection().execute(
                update(Release)
                .where(col(Release.id) == release_id, col(Release.status) == "active")
                .values(status="revoked", revoked_at=now, revocation_reason=reason[:512])
            )
            row = session.get(Release, release_id)
            if row is None:
                raise UnknownRelease(f"no release {release_id[:64]!r}")
            if result.rowcount == 1:
                audit.record(
                    session,
                    audit.values(
                        actor, "release.revoke", at=now, target=release_id, detail={"reason": reason}
                    ),
                )
            session.refresh(row)
            view = _release_view(row)
            commit_with(session, view, idempotency, now)
        return view

    def get(self, release_id: str) -> ReleaseView:
        with Session(self._engine) as session:
            row = session.get(Release, release_id)
        if row is None:
            raise UnknownRelease(f"no release {release_id[:64]!r}")
        return _release_view(row)

    def releases(self, model: str | None = None) -> list[ReleaseView]:
        query = select(Release).order_by(col(Release.created_at))
        if model is not None:
            query = query.where(col(Release.model) == model)
        with Session(self._engine) as session:
            return [_release_view(r) for r in session.exec(query).all()]

    def golden(self, model: str) -> list[GoldenRelease]:
        """Every release of the model, revoked ones included (a match with one is contraindicated)."""
        with self._engine.connect() as conn:
            return golden_releases(conn, model)
