"""Signing keys for the tokens the authority issues (attestation results, access tokens), held by the key
backend (file keys or Vault Transit) and published as a JWKS. The key id is the key's RFC 7638 thumbprint.

The first start creates each purpose's key under a database lock (an advisory lock on PostgreSQL; SQLite
allows one writer anyway), so replicas sharing a database share one key.

Rotation with overlap: `rotate` makes a new active key at once and retires the old one with a
`published_until` = now + the longest life of a token it signed (plus clock skew). Until then the old key
stays in the JWKS and verifies; after it, it is neither published nor accepted (unknown kid). All of it
lives in the database, and every replica reads the active key and the verifying set from there on each
use (only the key objects, immutable per kid, are cached), so a rotation takes effect on all replicas.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import Engine, text
from sqlmodel import Session, col, select

from pki.jws import key_id, public_jwk
from pki.signer import KeyAlgorithm, KeyBackend, Signer
from provision import audit
from provision.audit import Actor
from provision.idempotency import Pending, commit_with
from provision.tables import TokenKey

_LOCK = 0x7765_746B  # PostgreSQL advisory lock id for token key creation and rotation
# How long the verifying side may reuse the key rows it read: a kid it has not seen makes it read again at
# once (a rotation on another replica), and a retired key's own published_until is checked on every use.
_ROWS_SECONDS = 1.0
RESULTS = "attestation-result"


@dataclass(frozen=True)
class RotatedKey:
    purpose: str
    kid: str  # the new active key, signing from now on
    retired: tuple[str, ...]  # the keys it replaced
    published_until: datetime  # when the retired keys stop verifying and leave the JWKS


class TokenKeys:
    def __init__(self, engine: Engine, keys: KeyBackend, *, clock: Callable[[], datetime]) -> None:
        self._engine = engine
        self._keys = keys
        self._clock = clock
        self._lock = threading.Lock()
        self._signers: dict[str, Signer] = {}  # kid → signer; a kid names one key forever
        # ((monotonic, clock) read time, every key row)
        self._rows: tuple[tuple[float, float], list[TokenKey]] | None = None

    def _lock_changes(self, session: Session) -> None:
        if self._engine.dialect.name == "postgresql":
            session.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _LOCK})

    def _new_key(self, session: Session, purpose: str, now: datetime) -> str:
        signer = self._keys.create(KeyAlgorithm.EC_P256, purpose)
        kid = key_id(signer)
        session.add(
            TokenKey(kid=kid, purpose=purpose, key_ref=signer.key_ref, status="active", created_at=now)
        )
        return kid

    def ensure(self, actor: Actor, purpose: str = RESULTS) -> None:
        """Create the purpose's signing key unless one is active."""
        with Session(self._engine) as session:
            self._lock_changes(session)
            exists = session.exec(
                select(TokenKey.kid).where(col(TokenKey.purpose) == purpose, col(TokenKey.status) == "active")
            ).first()
            if exists is None:
                now = self._clock()
                kid = self._new_key(session, purpose, now)
                audit.record(
                    session,
                    audit.values(actor, "token-key.create", at=now, target=kid, detail={"purpose": purpose}),
                )
            session.commit()

    def rotate(
        self,
        actor: Actor,
        purpose: str,
        *,
        overlap: timedelta,
        idempotency: Pending[RotatedKey] | None = None,
    ) -> RotatedKey:
        """A new active key for `purpose`; the old one verifies and is published for `overlap` more
        (the caller passes the longest life of a token of this purpose plus clock skew)."""
        if overlap <= timedelta(0):
            raise ValueError("the overlap must be positive")
        with Session(self._engine) as session:
            self._lock_changes(session)
            now = self._clock()
            olds = session.exec(
                select(TokenKey).where(col(TokenKey.purpose) == purpose, col(TokenKey.status) == "active")
            ).all()
            until = now + overlap
            for old in olds:
                old.status, old.retired_at, old.published_until = "retired", now, until
                session.add(old)
            kid = self._new_key(session, purpose, now)
            view = RotatedKey(
                purpose=purpose, kid=kid, retired=tuple(o.kid for o in olds), published_until=until
            )
            detail = {"purpose": purpose, "retired": list(view.retired), "published_until": until.isoformat()}
            audit.record(session, audit.values(actor, "token-key.rotate", at=now, target=kid, detail=detail))
            commit_with(session, view, idempotency, now)
        return view

    def _signer(self, row: TokenKey) -> Signer:
        with self._lock:
            cached = self._signers.get(row.kid)
        if cached is not None:
            return cached
        signer = self._keys.load(row.key_ref)
        with self._lock:
            self._signers[row.kid] = signer
        return signer

    def active(self, purpose: str = RESULTS) -> tuple[str, Signer]:
        """(kid, signer) of the purpose's active key, read from the database on each call so that a
        rotation on any replica is followed at once."""
        with Session(self._engine) as session:
            row = session.exec(
                select(TokenKey).where(col(TokenKey.purpose) == purpose, col(TokenKey.status) == "active")
            ).first()
        if row is None:
            raise LookupError(f"no active {purpose} token key; ensure() runs at start-up")
        return row.kid, self._signer(row)

    def _key_rows(self, *, fresh: bool) -> list[TokenKey]:
        with self._lock:
            cached = self._rows
        # Stale after a second of real time or of the authority's clock (which tests move by hand).
        marks = (time.monotonic(), self._clock().timestamp())
        if (
            not fresh
            and cached is not None
            and all(0 <= b - a < _ROWS_SECONDS for a, b in zip(cached[0], marks, strict=True))
        ):
            return cached[1]
        with Session(self._engine) as session:
            rows = list(session.exec(select(TokenKey).order_by(col(TokenKey.created_at))).all())
        with self._lock:
            self._rows = (marks, rows)
        return rows

    def _published(self, purposes: Sequence[str] | None = None, *, fresh: bool = True) -> list[TokenKey]:
        """The keys that may have signed a token still in date: active ones, and retired ones until
        their published_until."""
        now = self._clock()
        return [
            r
            for r in self._key_rows(fresh=fresh)
            if (purposes is None or r.purpose in purposes)
            and (r.status == "active" or (r.published_until is not None and r.published_until > now))
        ]

    def _public_keys(self, rows: Sequence[TokenKey]) -> dict[str, ec.EllipticCurvePublicKey]:
        keys: dict[str, ec.EllipticCurvePublicKey] = {}
        for row in rows:
            public = self._signer(row).public_key()
            if isinstance(public, ec.EllipticCurvePublicKey):
                keys[row.kid] = public
        return keys

    def verifying_keys(self, purpose: str) -> dict[str, ec.EllipticCurvePublicKey]:
        """kid → public key of every published key of one purpose: a token is checked only against keys
        of its own purpose, and never against a key whose overlap has ended."""
        return self._public_keys(self._published([purpose]))

    def verifying_key(self, purpose: str, kid: str) -> ec.EllipticCurvePublicKey | None:
        """The published key `kid` of `purpose`, from rows at most a second old; a kid not among them is
        looked up again at once, so a key another replica just made verifies without delay."""
        for fresh in (False, True):
            key = self._public_keys([r for r in self._published([purpose], fresh=fresh) if r.kid == kid]).get(
                kid
            )
            if key is not None:
                return key
        return None

    def publishes(self, purpose: str, kid: str) -> bool:
        """Whether `kid` is still a published key of `purpose`, by rows at most a second old (no key
        object built): for a token whose signature was already checked with that key."""
        return any(r.kid == kid for r in self._published([purpose], fresh=False))

    def every_key(self, purpose: str) -> dict[str, ec.EllipticCurvePublicKey]:
        """kid → public key of every key of one purpose ever created, retired ones included: what an
        offline verifier needs to check a token signed years ago (never used to accept a live token)."""
        with Session(self._engine) as session:
            rows = session.exec(
                select(TokenKey).where(col(TokenKey.purpose) == purpose).order_by(col(TokenKey.created_at))
            ).all()
        return self._public_keys(rows)

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        """Every published key, of every purpose (a token's kid picks its key)."""
        return {"keys": [public_jwk(self._signer(r), kid=r.kid) for r in self._published()]}
