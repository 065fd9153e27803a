"""Database engine: SQLite (embedded default, WAL) or PostgreSQL (psycopg 3), chosen by URL."""

from __future__ import annotations

import fcntl
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text


def normalise_url(url: str) -> str:
    # psycopg 3 is the only PostgreSQL driver we ship; plain postgresql:// would ask for psycopg2.
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return url


def make_engine(url: str) -> Engine:
    url = normalise_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, pool_size=8)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_size=8, max_overflow=8, pool_pre_ping=True)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers run beside the writer; synchronous=FULL keeps every acknowledged commit durable.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


@contextmanager
def _no_lock() -> Iterator[None]:
    yield


def writer_lock(engine: Engine) -> Callable[[], AbstractContextManager[None]]:
    """Serialise group commits across worker processes sharing one SQLite file.

    SQLite's own busy handler backs off by sleeping (up to 100 ms a try), which wrecks tail latency when
    two workers commit at once; a blocking flock wakes the waiter the moment the holder is done.
    PostgreSQL needs nothing: its row locks already queue writers.
    """
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database:
        return _no_lock
    path = Path(database).with_suffix(".writelock")

    @contextmanager
    def locked() -> Iterator[None]:
        with path.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    return locked


def ping(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
