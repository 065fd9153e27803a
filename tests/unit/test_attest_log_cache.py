"""attest.log_cache: an appraisal is remembered only for the exact log, bank and quoted values it passed
with; anything else is appraised afresh, refusals are never remembered, and the cache stays bounded."""

from __future__ import annotations

import pytest

from agent.boot import truck_boot
from attest.alg import Alg
from attest.errors import EventLogReplayMismatch
from attest.eventlog import parse_event_log
from attest.log_cache import AppraisedLogCache
from attest.replay import appraise_event_log

LOG = truck_boot().event_log()
QUOTED = truck_boot().expected_pcrs()


def test_a_passing_appraisal_is_remembered_for_the_same_evidence() -> None:
    cache = AppraisedLogCache(4)
    first = cache.appraise(LOG, Alg.SHA256, QUOTED)
    assert first == appraise_event_log(parse_event_log(LOG), Alg.SHA256, QUOTED)
    assert cache.appraise(bytes(LOG), Alg.SHA256, dict(QUOTED)) is first and len(cache) == 1


def test_other_quoted_values_are_checked_again_and_a_refusal_is_not_remembered() -> None:
    cache = AppraisedLogCache(4)
    cache.appraise(LOG, Alg.SHA256, QUOTED)
    other = {**QUOTED, 7: bytes(32)}
    for _ in range(2):
        with pytest.raises(EventLogReplayMismatch):
            cache.appraise(LOG, Alg.SHA256, other)
    assert len(cache) == 1


def test_another_log_is_not_answered_by_the_cached_one() -> None:
    cache = AppraisedLogCache(4)
    cache.appraise(LOG, Alg.SHA256, QUOTED)
    changed = truck_boot(overrides={"perception": b"another build"}).event_log()
    with pytest.raises(EventLogReplayMismatch):
        cache.appraise(changed, Alg.SHA256, QUOTED)


def test_the_cache_is_bounded_and_drops_the_least_recently_used() -> None:
    cache = AppraisedLogCache(2)
    boots = [truck_boot(overrides={"perception": bytes([i])}) for i in range(3)]
    for boot in boots:
        cache.appraise(boot.event_log(), Alg.SHA256, boot.expected_pcrs())
    assert len(cache) == 2
    with pytest.raises(ValueError, match="at least one"):
        AppraisedLogCache(0)
