"""Enrollment tokens: short-lived HS256 JWTs bound to one truck, single use through their `jti` row.

Only this authority mints and checks them, so a symmetric key is enough; the JWT itself is never
stored (only its jti, truck and expiry), so a database reader cannot enroll a truck. Minting takes no
Idempotency-Key for the same reason: a retry mints a new token and the lost one expires unused.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import jwt
from sqlalchemy import Engine, update
from sqlmodel import Session, col

from provision import audit
from provision.audit import Actor
from provision.errors import (
    EnrollmentTokenExpired,
    EnrollmentTokenInvalid,
    EnrollmentTokenUsed,
    UnknownTruck,
)
from provision.tables import EnrollmentToken, Truck

AUDIENCE = "weighstation:enrollment"
_ALGORITHM = "HS256"
_REQUIRED = ["exp", "iat", "nbf", "jti", "sub", "iss", "aud"]


@dataclass(frozen=True)
class MintedToken:
    token: str
    jti: str
    truck: str
    expires_at: datetime


@dataclass(frozen=True)
class TokenClaims:
    jti: str
    truck: str


class EnrollmentTokens:
    def __init__(
        self,
        engine: Engine,
        *,
        key: bytes,
        issuer: str,
        default_ttl: timedelta,
        clock: Callable[[], datetime],
    ) -> None:
        if len(key) < 32:
            raise ValueError("the enrollment token key must be at least 32 bytes")
        self._engine = engine
        self._key = key
        self._issuer = issuer
        self._default_ttl = default_ttl
        self._clock = clock

    def mint(self, actor: Actor, truck_id: str, ttl: timedelta | None = None) -> MintedToken:
        now = self._clock()
        expires = now + (ttl or self._default_ttl)
        jti = secrets.token_urlsafe(24)
        claims = {
            "iss": self._issuer,
            "aud": AUDIENCE,
            "sub": truck_id,
            "jti": jti,
            "iat": int(now.timestamp()),
            "nbf": int(now.timestamp()),
            "exp": int(expires.timestamp()),
        }
        token = jwt.encode(claims, self._key, algorithm=_ALGORITHM)
        with Session(self._engine) as session:
            if session.get(Truck, truck_id) is None:
                raise UnknownTruck(f"no truck {truck_id[:64]!r}")
            session.add(
                EnrollmentToken(
                    jti=jti, truck_id=truck_id, issued_by=actor.name[:128], issued_at=now, expires_at=expires
                )
            )
            detail: dict[str, object] = {"jti": jti, "expires_at": expires.isoformat()}
            audit.record(
                session, audit.values(actor, "enrollment-token.mint", at=now, target=truck_id, detail=detail)
            )
            session.commit()
        return MintedToken(token=token, jti=jti, truck=truck_id, expires_at=expires)

    def claims(self, token: str) -> TokenClaims:
        """The token's jti and truck, if this authority minted it for enrollment and it is in date."""
        now = self._clock()
        try:
            decoded = jwt.decode(
                token,
                self._key,
                algorithms=[_ALGORITHM],
                audience=AUDIENCE,
                issuer=self._issuer,
                options={"require": _REQUIRED, "verify_exp": False, "verify_iat": False, "verify_nbf": False},
            )
        except jwt.InvalidTokenError as exc:
            raise EnrollmentTokenInvalid(f"not a valid enrollment token: {exc}") from None
        # Times are checked against the authority's clock (so tests and replicas agree on one).
        times = [decoded.get(name) for name in ("nbf", "exp")]
        jti, sub = decoded.get("jti"), decoded.get("sub")
        if not all(isinstance(t, int) for t in times) or not isinstance(jti, str) or not isinstance(sub, str):
            raise EnrollmentTokenInvalid("enrollment token claims have the wrong types")
        if now.timestamp() >= decoded["exp"]:
            raise EnrollmentTokenExpired("the enrollment token has expired; ask the operator for a new one")
        if now.timestamp() < decoded["nbf"]:
            raise EnrollmentTokenInvalid("the enrollment token is not valid yet")
        return TokenClaims(jti=jti, truck=sub)

    @staticmethod
    def consume(session: Session, claims: TokenClaims, now: datetime) -> None:
        """Mark the token used in the caller's transaction; of two concurrent uses exactly one wins."""
        row = session.get(EnrollmentToken, claims.jti)
        if row is None or row.truck_id != claims.truck:
            raise EnrollmentTokenInvalid("the enrollment token is unknown to this authority")
        if row.expires_at <= now:
            raise EnrollmentTokenExpired("the enrollment token has expired; ask the operator for a new one")
        result = session.connection().execute(
            update(EnrollmentToken)
            .where(col(EnrollmentToken.jti) == claims.jti, col(EnrollmentToken.used_at).is_(None))
            .values(used_at=now)
        )
        if result.rowcount != 1:
            raise EnrollmentTokenUsed("the enrollment token was already used; tokens are single use")
