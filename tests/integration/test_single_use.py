"""Single-use JWT ids on SQLite and PostgreSQL: the first presentation wins, a replay is refused without
spoiling the caller's transaction, expired rows are swept, and purposes do not collide. Spends deferred
to a use case's own transaction commit and roll back with it, and of racing ones exactly one wins."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, func
from sqlmodel import Session, select

from provision import single_use
from provision.db import make_engine
from provision.errors import JwtReplayed
from provision.migrate import upgrade_to_head
from provision.single_use import PendingJti, is_spent, spend_jti, spend_pending
from provision.tables import SpentJti

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    upgrade_to_head(engine)
    yield engine
    engine.dispose()


def _spend(
    session: Session, jti: str, purpose: str = "truck-request", expires: timedelta = timedelta(minutes=5)
) -> None:
    spend_jti(session, purpose=purpose, jti=jti, subject="truck-1", expires_at=NOW + expires, now=NOW)


def test_first_use_wins_and_a_replay_is_refused(engine: Engine) -> None:
    with Session(engine) as session:
        _spend(session, "a")
        session.commit()
    with Session(engine) as session:
        with pytest.raises(JwtReplayed, match="already used"):
            _spend(session, "a")
        # The caller's transaction is still usable after the refusal.
        _spend(session, "b")
        session.commit()
    with Session(engine) as session:
        assert session.exec(select(func.count()).select_from(SpentJti)).one() == 2


def test_purposes_are_separate(engine: Engine) -> None:
    with Session(engine) as session:
        _spend(session, "same", purpose="truck-request")
        _spend(session, "same", purpose="client-assertion")
        session.commit()


def test_expired_rows_are_swept(engine: Engine) -> None:
    with Session(engine) as session:
        _spend(session, "old", expires=timedelta(seconds=-1))
        _spend(session, "new")
        session.commit()
    with Session(engine) as session:
        rows = {row.jti for row in session.exec(select(SpentJti))}
    assert rows == {"new"}


@pytest.mark.parametrize("jti", ["", "x" * 129])
def test_missing_or_oversized_jti_is_refused(engine: Engine, jti: str) -> None:
    with Session(engine) as session, pytest.raises(JwtReplayed, match="missing or longer"):
        _spend(session, jti)


# -- spends deferred to the use case's transaction (provision.single_use.spend_pending) -------------


def _pending(jti: str, expires: timedelta = timedelta(minutes=5)) -> PendingJti:
    return PendingJti("truck-request", jti, "truck-1", NOW + expires)


def test_a_pending_spend_commits_or_rolls_back_with_the_callers_write(engine: Engine) -> None:
    with engine.connect() as conn:
        spend_pending(conn, _pending("p"), NOW)
        conn.rollback()  # the use case refused: nothing of its transaction stays, the jti neither
        assert not is_spent(conn, "truck-request", "p")
    with engine.begin() as conn:
        spend_pending(conn, _pending("p"), NOW)
    with engine.connect() as conn:
        assert is_spent(conn, "truck-request", "p") and not is_spent(conn, "client-assertion", "p")
    with pytest.raises(JwtReplayed, match="already used"), engine.begin() as conn:
        spend_pending(conn, _pending("p"), NOW)


def test_pending_spends_racing_let_one_through(engine: Engine) -> None:
    """Eight transactions spend one jti at once (each on its own connection, as replicas would)."""
    barrier = threading.Barrier(8)

    def spend(_: int) -> bool:
        barrier.wait()
        try:
            with engine.begin() as conn:
                spend_pending(conn, _pending("raced"), NOW)
        except JwtReplayed:
            return False
        return True

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(spend, range(8)))
    assert sorted(outcomes) == [False] * 7 + [True]


def test_pending_spends_sweep_expired_rows_now_and_then(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(single_use, "_last_sweep", {})
    with engine.begin() as conn:
        spend_pending(conn, _pending("old", timedelta(seconds=-1)), NOW)  # sweeps (first), then inserts
        spend_pending(conn, _pending("new"), NOW)  # no sweep yet: "old" stays a while
    with engine.connect() as conn:
        assert is_spent(conn, "truck-request", "old")
    with engine.begin() as conn:
        spend_pending(conn, _pending("later"), NOW + single_use.SWEEP_EVERY)
    with engine.connect() as conn:
        rows = {row.jti for row in Session(bind=conn).exec(select(SpentJti))}
    assert rows == {"new", "later"}


@pytest.mark.parametrize("jti", ["", "x" * 129])
def test_a_pending_spend_refuses_a_missing_or_oversized_jti(engine: Engine, jti: str) -> None:
    with engine.connect() as conn, pytest.raises(JwtReplayed, match="missing or longer"):
        spend_pending(conn, _pending(jti), NOW)
