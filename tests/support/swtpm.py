"""The test fleet's hardware: software TPMs (swtpm) with EK certificates from a manufacturer CA.

A thin Python face on the scripts in `swtpm/` (which also work by hand, see swtpm/README.md):

- `manufacturer_ca(dir, name)` makes a TPM-manufacturer CA (root + EK-issuing intermediate);
- `provision(state_dir, ca, kind)` manufactures one TPM state whose EK certificates that CA signed;
- `running_tpms(base_dir, ca, count, kind)` starts TPMs on loopback ports and always stops them.

swtpm_setup 0.7 gives every TPM an RSA-2048 EK and an ECC P-384 EK (see provision-tpm.sh); `kind`
picks the one a test treats as "the" EK, described by `EkProfile`.

Tests FAIL (never skip) when swtpm or tpm2-tools are missing: a green run must mean a real TPM
answered. Install them with `apt-get install swtpm swtpm-tools tpm2-tools`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Kind = Literal["ecc", "rsa"]

SCRIPTS = Path(__file__).resolve().parents[2] / "swtpm"
REQUIRED_TOOLS = ("swtpm", "swtpm_setup", "swtpm_localca", "tpm2_getcap", "tpm2_nvread", "openssl")

_READY_TIMEOUT = 10.0
_START_ATTEMPTS = 3


@dataclass(frozen=True)
class EkProfile:
    """Where one EK of a provisioned TPM lives (TCG EK Credential Profile 2.x indices)."""

    kind: Kind
    cert_nv_index: int  # NV index holding the DER EK certificate
    persistent_handle: int  # where swtpm_setup made the EK persistent
    createek_alg: str  # `tpm2_createek -G` value that re-derives the same EK from its template
    cert_file: str  # name swtpm_setup --write-ek-cert-files gives the certificate


EK_PROFILES: dict[Kind, EkProfile] = {
    "rsa": EkProfile("rsa", 0x01C00002, 0x81010001, "rsa", "ek-rsa2048.crt"),
    # High-range template H-3 (NIST P-384): what swtpm_setup 0.7 creates for ECC.
    "ecc": EkProfile("ecc", 0x01C00016, 0x81010016, "ecc384", "ek-secp384r1.crt"),
}
PLATFORM_CERT_NV_INDEX = 0x01C08000


@dataclass(frozen=True)
class ManufacturerCa:
    """A TPM manufacturer's CA as made by swtpm/make-manufacturer-ca.sh."""

    name: str
    dir: Path

    @property
    def root_pem(self) -> Path:
        return self.dir / "root.pem"

    @property
    def intermediate_pem(self) -> Path:
        return self.dir / "intermediate.pem"

    @property
    def intermediate_key(self) -> Path:
        return self.dir / "intermediate.key"

    @property
    def chain_pem(self) -> Path:
        """Intermediate then root."""
        return self.dir / "chain.pem"


@dataclass(frozen=True)
class TpmState:
    """A provisioned (not running) swtpm state directory."""

    state_dir: Path
    ca: ManufacturerCa
    kind: Kind

    @property
    def ek(self) -> EkProfile:
        return EK_PROFILES[self.kind]

    def ek_cert_der(self, kind: Kind | None = None) -> bytes:
        """The EK certificate swtpm_setup wrote into NV, as it also saved it to a file."""
        return (self.state_dir / "ek-certs" / EK_PROFILES[kind or self.kind].cert_file).read_bytes()


