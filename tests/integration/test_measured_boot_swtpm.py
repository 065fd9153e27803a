"""Measured boot on a real swtpm: agent.boot extends the TPM and writes the event log, attest parses
and replays it, and tpm2-tools' own event-log reader agrees about the format.

A reboot is a real one: TPM_Init on swtpm's control channel then TPM2_Startup(CLEAR), so the PCRs
start again (from 00..03 in PCR 0 when the startup came from locality 3).
"""

from __future__ import annotations

import hashlib
import re
import subprocess
from pathlib import Path

import pytest

from agent.boot import BOOT_PCRS, MeasuredBoot, TruckBoot, measure_boot, truck_boot
from agent.tpm import TruckTpm
from attest.alg import Alg
from attest.errors import EventLogReplayMismatch
from attest.eventlog import EventLog, parse_event_log
from attest.replay import appraise_event_log, replay
from tests.support.swtpm import RunningTpm
from tests.unit.vectors.attest.eventlog.regenerate import HERE, power_cycle, record

pytestmark = pytest.mark.integration


def boot_and_read(tpm: RunningTpm, boot: TruckBoot, log_path: Path) -> tuple[MeasuredBoot, dict[int, bytes]]:
    """Measure `boot` into the TPM as the agent does, then read PCRs 0-15 back from it."""
    with TruckTpm.open(tpm.tcti) as truck:
        measured = measure_boot(truck, boot, ("sha256",), log_path)
        return measured, truck.pcr_read("sha256", BOOT_PCRS)


def test_boot_replays_to_exactly_the_tpm_pcrs(tpm: RunningTpm, tmp_path: Path) -> None:
    boot = truck_boot()
    measured, pcrs = boot_and_read(tpm, boot, tmp_path / "boot.log")
    assert (tmp_path / "boot.log").read_bytes() == measured.log
    log = parse_event_log((tmp_path / "boot.log").read_bytes())
    assert replay(log, Alg.SHA256, BOOT_PCRS) == pcrs
    assert boot.expected_pcrs("sha256") == pcrs  # the golden values, computed without a TPM
    appraised = appraise_event_log(log, Alg.SHA256, pcrs)
    assert {e.pcr for e in appraised.events} == set(BOOT_PCRS)
    assert len(set(pcrs.values())) == 15  # PCR 3 and 6 hold only a separator: equal, the rest differ


@pytest.mark.parametrize(
    "component", ["firmware", "secure-boot-db", "bootloader", "kernel", "vehicle-config"]
)
def test_modified_component_changes_its_pcr_and_its_log_replays_again(
    tpm: RunningTpm, tmp_path: Path, component: str
) -> None:
    good, good_pcrs = boot_and_read(tpm, truck_boot(), tmp_path / "good.log")
    power_cycle(tpm)
    modified_boot = truck_boot(overrides={component: b"tampered " + component.encode()})
    modified, pcrs = boot_and_read(tpm, modified_boot, tmp_path / "modified.log")

    (pcr,) = {c.pcr for c in modified_boot.components() if c.name == component}
    assert [p for p in BOOT_PCRS if pcrs[p] != good_pcrs[p]] == [pcr]
    # The modified boot's own log explains the TPM again...
    assert appraise_event_log(parse_event_log(modified.log), Alg.SHA256, pcrs).pcr_values == pcrs
    # ...and the good release's log no longer does, for that PCR alone.
    with pytest.raises(EventLogReplayMismatch) as caught:
        appraise_event_log(parse_event_log(good.log), Alg.SHA256, pcrs)
    assert caught.value.pcrs == (pcr,)


def test_startup_from_locality_3_is_in_the_log(tpm: RunningTpm, tmp_path: Path) -> None:
    power_cycle(tpm, locality=3)
    with TruckTpm.open(tpm.tcti) as truck:
        assert truck.pcr_read("sha256", [0])[0] == bytes(31) + b"\x03"
    measured, pcrs = boot_and_read(tpm, truck_boot(startup_locality=3), tmp_path / "boot.log")
    log = parse_event_log(measured.log)
    assert log.startup_locality == 3
    assert appraise_event_log(log, Alg.SHA256, pcrs).pcr_values == pcrs
    # The same measurements logged as a locality-0 startup miss PCR 0's initial value.
    with pytest.raises(EventLogReplayMismatch) as caught:
        appraise_event_log(parse_event_log(truck_boot().event_log()), Alg.SHA256, pcrs)
    assert caught.value.pcrs == (0,)


# --- tpm2_eventlog: a real client reading the agent's log --------------------------------------


def tpm2_tools_version() -> tuple[int, ...]:
    out = subprocess.run(["tpm2_eventlog", "--version"], capture_output=True, text=True, check=True).stdout
    found = re.search(r'version="(\d+)\.(\d+)', out)
    assert found, out
    return tuple(int(n) for n in found.groups())


def pcr0_extending_no_action(log: EventLog) -> bytes:
    """PCR 0 as tpm2-tools before 5.6 computes it: it also extends EV_NO_ACTION records' zero
    digests (tpm2-software/tpm2-tools issue 3224, fixed by pull request 3230)."""
    value = bytes(32)
    for event in log.events:
        if event.pcr == 0:
            value = hashlib.sha256(value + event.digest(Alg.SHA256)).digest()
    return value


def test_tpm2_eventlog_reads_the_agents_log(tpm: RunningTpm, tmp_path: Path) -> None:
    _, pcrs = boot_and_read(tpm, truck_boot(), tmp_path / "boot.log")
    result = subprocess.run(
        ["tpm2_eventlog", str(tmp_path / "boot.log")], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    log = parse_event_log((tmp_path / "boot.log").read_bytes())

    # Every record, in order, with our PCR index and type; the Spec ID event as we declared it.
    listed = re.findall(r"PCRIndex: (\d+)\n\s+EventType: (\w+)", out)
    assert listed == [("0", "EV_NO_ACTION")] + [(str(e.pcr), e.type_name) for e in log.events]
    assert "Signature: Spec ID Event03" in out
    assert re.search(r"algorithmId: sha256\n\s+digestSize: 32", out)
    assert "UnicodeName: SecureBoot" in out
    assert "kernel_cmdline: /vmlinuz root=PARTLABEL=rootfs_a" in out

    # Its replay: the TPM's values (PCR 0 too, but for the EV_NO_ACTION bug of older tpm2-tools).
    theirs = {
        int(p): bytes.fromhex(v) for p, v in re.findall(r"^\s+(\d+)\s*: 0x([0-9A-Fa-f]{64})$", out, re.M)
    }
    assert set(theirs) == set(BOOT_PCRS)
    assert {p: theirs[p] for p in BOOT_PCRS if p} == {p: pcrs[p] for p in BOOT_PCRS if p}
    expected_pcr0 = pcrs[0] if tpm2_tools_version() >= (5, 6) else pcr0_extending_no_action(log)
    assert theirs[0] == expected_pcr0


# --- the recorded vectors ------------------------------------------------------------------------


def test_regenerating_the_vectors_changes_nothing(tmp_path: Path) -> None:
    """tests/unit/vectors/attest/eventlog come from a real TPM; a fresh one gives the same bytes."""
    fresh = tmp_path / "vectors"
    record(fresh, tmp_path / "scratch")
    recorded = sorted(p.name for p in HERE.iterdir() if p.suffix != ".py" and p.is_file())
    assert sorted(p.name for p in fresh.iterdir()) == recorded
    for name in recorded:
        assert (fresh / name).read_bytes() == (HERE / name).read_bytes(), name
