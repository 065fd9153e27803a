"""Record the TPM vectors the attest unit tests run on, from a real swtpm.

Regenerate (needs swtpm and tpm2-tools; overwrites the files beside this script):

    .venv/bin/python -m tests.unit.vectors.attest.regenerate
    .venv/bin/python -m tests.unit.vectors.attest.regenerate --certify-only   # certify-*.json only
    .venv/bin/python -m tests.unit.vectors.attest.regenerate --quote-only     # quote-*.json only

Every run manufactures a fresh TPM (new EKs, new manufacturer CA), so the bytes change; what must
not change is their shape, which tests/integration/test_attest_swtpm.py checks by regenerating into
a scratch dir and comparing. Files written:

- root.pem, intermediate.pem     the manufacturer CA (root pinned, intermediate supplied)
- ek-rsa.der, ek-ecc.der         EK certificates read from NV 0x01c00002 / 0x01c00016
- ek-rsa.pub, ek-ecc.pub         TPM2B_PUBLIC of the EKs at 0x81010001 / 0x81010016
- ak-rsa.pub/.name               RSA-2048 RSASSA-SHA256 AK made by tpm2_createak under the RSA EK
- ak-ecc.pub/.name               P-256 ECDSA-SHA256 AK made by tpm2_createak under the P-384 EK
- credential-ecc.json            make_credential(ek-ecc, ak-ecc name, secret) with the recorded
                                 `rand` bytes, which the TPM was shown to activate before writing
- certify-ecc.json, certify-rsa.json
                                 TPM2_Certify by the real agent (agent.tpm.TruckTpm) under the P-384
                                 EK: an ECDSA-SHA256 P-256 / RSASSA-SHA256 RSA-2048 AK certifies a
                                 P-256 identity key with a random 32-byte nonce; with the AK and
                                 identity TPMT_PUBLICs and a DER CSR the identity key signed in the TPM
- meta.json                      a `now` inside every certificate's validity
- quote-ecc.json, quote-rsa.json, quote-ecc384.json
                                 TPM2_Quote by the real agent of the sha256 bank's QUOTE_PCRS after a
                                 simulated boot, by a P-256 ECDSA-SHA256 / RSA-2048 RSASSA-SHA256 /
                                 P-384 ECDSA-SHA384 AK under the P-384 EK, once per QUOTE_STEPS
                                 (boot, same-boot, resume, reboot, power-loss: see `lifecycle`), each
                                 with its random nonce and the PCR values read just before
- quote-sha1.json                the same quote (boot only) by an AK pinned to ECDSA-SHA1 (made with
                                 tpm2-tools under an owner primary): a real SHA-1 signature

The helpers here (create_ak, activate, tpm2-tools credential file) are shared with the integration
tests.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from agent.tpm import AkAlgorithm, KeySpec, PcrBank, TruckTpm
from attest.credential import MadeCredential, make_credential
from attest.public import ObjectAttributes, TpmtPublic, parse_tpm2b_public
from tests.support.swtpm import EK_PROFILES, Kind, RunningTpm, manufacturer_ca, running_tpms

HERE = Path(__file__).resolve().parent

# tpm2-tools' credential file (tpm2_makecredential -o / tpm2_activatecredential -i):
# u32 magic 0xBADCC0DE, u32 version 1, TPM2B_ID_OBJECT, TPM2B_ENCRYPTED_SECRET, all big-endian.
CREDENTIAL_MAGIC = 0xBADCC0DE
CREDENTIAL_VERSION = 1

AK_ARGS: dict[Kind, tuple[str, ...]] = {
    "rsa": ("-G", "rsa", "-g", "sha256", "-s", "rsassa"),
    "ecc": ("-G", "ecc", "-g", "sha256", "-s", "ecdsa"),
}


def tpm2_tools_credential(made: MadeCredential) -> bytes:
    def tpm2b(data: bytes) -> bytes:
        return struct.pack(">H", len(data)) + data

    header = struct.pack(">II", CREDENTIAL_MAGIC, CREDENTIAL_VERSION)
    return header + tpm2b(made.credential_blob) + tpm2b(made.encrypted_secret)


def read_ek_public(tpm: RunningTpm, kind: Kind, out: Path) -> bytes:
    """The EK's TPM2B_PUBLIC (tpm2_readpublic -o writes TPM2B_PUBLIC unless -f tpmt is given)."""
    tpm.tool("tpm2_readpublic", "-c", f"0x{EK_PROFILES[kind].persistent_handle:08x}", "-o", out)
    return out.read_bytes()


