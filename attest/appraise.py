"""Appraisal of verified PCR values against the golden releases of the truck's model, as an EAR-style
result (draft-ietf-rats-ear): a status and an AR4SI trustworthiness vector.

AR4SI tiers: 2-31 affirming, 32-95 warning, 96-127 contraindicated. The claims used here:
instance-identity (the quote verified with the AK enrolled for this truck), hardware (its EK chained to a
pinned manufacturer root at enrollment), executables and configuration (the PCR values match an approved
release; PCRs 0-7 are the firmware, 8-15 the OS, autonomy stack and configuration).

A release matches when it lists every quoted PCR, each with exactly the quoted value. A match with an active
release affirms; a match with a revoked one only (or one signed by a revoked key) is contraindicated; no
match is a warning with the release "unknown".
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

AFFIRMING = 2
UNRECOGNIZED = 32
CONTRAINDICATED = 96


class Status(enum.StrEnum):
    AFFIRMING = "affirming"
    WARNING = "warning"
    CONTRAINDICATED = "contraindicated"


@dataclass(frozen=True)
class GoldenRelease:
    """What appraisal needs of a registered release."""

    id: str
    version: str
    bank: str
    pcrs: Mapping[int, bytes]
    revoked: bool


@dataclass(frozen=True)
class Appraisal:
    status: Status
    release: GoldenRelease | None
    trust_vector: dict[str, int]
    reasons: tuple[str, ...]


def _matches(release: GoldenRelease, bank: str, values: Mapping[int, bytes]) -> bool:
    # Every quoted PCR must be one the release vouches for: a release silent about a PCR cannot
    # approve whatever that PCR holds.
    return (
        release.bank == bank
        and set(values) <= set(release.pcrs)
        and all(release.pcrs[pcr] == value for pcr, value in values.items())
    )


def appraise(
    bank: str, values: Mapping[int, bytes], releases: Sequence[GoldenRelease], *, warnings: Sequence[str] = ()
) -> Appraisal:
    """`values` are verified PCR values (quote signature and digest, event log replayed)."""
    matching = [r for r in releases if _matches(r, bank, values)]
    active = next((r for r in matching if not r.revoked), None)
    vector = {"instance-identity": AFFIRMING, "hardware": AFFIRMING}
    if active is not None:
        status = Status.WARNING if warnings else Status.AFFIRMING
        vector |= {"executables": AFFIRMING, "configuration": AFFIRMING}
        reasons = tuple(f"warning: {w}" for w in warnings)
        return Appraisal(status, active, vector, (f"matches release {active.version}", *reasons))
    if matching:
        revoked = matching[0]
        vector |= {"executables": CONTRAINDICATED, "configuration": CONTRAINDICATED}
        return Appraisal(
            Status.CONTRAINDICATED, revoked, vector, (f"runs revoked release {revoked.version}",)
        )
    vector |= {"executables": UNRECOGNIZED, "configuration": UNRECOGNIZED}
    reasons = (
        "no golden release of this model matches the quoted PCRs",
        *(f"warning: {w}" for w in warnings),
    )
    return Appraisal(Status.WARNING, None, vector, reasons)
