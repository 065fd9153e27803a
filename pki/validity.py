"""Validity-window arithmetic shared by CA, leaf, CRL and OCSP builders."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pki.errors import IssuerExpired

# Relying parties' clocks drift; backdating not_before avoids "not yet valid" on fresh certificates.
CLOCK_SKEW = timedelta(seconds=60)


def as_utc(moment: datetime) -> datetime:
    """Aware UTC. Naive values are taken as UTC, as cryptography does (SQLite hands back naive times)."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def window(now: datetime, ttl: timedelta, ceiling: datetime | None) -> tuple[datetime, datetime]:
    """(not_before, not_after) for a certificate living `ttl` from `now`, never outliving `ceiling`."""
    if ttl <= timedelta(0):
        raise ValueError("ttl must be positive")
    now = as_utc(now)
    not_after = now + ttl
    if ceiling is not None and not_after > as_utc(ceiling):
        # A certificate outliving its issuer fails path validation anyway; say so in the cert itself.
        not_after = as_utc(ceiling)
    if not_after <= now:
        raise IssuerExpired(f"the issuer expired at {not_after:%Y-%m-%dT%H:%M:%SZ}")
    return now - CLOCK_SKEW, not_after
