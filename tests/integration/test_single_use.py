"""Single-use JWT ids on SQLite and PostgreSQL: the first presentation wins, a replay is refused without
spoiling the caller's transaction, expired rows are swept, and purposes do not collide."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, func
from sqlmodel import Session, select

from provision.db import make_engine
from provision.errors import JwtReplayed
from provision.migrate import upgrade_to_head
from provision.single_use import spend_jti
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