@dataclass(frozen=True)
class MadeAk:
    context: Path  # saved context (tpm2_createak -c); loadable after the transient is flushed
    public: bytes  # TPM2B_PUBLIC
    name: bytes  # the name tpm2-tools wrote


def create_ak(tpm: RunningTpm, ek_kind: Kind, ak_kind: Kind, workdir: Path) -> MadeAk:
    """tpm2_createak under the persistent EK; flushes transients (swtpm has no resource manager)."""
    stem = workdir / f"ak-{ak_kind}-under-{ek_kind}"
    ctx, pub, name = (stem.with_suffix(s) for s in (".ctx", ".pub", ".name"))
    try:
        tpm.tool(
            "tpm2_createak",
            "-C",
            f"0x{EK_PROFILES[ek_kind].persistent_handle:08x}",
            "-c",
            ctx,
            *AK_ARGS[ak_kind],
            "-u",
            pub,
            "-n",
            name,
        )
    finally:
        tpm.tool("tpm2_flushcontext", "-t")
    return MadeAk(ctx, pub.read_bytes(), name.read_bytes())


def activate(
    tpm: RunningTpm, ek_kind: Kind, ek: TpmtPublic, ak: MadeAk, credential: bytes, workdir: Path
) -> bytes:
    """tpm2_activatecredential on the real TPM; the recovered secret.

    The RSA EK (template L-1) has userWithAuth clear, so its USER role needs a policy session
    satisfying its authPolicy, PolicySecret(TPM_RH_ENDORSEMENT); the P-384 EK (template H-3) has
    userWithAuth set, so the empty password will do.
    """
    cred = workdir / f"cred-{ek_kind}.out"
    out = workdir / f"secret-{ek_kind}.out"
    session = workdir / f"session-{ek_kind}.ctx"
    cred.write_bytes(credential)
    out.unlink(missing_ok=True)
    ek_handle = f"0x{EK_PROFILES[ek_kind].persistent_handle:08x}"
    try:
        if ek.has(ObjectAttributes.USER_WITH_AUTH):
            tpm.tool("tpm2_activatecredential", "-c", ak.context, "-C", ek_handle, "-i", cred, "-o", out)
        else:
            tpm.tool("tpm2_startauthsession", "--policy-session", "-S", session)
            try:
                tpm.tool("tpm2_policysecret", "-S", session, "-c", "e")
                tpm.tool(
                    "tpm2_activatecredential",
                    "-c",
                    ak.context,
                    "-C",
                    ek_handle,
                    "-i",
                    cred,
                    "-o",
                    out,
                    "-P",
                    f"session:{session}",
                )
            finally:
                # A failed ActivateCredential keeps the session loaded; a successful one (no
                # continueSession) has flushed it, so the explicit flush may fail: ignore that.
                if session.exists():
                    tpm.tool("tpm2_flushcontext", "-l")
    finally:
        tpm.tool("tpm2_flushcontext", "-t")
    return out.read_bytes()


class RecordingRand:
    """`rand` for make_credential that draws from os.urandom and records what it handed out."""

    def __init__(self, source: Callable[[int], bytes]) -> None:
        self._source = source
        self.drawn = b""

    def __call__(self, n: int) -> bytes:
        out = self._source(n)
        self.drawn += out
        return out


