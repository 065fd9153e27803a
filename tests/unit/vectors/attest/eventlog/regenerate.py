"""Record the measured-boot vectors the event-log unit tests run on, from a real swtpm.

Regenerate (needs swtpm and tpm2-tools; overwrites the files beside this script):

    .venv/bin/python -m tests.unit.vectors.attest.eventlog.regenerate

Each boot is agent.boot's simulated boot of the default release, measured by the real agent
(agent.tpm.TruckTpm) into a fresh swtpm; the PCRs are then read back from the TPM. Boots are
deterministic, so regenerating gives the same bytes (tests/integration/test_measured_boot_swtpm.py
checks that). Files written:

- boot.log                  the event log of a boot on a TPM started at locality 0
- boot-locality-3.log       the same boot after a power cycle whose TPM2_Startup came from locality 3
                            (its StartupLocality event says 3; PCR 0 starts at 00..03)
- vectors.json              per boot: log file, model, release, startup locality, and the sha256
                            PCRs 0-15 read from the TPM after the boot
"""

from __future__ import annotations

import json
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from agent.boot import BOOT_PCRS, measure_boot, truck_boot
from agent.tpm import PcrBank, TruckTpm
from tests.support.swtpm import RunningTpm, manufacturer_ca, running_tpms

HERE = Path(__file__).resolve().parent
BANK: PcrBank = "sha256"
# name -> startup locality of the TPM the boot is measured on
BOOTS = {"boot": 0, "boot-locality-3": 3}

_TPM2_STARTUP_CLEAR = bytes.fromhex("8001 0000000c 00000144 0000")  # tag, size, TPM_CC_Startup, SU_CLEAR


def power_cycle(tpm: RunningTpm, locality: int = 0) -> None:
    """Cut and restore the swtpm's power (TPM_Init) and send TPM2_Startup(CLEAR) from `locality`,
    as a platform would at reset. No TPM connection may be open. The startup goes straight to the
    command socket: the tpm2-tools swtpm TCTI would send it from locality 0."""
    control = ["swtpm_ioctl", "--tcp", f"127.0.0.1:{tpm.ctrl_port}"]
    subprocess.run([*control, "-i"], capture_output=True, timeout=30, check=True)
    subprocess.run([*control, "-l", str(locality)], capture_output=True, timeout=30, check=True)
    try:
        with socket.create_connection(("127.0.0.1", tpm.port), timeout=30) as channel:
            channel.sendall(_TPM2_STARTUP_CLEAR)
            answer = channel.recv(10)
    finally:
        subprocess.run([*control, "-l", "0"], capture_output=True, timeout=30, check=True)
    if answer[6:10] != bytes(4):
        raise RuntimeError(f"TPM2_Startup at locality {locality} answered {answer.hex()}")


def record_boot(tpm: RunningTpm, locality: int, log_path: Path) -> dict[str, Any]:
    """Boot the default release on `tpm` (whose TPM2_Startup came from `locality`); its vector."""
    boot = truck_boot(startup_locality=locality)
    with TruckTpm.open(tpm.tcti) as truck:
        measure_boot(truck, boot, (BANK,), log_path)
        pcrs = truck.pcr_read(BANK, BOOT_PCRS)
    return {
        "log": log_path.name,
        "model": boot.model,
        "release": boot.release,
        "startup_locality": locality,
        "bank": BANK,
        "pcrs": {str(p): v.hex() for p, v in sorted(pcrs.items())},
    }


def record(out_dir: Path, scratch: Path) -> None:
    """Manufacture a TPM in `scratch`, measure each boot into it, write the vectors to `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    ca = manufacturer_ca(scratch / "vector-tpm-ca", "vector-tpm")
    vectors: dict[str, Any] = {}
    with running_tpms(scratch / "tpms", ca, 1, "ecc") as (tpm,):
        for name, locality in BOOTS.items():
            power_cycle(tpm, locality)
            vectors[name] = record_boot(tpm, locality, out_dir / f"{name}.log")
    (out_dir / "vectors.json").write_text(json.dumps(vectors, indent=2) + "\n")


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="eventlog-vectors-") as scratch:
        record(HERE, Path(scratch))
    print(f"vectors written to {HERE}")


if __name__ == "__main__":
    main()
