"""The active Cedar policy set, shared by replicas through the database.

An upload is validated against the schema before anything is stored (an invalid set is refused, audited,
and the active one stays); a valid one is appended to `policy_versions` and becomes active. Every replica
checks the latest version at most every `refresh` and reloads when it changed, so an upload on one
replica takes effect on all within that interval.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from policies.engine import PolicyEngine
from policies.errors import PolicySetInvalid
from provision import audit
from provision.audit import Actor
from provision.errors import PolicyRejected
from provision.tables import PolicyVersion


@dataclass(frozen=True)
class PolicyView:
    version: str
    text: str
    uploaded_by: str | None  # None: the files shipped in policies/
    uploaded_at: datetime | None


class PolicyStore:
    def __init__(
        self, engine: Engine, policies: PolicyEngine, *, clock: Callable[[], datetime], refresh: float = 2.0
    ) -> None:
        self._engine = engine
        self._policies = policies
        self._clock = clock
        self._refresh = refresh
        self._lock = threading.Lock()
        self._checked = 0.0
        self._shipped = policies.policy_text
        self.sync(force=True)

    @property
    def engine(self) -> PolicyEngine:
        """The engine, with the latest uploaded set active (checked at most every `refresh` seconds)."""
        self.sync()
        return self._policies

    def sync(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._checked < self._refresh:
            return
        with self._lock:
            self._checked = now
            latest = self._latest()
            if latest is not None and latest.version != self._policies.version:
                self._policies.reload(latest.text)  # validated when it was uploaded

    def current(self) -> PolicyView:
        self.sync(force=True)
        latest = self._latest()
        if latest is None:
            return PolicyView(self._policies.version, self._shipped, None, None)
        return PolicyView(latest.version, latest.text, latest.uploaded_by, latest.uploaded_at)

    def upload(self, actor: Actor, text: str) -> PolicyView:
        now = self._clock()
        previous = self._policies.version
        with self._lock:
            try:
                version = self._policies.reload(text)
            except PolicySetInvalid as exc:
                raise PolicyRejected("; ".join(exc.errors)[:4000]) from None
            with Session(self._engine) as session:
                session.add(
                    PolicyVersion(version=version, text=text, uploaded_by=actor.name[:128], uploaded_at=now)
                )
                detail = {"version": version, "previous": previous}
                audit.record(
                    session, audit.values(actor, "policy.upload", at=now, target=version, detail=detail)
                )
                session.commit()
        return PolicyView(version, text, actor.name, now)

    def _latest(self) -> PolicyVersion | None:
        with Session(self._engine) as session:
            return session.exec(select(PolicyVersion).order_by(col(PolicyVersion.id).desc()).limit(1)).first()
