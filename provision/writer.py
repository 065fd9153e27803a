"""Group commit for the issuance hot path.

Requests hand their rows to one writer thread per process, which inserts everything waiting in a single
transaction (SQLAlchemy Core executemany) and commits once. Each caller returns only after the commit
that holds its rows, so an acknowledged certificate is durable; a failing row (e.g. a serial collision)
is isolated by replaying the batch one request at a time, so it never takes its neighbours down.
"""

from __future__ import annotations

import queue
import threading
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import Future
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, Table, insert
from sqlalchemy.exc import SQLAlchemyError

from provision.db import writer_lock

Rows = list[tuple[Table, dict[str, Any]]]
_MAX_BATCH = 256


@dataclass
class _Pending:
    rows: Rows
    done: Future[None] = field(default_factory=Future)


class BatchWriter:
    def __init__(
        self, engine: Engine, lock: Callable[[], AbstractContextManager[None]] | None = None
    ) -> None:
        self._engine = engine
        self._lock = lock or writer_lock(engine)
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="weighstation-writer", daemon=True)
        self._closed = False
        self._thread.start()

    def submit(self, rows: Rows) -> Future[None]:
        """Queue rows for one atomic insert; the future completes once they are committed (or fails
        with what the database raised). Async callers await it with asyncio.wrap_future."""
        if self._closed:
            raise RuntimeError("writer is closed")
        pending = _Pending(rows)
        self._queue.put(pending)
        return pending.done

    def write(self, rows: Rows) -> None:
        self.submit(rows).result()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._queue.put(None)
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < _MAX_BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._flush(batch)
                    return
                batch.append(item)
            self._flush(batch)

    def _flush(self, batch: list[_Pending]) -> None:
        try:
            self._commit(batch)
        except SQLAlchemyError as exc:
            if len(batch) == 1:
                batch[0].done.set_exception(exc)
                return
            for pending in batch:  # isolate the bad row: each request on its own
                self._flush([pending])
            return
        except BaseException as exc:
            # The writer thread must never die with callers still waiting on it.
            for pending in batch:
                pending.done.set_exception(exc)
            raise
        for pending in batch:
            pending.done.set_result(None)

    def _commit(self, batch: list[_Pending]) -> None:
        by_table: dict[Table, list[dict[str, Any]]] = defaultdict(list)
        for pending in batch:
            for table, row in pending.rows:
                by_table[table].append(row)
        with self._lock(), self._engine.begin() as conn:
            for table, rows in by_table.items():
                conn.execute(insert(table), rows)