class ReplayRand:
    """`rand` that replays recorded bytes and fails if asked for more or fewer."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def __call__(self, n: int) -> bytes:
        if n > len(self._data):
            raise AssertionError("make_credential asked for more randomness than was recorded")
        out, self._data = self._data[:n], self._data[n:]
        return out

    @property
    def exhausted(self) -> bool:
        return not self._data


CERTIFY_VECTORS: dict[str, AkAlgorithm] = {"certify-ecc.json": "ecc-p256", "certify-rsa.json": "rsa-2048"}


def record_certify(tpm: RunningTpm, ek_kind: Kind, ak_algorithm: AkAlgorithm) -> dict[str, str]:
    """The agent's enrollment evidence: AK, identity key, Certify over a fresh nonce, CSR (all hex)."""
    nonce = os.urandom(32)
    with TruckTpm.open(tpm.tcti) as truck:
        ak = truck.create_attestation_key(ek_kind, ak_algorithm)
        identity = truck.create_identity_key(ek_kind)
        attest, signature = truck.certify(identity, ak, nonce)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "truck-vector")])
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(subject)
            .sign(truck.identity_signer(identity), hashes.SHA256())
        )
    return {
        "nonce": nonce.hex(),
        "ak_public": ak.public.hex(),
        "identity_public": identity.public.hex(),
        "attest": attest.hex(),
        "signature": signature.hex(),
        "csr": csr.public_bytes(serialization.Encoding.DER).hex(),
    }


def write_certify_vectors(tpm: RunningTpm, out_dir: Path) -> None:
    for file_name, ak_algorithm in CERTIFY_VECTORS.items():
        vector = record_certify(tpm, "ecc", ak_algorithm)
        (out_dir / file_name).write_text(json.dumps(vector, indent=2) + "\n")


def record_certify_only(out_dir: Path, scratch: Path) -> None:
    """Write only the certify-*.json vectors, from a freshly manufactured TPM."""
    out_dir.mkdir(parents=True, exist_ok=True)
    ca = manufacturer_ca(scratch / "vector-tpm-ca", "vector-tpm")
    with running_tpms(scratch / "tpms", ca, 1, "ecc") as (tpm,):
        write_certify_vectors(tpm, out_dir)


# --- quote vectors ------------------------------------------------------------------------------

QUOTE_VECTORS: dict[str, KeySpec] = {
    "quote-ecc.json": KeySpec.attestation_key("ecc-p256"),
    "quote-rsa.json": KeySpec.attestation_key("rsa-2048"),
    # Pinned to ECDSA-SHA384: its pcrDigest is SHA-384 over the sha256 bank's values.
    "quote-ecc384.json": KeySpec(algorithm="ecc-p384"),
}
SHA1_QUOTE_VECTOR = "quote-sha1.json"
QUOTE_BANK: PcrBank = "sha256"
# Spans two bitmap bytes; PCR 14 is never extended, so one quoted value is all zeros.
QUOTE_PCRS = (0, 1, 2, 3, 7, 8, 9, 14)
# The simulated boot: (PCR, component), each extended as SHA-256(component).
BOOT_EVENTS: tuple[tuple[int, bytes], ...] = (
    (0, b"truck firmware 4.2.0"),
    (1, b"firmware configuration"),
    (2, b"option ROMs"),
    (3, b"option ROM configuration"),
    (7, b"secure boot policy"),
    (8, b"bootloader"),
    (9, b"kernel"),
)
# The TPM's life before each recorded quote, in order (see `lifecycle`).
QUOTE_STEPS = ("boot", "same-boot", "resume", "reboot", "power-loss")


def swtpm_init(tpm: RunningTpm) -> None:
    """Cut and restore the swtpm's power (CMD_INIT on the control channel): TPM2_Startup is next."""
    subprocess.run(
        ["swtpm_ioctl", "--tcp", f"127.0.0.1:{tpm.ctrl_port}", "-i"],
        capture_output=True,
        timeout=30,
        check=True,
    )


def extend_boot(truck: TruckTpm, events: tuple[tuple[int, bytes], ...] = BOOT_EVENTS) -> None:
    for pcr, component in events:
        truck.pcr_extend(pcr, {QUOTE_BANK: hashlib.sha256(component).digest()})


