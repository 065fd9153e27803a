"""Record the TPM vectors the attest unit tests run on, from a real swtpm.

Regenerate (needs swtpm and tpm2-tools; overwrites the files beside this script):

    .venv/bin/python -m tests.unit.vectors.attest.regenerate
    .venv/bin/python -m tests.unit.vectors.attest.regenerate --certify-only   # certify-*.json only

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

The helpers here (create_ak, activate, tpm2-tools credential file) are shared with the integration
tests.
"""

from __future__ import annotations

import json
import os
import struct
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from agent.tpm import AkAlgorithm, TruckTpm
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

    chain = [
        *certs,
        *(x509.load_pem_x509_certificate(p.read_bytes()) for p in (ca.root_pem, ca.intermediate_pem)),
    ]
    start = max(c.not_valid_before_utc for c in chain)
    meta = {"now": (start + timedelta(days=1)).isoformat()}
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")


def main() -> None:
    """Write every vector; with `--certify-only`, only the certify-*.json ones."""
    with tempfile.TemporaryDirectory(prefix="attest-vectors-") as scratch:
        if "--certify-only" in sys.argv[1:]:
            record_certify_only(HERE, Path(scratch))
        else:
            record(HERE, Path(scratch))
    print(f"vectors written to {HERE}")


if __name__ == "__main__":
    main()
