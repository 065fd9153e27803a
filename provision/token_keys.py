"""Signing keys for the tokens the authority issues (attestation results), held by the key backend
(file keys or Vault Transit) and published as a JWKS. The key id is the key's RFC 7638 thumbprint.

The first start creates the key under a database lock (an advisory lock on PostgreSQL; SQLite allows
one writer anyway), so replicas sharing a database share one key.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime

from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import Engine, text
from sqlmodel import Session, col, select

from pki.jws import key_id, public_jwk
from pki.signer import KeyAlgorithm, KeyBackend, Signer
from provision import audit
from provision.audit import Actor
from provision.tables import TokenKey

_LOCK = 0x7765_746B  # PostgreSQL advisory lock id for token key creation
RESULTS = "attestation-result"


class TokenKeys:
    def __init__(self, engine: Engine, keys: KeyBackend, *, clock: Callable[[], datetime]) -> None:
        self._engine = engine
        self._keys = keys
        self._clock = clock
        self._lock = threading.Lock()
        self._active: dict[str, tuple[str, Signer]] = {}

    def ensure(self, actor: Actor, purpose: str = RESULTS) -> None:
        """Create the purpose's signing key unless one is active."""
        with Session(self._engine) as session:
            if self._engine.dialect.name == "postgresql":
                session.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _LOCK})
            exists = session.exec(
                select(TokenKey.kid).where(col(TokenKey.purpose) == purpose, col(TokenKey.status) == "active")
            ).first()
            if exists is None:
                now = self._clock()
                signer = self._keys.create(KeyAlgorithm.EC_P256, purpose)
                kid = key_id(signer)
                session.add(
                    TokenKey(
                        kid=kid, purpose=purpose, key_ref=signer.key_ref, status="active", created_at=now
                    )
                )
                audit.record(
                    session,
                    audit.values(actor, "token-key.create", at=now, target=kid, detail={"purpose": purpose}),
                )
            session.commit()

    def active(self, purpose: str = RESULTS) -> tuple[str, Signer]:
        """(kid, signer) of the purpose's active key; loaded once per process."""
        with self._lock:
            cached = self._active.get(purpose)
            if cached is not None:
                return cached
        with Session(self._engine) as session:
            row = session.exec(
                select(TokenKey).where(col(TokenKey.purpose) == purpose, col(TokenKey.status) == "active")
            ).first()
        if row is None:
            raise LookupError(f"no active {purpose} token key; ensure() runs at start-up")
        loaded = (row.kid, self._keys.load(row.key_ref))
        with self._lock:
            self._active[purpose] = loaded
        return loaded

    def verifying_keys(self, purpose: str) -> dict[str, ec.EllipticCurvePublicKey]:
        """kid → public key of every key of one purpose (active or retired): a token is checked only
        against keys of its own purpose."""
        with Session(self._engine) as session:
            rows = session.exec(select(TokenKey).where(col(TokenKey.purpose) == purpose)).all()
        keys: dict[str, ec.EllipticCurvePublicKey] = {}
        for row in rows:
            public = self._keys.load(row.key_ref).public_key()
            if isinstance(public, ec.EllipticCurvePublicKey):
                keys[row.kid] = public
        return keys

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        """Every key that may have signed a token still in date (retired keys stay published)."""
        with Session(self._engine) as session:
            rows = session.exec(select(TokenKey).order_by(col(TokenKey.created_at))).all()
        return {"keys": [public_jwk(self._keys.load(r.key_ref), kid=r.kid) for r in rows]}
