"""Replaying a parsed event log (attest.eventlog) into PCR values, and appraising it against the
PCR values a verified quote vouches for.

Only digests are replayed. An event's type is a label the truck wrote and decides nothing, with
one exception the PFP itself makes: EV_NO_ACTION records are not extended. That exception is safe
because the replay is compared with the TPM: relabelling a measured event EV_NO_ACTION drops its
digest from the replay (and the parser already refuses an EV_NO_ACTION with a non-zero digest),
relabelling an EV_NO_ACTION as measured adds a digest; either way the PCR no longer matches.
Relabelling one measured type as another changes nothing here. The separator check, too, looks
at digests: a PCR was closed if the digest of 0x00000000 was extended into it, whatever the
record calls itself.

Initial values after TPM2_Startup(CLEAR) (PC Client Platform TPM Profile): zeros, except PCR 0,
whose last byte is the startup locality when the log has a StartupLocality event (3 at locality
3, 4 after an H-CRTM; TPM 2.0 Part 1 §34), and the D-RTM PCRs 17-22, all ones until a D-RTM launch
that this log does not record.

Event data is reported (`AppraisedLog.events`) only for extended events of PCRs whose replay
matched, so what an appraiser reads (which component, which version) sits next to a digest the
TPM vouched for. The data itself is covered only when the digest is its hash (`data_measured`);
otherwise (a kernel image's path, a firmware volume's descriptor) it is the truck's description.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from attest.alg import alg_name, digest
from attest.errors import (
    EventLogAlgorithmMismatch,
    EventLogReplayMismatch,
    MissingSeparator,
    PcrWithoutEvents,
)
from attest.eventlog import MAX_PCR, EventLog, event_type_name

# PFP §10.4.1 EV_SEPARATOR: 0x00000000 normally, 0xFFFFFFFF when the firmware hit an error.
SEPARATOR = bytes(4)
ERROR_SEPARATOR = b"\xff" * 4
PRE_OS_PCRS = range(8)
_DRTM_PCRS = range(17, 23)


@dataclass(frozen=True)
class AppraisedEvent:
    """An extended event of an appraised PCR, with its digest in the appraised bank."""

    number: int
    offset: int
    pcr: int
    type: int
    bank: int
    digest: bytes
    data: bytes

    @property
    def type_name(self) -> str:
        return event_type_name(self.type)

    @property
    def data_measured(self) -> bool:
        """The data is what was measured (the digest is its hash), not just a description."""
        return digest(self.bank, self.data) == self.digest


@dataclass(frozen=True)
class AppraisedLog:
    """A log whose replay matched the PCR values the TPM vouched for, in one bank."""

    bank: int
    pcr_values: Mapping[int, bytes]  # read-only: the appraised PCRs and their (matching) values
    events: tuple[AppraisedEvent, ...]  # extended events of those PCRs, in log order


def initial_value(log: EventLog, bank: int, pcr: int) -> bytes:
    """The value of `pcr` in `bank` right after TPM2_Startup(CLEAR), as this log describes it."""
    size = dict(log.spec_id.algorithms)[bank]
    if pcr in _DRTM_PCRS:
        return b"\xff" * size
    if pcr == 0:
        return bytes(size - 1) + bytes([log.startup_locality])
    return bytes(size)


def replay(log: EventLog, bank: int, pcrs: Iterable[int]) -> dict[int, bytes]:
    """Extend each extended event's `bank` digest into its PCR from the initial value; the
    resulting values of `pcrs`. Raises EventLogAlgorithmMismatch when the log has no `bank`
    digests and PcrWithoutEvents for a requested PCR no extended event explains."""
    wanted = sorted(set(pcrs))
    if any(not 0 <= p <= MAX_PCR for p in wanted):
        raise ValueError(f"PCRs {wanted} must be within 0..{MAX_PCR}")
    if bank not in log.spec_id.algorithm_ids:
        raise EventLogAlgorithmMismatch(
            f"the log carries {', '.join(alg_name(a) for a in log.spec_id.algorithm_ids)} digests, "
            f"not {alg_name(bank)}"
        )
    values = {p: initial_value(log, bank, p) for p in wanted}
    extended: set[int] = set()
    for event in log.events:
        if event.extended and event.pcr in values:
            values[event.pcr] = digest(bank, values[event.pcr] + event.digest(bank))
            extended.add(event.pcr)
    for pcr in wanted:
        if pcr not in extended:
            raise PcrWithoutEvents(f"PCR {pcr} has no extended event in the log", pcr=pcr)
    return values


def appraise_event_log(log: EventLog, bank: int, pcr_values: Mapping[int, bytes]) -> AppraisedLog:
    """Check that `log` explains `pcr_values` (from a verified quote) in `bank`; raise one typed
    error for the first check that fails, or return the events now backed by the TPM."""
    if not pcr_values:
        raise ValueError("no PCR to appraise")
    # 1-2. The log carries `bank` digests and every PCR to appraise has an extended event.
    replayed = replay(log, bank, pcr_values)
    # 3. The replay gives exactly the values the TPM vouched for.
    mismatched = tuple(p for p in sorted(replayed) if replayed[p] != pcr_values[p])
    if mismatched:
        raise EventLogReplayMismatch(
            f"replaying the {alg_name(bank)} digests does not give the quoted value of "
            + ", ".join(f"PCR {p}" for p in mismatched),
            pcrs=mismatched,
        )
    # 4. Every appraised pre-OS PCR (0-7) was closed with the separator, and never with the error one.
    separator, error = digest(bank, SEPARATOR), digest(bank, ERROR_SEPARATOR)
    for pcr in sorted(set(replayed) & set(PRE_OS_PCRS)):
        extended = [e.digest(bank) for e in log.events if e.extended and e.pcr == pcr]
        if error in extended:
            raise MissingSeparator(f"PCR {pcr}: the firmware extended the error separator", pcr=pcr)
        if separator not in extended:
            raise MissingSeparator(f"PCR {pcr}: no separator was extended", pcr=pcr)
    # 5. Only now is event data worth reporting.
    events = tuple(
        AppraisedEvent(e.number, e.offset, e.pcr, e.type, bank, e.digest(bank), e.data)
        for e in log.events
        if e.extended and e.pcr in replayed
    )
    return AppraisedLog(bank, MappingProxyType(dict(replayed)), events)
