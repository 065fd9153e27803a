"""Idempotency-Key support: look up a stored response, or build the row that stores one alongside the
change it answers (so the two commit or fail together)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, SQLModel

from provision.errors import IdempotencyKeyInUse, IdempotencyKeyReused, InvalidIdempotencyKey
from provision.tables import IdempotencyRecord

T = TypeVar("T")
TABLE = SQLModel.metadata.tables[IdempotencyRecord.__tablename__]
_KEY = re.compile(r"[\x21-\x7e]{1,128}")


@dataclass(frozen=True)
class Claim:
    actor: str
    key: str
    operation: str
    request_hash: str

    @classmethod
    def of(cls, actor: str, key: str, operation: str, request: bytes) -> Claim:
        """`request` is everything that makes two calls the same call (path and body)."""
        if not _KEY.fullmatch(key):
            raise InvalidIdempotencyKey("Idempotency-Key must be 1 to 128 visible ASCII characters")
        digest = hashlib.sha256(operation.encode() + b"\n" + request).hexdigest()
        return cls(actor=actor[:128], key=key, operation=operation[:64], request_hash=digest)


@dataclass(frozen=True)
class Stored:
    status_code: int
    body: bytes


@dataclass(frozen=True)
class Pending(Generic[T]):
    """A claim plus how to render the result as the response body that a retry will get back."""

    claim: Claim
    status_code: int
    render: Callable[[T], bytes]

    def row(self, result: T, now: datetime) -> dict[str, Any]:
        return {
            "actor": self.claim.actor,
            "key": self.claim.key,
            "operation": self.claim.operation,
            "request_hash": self.claim.request_hash,
            "status_code": self.status_code,
            "response_body": self.render(result),
            "created_at": now,
        }


def lookup(engine: Engine, claim: Claim) -> Stored | None:
    """The stored response for this key, or None. A key reused for another request is refused."""
    with Session(engine) as session:
        record = session.get(IdempotencyRecord, (claim.actor, claim.key))
    if record is None:
        return None
    if record.operation != claim.operation or record.request_hash != claim.request_hash:
        raise IdempotencyKeyReused(
            f"Idempotency-Key {claim.key!r} was already used for a different request ({record.operation})"
        )
    return Stored(status_code=record.status_code, body=record.response_body)


def lost_race(engine: Engine, exc: IntegrityError, pending: Pending[Any] | None) -> Exception:
    """A concurrent request with the same Idempotency-Key committed first: nothing of ours was stored,
    and a retry replays the winner. Any other integrity error is a real fault and stays one."""
    if pending is not None and lookup(engine, pending.claim) is not None:
        return IdempotencyKeyInUse(
            f"a request with Idempotency-Key {pending.claim.key!r} completed concurrently; retry"
        )
    return exc


def commit_with(session: Session, result: T, pending: Pending[T] | None, now: datetime) -> None:
    """Commit the session's change together with the stored response for its Idempotency-Key."""
    if pending is not None:
        session.add(IdempotencyRecord(**pending.row(result, now)))
    try:
        session.commit()
    except IntegrityError as exc:
        engine = session.get_bind()
        assert isinstance(engine, Engine)
        raise lost_race(engine, exc, pending) from None