@dataclass(frozen=True)
class RunningTpm:
    """A swtpm listening on 127.0.0.1:port (commands) and :ctrl_port (control)."""

    port: int
    ctrl_port: int
    tcti: str  # for tpm2-tools (-T / TPM2TOOLS_TCTI) and tpm2-pytss
    state: TpmState
    pid: int

    @property
    def state_dir(self) -> Path:
        return self.state.state_dir

    @property
    def ek(self) -> EkProfile:
        return self.state.ek

    def env(self) -> dict[str, str]:
        """The environment for tpm2-tools, talking to this TPM."""
        return {**os.environ, "TPM2TOOLS_TCTI": self.tcti}

    def tool(self, *args: str | os.PathLike[str], cwd: Path | None = None) -> bytes:
        """Run one tpm2-tools command (e.g. "tpm2_nvread", ...) against this TPM; its stdout.

        Raises RuntimeError with the tool's stderr when it fails.
        """
        argv = [os.fspath(a) for a in args]
        result = subprocess.run(argv, env=self.env(), cwd=cwd, capture_output=True, timeout=60, check=False)
        if result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(argv)} failed ({result.returncode}) on {self.tcti}:\n"
                f"{result.stderr.decode(errors='replace')}"
            )
        return result.stdout

    def read_nv(self, index: int) -> bytes:
        """The full contents of an NV index (e.g. an EK certificate), through the TCTI."""
        # Without --size tpm2_nvread reads the whole index; without --output it writes to stdout.
        return self.tool("tpm2_nvread", f"0x{index:08x}")

    def is_running(self) -> bool:
        return _pid_is_live_swtpm(self.pid)

    def power_cycle(self) -> None:
        """Reset the TPM as a reboot of the truck does (TPM_Init on the control channel, then
        TPM2_Startup(CLEAR)): PCRs back to their start values, resetCount up by one, keys kept."""
        argv = ["swtpm_ioctl", "--tcp", f"127.0.0.1:{self.ctrl_port}", "-i"]
        result = subprocess.run(argv, capture_output=True, timeout=30, check=False)
        if result.returncode != 0:
            raise RuntimeError(
                f"swtpm_ioctl -i failed on {self.tcti}: {result.stderr.decode(errors='replace')}"
            )
        self.tool("tpm2_startup", "-c")


def require_swtpm() -> None:
    """Raise RuntimeError (so tests fail, not skip) when swtpm or tpm2-tools are missing."""
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
    if missing:
        raise RuntimeError(
            f"software-TPM tests need {', '.join(missing)} on PATH; install them with "
            "`apt-get install swtpm swtpm-tools tpm2-tools` (or `make apt`). "
            "These tests fail rather than skip so that a green run means a real TPM answered."
        )


def _run_script(name: str, *args: str | os.PathLike[str]) -> None:
    argv = [str(SCRIPTS / name), *(os.fspath(a) for a in args)]
    result = subprocess.run(argv, capture_output=True, timeout=120, check=False)
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} failed ({result.returncode}):\n"
            f"{result.stdout.decode(errors='replace')}{result.stderr.decode(errors='replace')}"
        )


def manufacturer_ca(directory: Path, name: str) -> ManufacturerCa:
    """Make (or reuse, if already made) a manufacturer CA in `directory`."""
    require_swtpm()
    _run_script("make-manufacturer-ca.sh", directory, name)
    return ManufacturerCa(name=name, dir=directory.resolve())


def provision(state_dir: Path, ca: ManufacturerCa, kind: Kind = "ecc") -> TpmState:
    """Manufacture a TPM state in `state_dir` with EK certificates signed by `ca` (idempotent)."""
    require_swtpm()
    _run_script("provision-tpm.sh", state_dir, ca.dir, kind)
    return TpmState(state_dir=state_dir.resolve(), ca=ca, kind=kind)


_NOT_COPIED = ("swtpm.pid", "swtpm.log", ".lock")


