"""Spending single-use JWT ids: the first presentation of a (purpose, jti) inserts its row; a second one,
on any replica, hits the primary key and is refused. Expired rows are swept as new ones arrive.

Two ways to spend:

- `spend_jti`: in the caller's session, inside a savepoint, sweeping expired rows each time (client
  assertions);
- `spend_pending`: a `PendingJti` (a verified JWT whose spend was deferred to the use case) inserted on
  the caller's connection, so it commits or rolls back with the use case's own write (the truck's
  attestation calls: one write transaction per request). The sweep runs at most every `SWEEP_EVERY` per
  process there: an expired row left a little longer refuses nothing a live JWT could present.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, bindparam, delete, insert, select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, SQLModel, col

from provision.errors import JwtReplayed
from provision.tables import SpentJti

SWEEP_EVERY = timedelta(seconds=30)
_TABLE = SQLModel.metadata.tables[SpentJti.__tablename__]
_SPENT = select(_TABLE.c.jti).where(
    _TABLE.c.purpose == bindparam("purpose"), _TABLE.c.jti == bindparam("jti")
)
_SWEEP = delete(_TABLE).where(
    _TABLE.c.purpose == bindparam("purpose"), _TABLE.c.expires_at < bindparam("now")
)
_sweep_lock = threading.Lock()
_last_sweep: dict[str, datetime] = {}


@dataclass(frozen=True)
class PendingJti:
    """A verified single-use JWT's id, not yet spent: the use case spends it in its own transaction."""

    purpose: str
    jti: str
    subject: str
    expires_at: datetime


def _check(jti: str) -> None:
    if not jti or len(jti) > 128:
        raise JwtReplayed("the JWT's jti is missing or longer than 128 characters")


def _replayed(purpose: str, jti: str) -> JwtReplayed:
    return JwtReplayed(f"this {purpose} JWT (jti {jti!r}) was already used; it is single use")


def spend_jti(
    session: Session, *, purpose: str, jti: str, subject: str, expires_at: datetime, now: datetime
) -> None:
    """Record `jti` as spent for `purpose` in the caller's transaction, or raise JwtReplayed.

    The insert is flushed inside a savepoint so a replay surfaces here, not at the caller's commit,
    and leaves the rest of the caller's transaction usable."""
    _check(jti)
    session.connection().execute(
        delete(SpentJti).where(col(SpentJti.purpose) == purpose, col(SpentJti.expires_at) < now)
    )
    try:
        with session.begin_nested():
            session.add(SpentJti(purpose=purpose, jti=jti, subject=subject[:128], expires_at=expires_at))
    except IntegrityError:
        raise _replayed(purpose, jti) from None


def is_spent(conn: Connection, purpose: str, jti: str) -> bool:
    """Whether `jti` was already spent (a read: the early answer to a plain replay; only the insert of
    `spend_pending` decides a race)."""
    return conn.execute(_SPENT, {"purpose": purpose, "jti": jti}).first() is not None


def spend_pending(conn: Connection, pending: PendingJti, now: datetime) -> None:
    """Insert `pending` on the caller's connection, in its transaction; raise JwtReplayed if it was
    spent before (on any replica). No savepoint: the caller's transaction is to be rolled back then
    (on PostgreSQL the failed insert has already aborted it)."""
    _check(pending.jti)
    if _sweep_due(pending.purpose, now):
        conn.execute(_SWEEP, {"purpose": pending.purpose, "now": now})
    try:
        conn.execute(
            insert(_TABLE).values(
                purpose=pending.purpose,
                jti=pending.jti,
                subject=pending.subject[:128],
                expires_at=pending.expires_at,
            )
        )
    except IntegrityError:
        raise _replayed(pending.purpose, pending.jti) from None


def _sweep_due(purpose: str, now: datetime) -> bool:
    with _sweep_lock:
        last = _last_sweep.get(purpose)
        if last is not None and last <= now < last + SWEEP_EVERY:
            return False
        _last_sweep[purpose] = now
        return True