def lifecycle(tpm: RunningTpm, step: str) -> None:
    """Take the TPM to `step` (no TPM connection may be open):

    boot        as started (TPM2_Startup(CLEAR) done), then the boot events extended
    same-boot   one more event (PCR 9) in the same boot
    resume      TPM2_Shutdown(STATE), power cycle, TPM2_Startup(STATE): restartCount + 1, PCRs kept
    reboot      TPM2_Shutdown(CLEAR), power cycle, TPM2_Startup(CLEAR): resetCount + 1, boot again
    power-loss  power cycle with no shutdown, TPM2_Startup(CLEAR): resetCount + 1, safe = NO
    """
    if step == "resume":
        tpm.tool("tpm2_shutdown")
        swtpm_init(tpm)
        tpm.tool("tpm2_startup")
        return
    if step == "reboot":
        tpm.tool("tpm2_shutdown", "-c")
    if step in ("reboot", "power-loss"):
        swtpm_init(tpm)
        tpm.tool("tpm2_startup", "-c")
    with TruckTpm.open(tpm.tcti) as truck:
        if step == "same-boot":
            extend_boot(truck, ((9, b"autonomy stack 7.1"),))
        else:
            extend_boot(truck)


def quote_entry(
    step: str, nonce: bytes, values: dict[int, bytes], attest: bytes, sig: bytes
) -> dict[str, object]:
    return {
        "step": step,
        "nonce": nonce.hex(),
        "pcr_values": {str(pcr): value.hex() for pcr, value in sorted(values.items())},
        "attest": attest.hex(),
        "signature": sig.hex(),
    }


def sha1_quote(tpm: RunningTpm, nonce: bytes, workdir: Path) -> tuple[bytes, bytes, bytes]:
    """A quote by an AK pinned to ECDSA-SHA1: (TPMT_PUBLIC, TPMS_ATTEST, TPMT_SIGNATURE).

    The agent only makes SHA-256/384 AKs, so this one is made with tpm2-tools under an owner
    primary (its parent does not matter to a quote). Transients are flushed after every tool.
    """
    primary, public, private, context = (workdir / f"sha1-ak.{s}" for s in ("primary", "pub", "priv", "ctx"))
    message, signature = workdir / "sha1-quote.msg", workdir / "sha1-quote.sig"
    attributes = "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|sign"
    selection = f"{QUOTE_BANK}:{','.join(str(p) for p in QUOTE_PCRS)}"
    steps: tuple[tuple[str | os.PathLike[str], ...], ...] = (
        ("tpm2_createprimary", "-C", "o", "-c", primary),
        (
            "tpm2_create",
            "-C",
            primary,
            "-G",
            "ecc256:ecdsa-sha1:null",
            "-a",
            attributes,
            "-u",
            public,
            "-r",
            private,
        ),
        ("tpm2_load", "-C", primary, "-u", public, "-r", private, "-c", context),
        (
            "tpm2_quote",
            "-c",
            context,
            "-l",
            selection,
            "-q",
            nonce.hex(),
            "-g",
            "sha1",
            "-m",
            message,
            "-s",
            signature,
        ),
    )
    try:
        for argv in steps:
            tpm.tool(*argv)
            tpm.tool("tpm2_flushcontext", "-t")
    finally:
        tpm.tool("tpm2_flushcontext", "-t")
    # tpm2_create -u writes TPM2B_PUBLIC; the vectors hold the bare TPMT_PUBLIC.
    return public.read_bytes()[2:], message.read_bytes(), signature.read_bytes()


def write_quote_vectors(tpm: RunningTpm, out_dir: Path, scratch: Path) -> None:
    """Record QUOTE_VECTORS over QUOTE_STEPS, and the SHA-1 quote after the first step."""
    with TruckTpm.open(tpm.tcti) as truck:
        aks = {name: truck.create_key("ecc", spec) for name, spec in QUOTE_VECTORS.items()}
    ak_publics = {name: blob.public for name, blob in aks.items()}
    quotes: dict[str, list[dict[str, object]]] = {name: [] for name in [*QUOTE_VECTORS, SHA1_QUOTE_VECTOR]}
    for step in QUOTE_STEPS:
        lifecycle(tpm, step)
        with TruckTpm.open(tpm.tcti) as truck:
            values = truck.pcr_read(QUOTE_BANK, QUOTE_PCRS)
            for name, ak in aks.items():
                nonce = os.urandom(32)
                attest, sig = truck.quote(ak, nonce, QUOTE_BANK, QUOTE_PCRS)
                quotes[name].append(quote_entry(step, nonce, values, attest, sig))
        if step == "boot":
            nonce = os.urandom(32)
            ak_publics[SHA1_QUOTE_VECTOR], attest, sig = sha1_quote(tpm, nonce, scratch)
            quotes[SHA1_QUOTE_VECTOR].append(quote_entry(step, nonce, values, attest, sig))
    for name, entries in quotes.items():
        vector = {
            "ak_public": ak_publics[name].hex(),
            "bank": QUOTE_BANK,
            "pcrs": list(QUOTE_PCRS),
            "quotes": entries,
        }
        (out_dir / name).write_text(json.dumps(vector, indent=2) + "\n")


