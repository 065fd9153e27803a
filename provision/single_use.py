"""Spending single-use JWT ids: the first presentation of a (purpose, jti) inserts its row; a second one,
on any replica, hits the primary key and is refused. Expired rows are swept as new ones arrive."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col

from provision.errors import JwtReplayed
from provision.tables import SpentJti


def spend_jti(
    session: Session, *, purpose: str, jti: str, subject: str, expires_at: datetime, now: datetime
) -> None:
    """Record `jti` as spent for `purpose` in the caller's transaction, or raise JwtReplayed.

    The insert is flushed inside a savepoint so a replay surfaces here, not at the caller's commit,
    and leaves the rest of the caller's transaction usable."""
    if not jti or len(jti) > 128:
        raise JwtReplayed("the JWT's jti is missing or longer than 128 characters")
    session.connection().execute(
        delete(SpentJti).where(col(SpentJti.purpose) == purpose, col(SpentJti.expires_at) < now)
    )
    try:
        with session.begin_nested():
            session.add(SpentJti(purpose=purpose, jti=jti, subject=subject[:128], expires_at=expires_at))
    except IntegrityError:
        raise JwtReplayed(f"this {purpose} JWT (jti {jti!r}) was already used; it is single use") from None
