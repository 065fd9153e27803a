"""A bounded cache of event-log appraisals: a truck sends the same boot's log with every quote, and its
parse and replay are a pure function of the log's bytes, the bank and the PCR values they must match.

The key is the log's SHA-256 with the bank and the quoted PCR values themselves, so an entry answers only
for the exact values it was checked against (a log that matched other values, or a refusal, is never an
answer: only successful appraisals are stored). Entries are immutable (AppraisedLog is frozen)."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Mapping

from attest.eventlog import parse_event_log
from attest.replay import AppraisedLog, appraise_event_log

_Key = tuple[bytes, int, tuple[tuple[int, bytes], ...]]


class AppraisedLogCache:
    def __init__(self, size: int = 1024) -> None:
        if size < 1:
            raise ValueError("the cache holds at least one entry")
        self._size = size
        self._entries: OrderedDict[_Key, AppraisedLog] = OrderedDict()
        self._lock = threading.Lock()

    def appraise(self, event_log: bytes, bank: int, pcr_values: Mapping[int, bytes]) -> AppraisedLog:
        """`appraise_event_log(parse_event_log(event_log), bank, pcr_values)`, remembered when it passes."""
        key = (hashlib.sha256(event_log).digest(), bank, tuple(sorted(pcr_values.items())))
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None:
                self._entries.move_to_end(key)
                return hit
        appraised = appraise_event_log(parse_event_log(event_log), bank, pcr_values)
        with self._lock:
            self._entries[key] = appraised
            self._entries.move_to_end(key)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)
        return appraised

    def __len__(self) -> int:
        return len(self._entries)
