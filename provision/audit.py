"""The audit trail: who did what, when, with what outcome. Written in the caller's transaction for
successful changes (so the change and its record land together) and on its own for refusals."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session

from attest.errors import AttestError
from pki.errors import PkiError
from provision.errors import ProvisionError
from provision.tables import AuditEvent


@dataclass(frozen=True)
class Actor:
    """Who is asking, and under which request id (for correlating logs, audit and problems)."""

    name: str
    request_id: str | None = None


def values(
    actor: Actor,
    action: str,
    *,
    at: datetime,
    outcome: str = "ok",
    target: str | None = None,
    code: str | None = None,
    detail: Mapping[str, object] | None = None,
) -> dict[str, Any]:
    """One audit row as column values (for the ORM and for batched Core inserts alike)."""
    return {
        "at": at,
        "actor": actor.name[:128],
        "action": action,
        "target": target[:512] if target else None,
        "outcome": outcome,
        "code": code,
        "detail": json.dumps(detail, sort_keys=True, default=str) if detail else None,
        "request_id": actor.request_id,
    }


def record(session: Session, event: dict[str, Any]) -> None:
    """Add an audit row (built by `values`) to the caller's transaction."""
    session.add(AuditEvent(**event))


def record_refusal(
    engine: Engine,
    actor: Actor,
    action: str,
    *,
    at: datetime,
    code: str,
    reason: str,
    target: str | None = None,
    outcome: str = "refused",
) -> None:
    """A refused request leaves only this row behind, in its own transaction."""
    with Session(engine) as session:
        record(
            session,
            values(
                actor,
                action,
                at=at,
                outcome=outcome,
                target=target,
                code=code,
                detail={"reason": reason[:1000]},
            ),
        )
        session.commit()


@contextmanager
def refusals(
    engine: Engine, actor: Actor, action: str, *, target: str | None, clock: Callable[[], datetime]
) -> Iterator[None]:
    """Write a refusal's audit row (its code, reason and target) once, then let it propagate; an
    unavailable backend is recorded as an error, anything else as refused."""
    try:
        yield
    except (AttestError, ProvisionError, PkiError) as exc:
        if not exc.audited:
            record_refusal(
                engine,
                actor,
                action,
                at=clock(),
                code=exc.code,
                reason=exc.reason,
                target=target,
                outcome="error" if exc.kind == "unavailable" else "refused",
            )
            exc.audited = True
        raise