def record_quote_only(out_dir: Path, scratch: Path) -> None:
    """Write only the quote-*.json vectors, from a freshly manufactured TPM."""
    out_dir.mkdir(parents=True, exist_ok=True)
    ca = manufacturer_ca(scratch / "vector-tpm-ca", "vector-tpm")
    with running_tpms(scratch / "tpms", ca, 1, "ecc") as (tpm,):
        write_quote_vectors(tpm, out_dir, scratch)


def record(out_dir: Path, scratch: Path) -> None:
    """Manufacture a TPM in `scratch` and write every vector into `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    ca = manufacturer_ca(scratch / "vector-tpm-ca", "vector-tpm")
    with running_tpms(scratch / "tpms", ca, 1, "ecc") as (tpm,):
        (out_dir / "root.pem").write_bytes(ca.root_pem.read_bytes())
        (out_dir / "intermediate.pem").write_bytes(ca.intermediate_pem.read_bytes())
        certs = []
        eks: dict[Kind, TpmtPublic] = {}
        aks: dict[Kind, MadeAk] = {}
        for kind in ("rsa", "ecc"):
            der = tpm.read_nv(EK_PROFILES[kind].cert_nv_index)
            (out_dir / f"ek-{kind}.der").write_bytes(der)
            certs.append(x509.load_der_x509_certificate(der))
            eks[kind] = parse_tpm2b_public(read_ek_public(tpm, kind, out_dir / f"ek-{kind}.pub"))
            aks[kind] = create_ak(tpm, kind, kind, scratch)
            (out_dir / f"ak-{kind}.pub").write_bytes(aks[kind].public)
            (out_dir / f"ak-{kind}.name").write_bytes(aks[kind].name)

        secret = bytes(range(32))
        rand = RecordingRand(os.urandom)
        made = make_credential(eks["ecc"], aks["ecc"].name, secret, rand=rand)
        recovered = activate(tpm, "ecc", eks["ecc"], aks["ecc"], tpm2_tools_credential(made), scratch)
        if recovered != secret:
            raise RuntimeError("the TPM did not recover the recorded credential secret")
        vector = {
            "ek": "ek-ecc.pub",
            "object_name": aks["ecc"].name.hex(),
            "secret": secret.hex(),
            "rand": rand.drawn.hex(),
            "credential_blob": made.credential_blob.hex(),
            "encrypted_secret": made.encrypted_secret.hex(),
        }
        (out_dir / "credential-ecc.json").write_text(json.dumps(vector, indent=2) + "\n")

        write_certify_vectors(tpm, out_dir)
        # Last: the quote recording power-cycles the TPM.
        write_quote_vectors(tpm, out_dir, scratch)

    chain = [
        *certs,
        *(x509.load_pem_x509_certificate(p.read_bytes()) for p in (ca.root_pem, ca.intermediate_pem)),
    ]
    start = max(c.not_valid_before_utc for c in chain)
    meta = {"now": (start + timedelta(days=1)).isoformat()}
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")


def main() -> None:
    """Write every vector; with `--certify-only` / `--quote-only`, only the certify-* / quote-* ones."""
    with tempfile.TemporaryDirectory(prefix="attest-vectors-") as scratch:
        if "--certify-only" in sys.argv[1:]:
            record_certify_only(HERE, Path(scratch))
        elif "--quote-only" in sys.argv[1:]:
            record_quote_only(HERE, Path(scratch))
        else:
            record(HERE, Path(scratch))
    print(f"vectors written to {HERE}")


if __name__ == "__main__":
    main()