def _template(ca: ManufacturerCa, kind: Kind) -> TpmState:
    """A provisioned state per (CA, kind) that copies are made from; kept under the CA's dir.

    provision-tpm.sh is idempotent, so this is the cache: the second call costs a file check. The
    lock keeps parallel test processes from provisioning the same template at once.
    """
    templates = ca.dir / "templates"
    templates.mkdir(exist_ok=True)
    with (templates / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return provision(templates / kind, ca, kind)


def copy_state(template: TpmState, state_dir: Path) -> TpmState:
    """A copy of a provisioned state: a second TPM with the *same* EK (and EK certificate)."""
    shutil.copytree(template.state_dir, state_dir, ignore=shutil.ignore_patterns(*_NOT_COPIED))
    return TpmState(state_dir=state_dir.resolve(), ca=template.ca, kind=template.kind)


def _pid_is_live_swtpm(pid: int) -> bool:
    """True while `pid` is a swtpm that has not exited (a zombie waiting for init counts as gone)."""
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    state = stat.rpartition(")")[2].split()[0]
    return comm == "swtpm" and state != "Z"


def _port_pair_free(port: int) -> bool:
    for p in (port, port + 1):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", p))
            except OSError:
                return False
    return True


def _free_port_pair(taken: set[int]) -> int:
    """A loopback port P with P+1 also free (swtpm's command and control channels)."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        if port < 65535 and not {port, port + 1} & taken and _port_pair_free(port):
            taken.update((port, port + 1))
            return port
    raise RuntimeError("no free pair of consecutive loopback ports found")


def _log_tail(state_dir: Path, lines: int = 20) -> str:
    try:
        return "\n".join((state_dir / "swtpm.log").read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "<no swtpm.log>"


def _wait_ready(tpm: RunningTpm) -> None:
    deadline = time.monotonic() + _READY_TIMEOUT
    last = b""
    while time.monotonic() < deadline:
        if not tpm.is_running():
            break
        result = subprocess.run(
            ["tpm2_getcap", "-T", tpm.tcti, "properties-fixed"], capture_output=True, timeout=10, check=False
        )
        if result.returncode == 0:
            return
        last = result.stderr
        time.sleep(0.05)
    raise RuntimeError(
        f"swtpm on {tpm.tcti} did not answer tpm2_getcap within {_READY_TIMEOUT:.0f}s:\n"
        f"{last.decode(errors='replace')}\n{_log_tail(tpm.state_dir)}"
    )


def start(state: TpmState, taken: set[int] | None = None) -> RunningTpm:
    """Start a swtpm on `state` on free loopback ports and wait until it answers. Stop it with `stop`."""
    require_swtpm()
    taken = set() if taken is None else taken
    error: RuntimeError | None = None
    for _ in range(_START_ATTEMPTS):
        port = _free_port_pair(taken)
        try:
            # Another process may grab the ports between the probe and swtpm's bind: then retry.
            _run_script("start-tpm.sh", state.state_dir, str(port))
        except RuntimeError as exc:
            error = exc
            continue
        pid = int((state.state_dir / "swtpm.pid").read_text().strip())
        tpm = RunningTpm(port=port, ctrl_port=port + 1, tcti=f"swtpm:port={port}", state=state, pid=pid)
        try:
            _wait_ready(tpm)
        except BaseException:
            stop([tpm])
            raise
        return tpm
    raise RuntimeError(f"could not start swtpm on {state.state_dir}: {error}")


def stop(tpms: Sequence[RunningTpm]) -> None:
    """Stop TPMs (SIGTERM, wait, SIGKILL if need be) through stop-tpm.sh, all at once. Idempotent."""
    procs = [
        subprocess.Popen(
            [str(SCRIPTS / "stop-tpm.sh"), str(tpm.state_dir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for tpm in tpms
    ]
    failures = []
    for tpm, proc in zip(tpms, procs, strict=True):
        _, err = proc.communicate(timeout=30)
        if proc.returncode != 0 or tpm.is_running():
            failures.append(f"{tpm.state_dir} (pid {tpm.pid}): {err.decode(errors='replace')}")
    if failures:
        raise RuntimeError("swtpm did not stop: " + "; ".join(failures))


@contextlib.contextmanager
def running_tpms(
    base_dir: Path, ca: ManufacturerCa, count: int = 1, kind: Kind = "ecc", *, distinct: bool = False
) -> Iterator[list[RunningTpm]]:
    """Start `count` TPMs with EK certificates from `ca`, each on its own copy of a state dir.

    With distinct=False (fast) the states are copies of one provisioned template, so all the TPMs
    share one EK and EK certificate; with distinct=True each is provisioned on its own and has its
    own EK (what enrollment tests of several trucks need). All TPMs are stopped on exit, also when
    the body raises.
    """
    require_swtpm()
    base_dir.mkdir(parents=True, exist_ok=True)
    dirs = [base_dir / f"tpm-{i}" for i in range(count)]
    for d in dirs:
        if d.exists():
            raise RuntimeError(f"{d} exists already; running_tpms wants fresh state dirs")
    if distinct:
        # provision-tpm.sh is safe to run in parallel (swtpm_localca locks its serial counter).
        with ThreadPoolExecutor(max_workers=min(count, os.cpu_count() or 1) or 1) as pool:
            states = list(pool.map(lambda d: provision(d, ca, kind), dirs))
    else:
        template = _template(ca, kind)
        states = [copy_state(template, d) for d in dirs]

    started: list[RunningTpm] = []
    taken: set[int] = set()
    try:
        for state in states:
            started.append(start(state, taken))
        yield started
    finally:
        stop(started)
