"""attest.quote on quotes the real agent makes on software TPMs, cross-checked with tpm2_checkquote.

The truck side is agent.tpm.TruckTpm on swtpm: an AK under the EK, the simulated boot of
regenerate.py (BOOT_EVENTS into the sha256 bank), PCR_Read, TPM2_Quote over a fresh nonce. The
authority side is attest only: check_attestation_key at enrollment, then verify_quote. Lifecycle
steps (resume, reboot, power loss) drive the swtpm through its control channel.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from agent.state import KeyBlob
from agent.tpm import KeySpec, TruckTpm
from attest.ak import VerifiedAk, check_attestation_key
from attest.alg import Alg
from attest.attestation import QuoteInfo, parse_tpms_attest
from attest.errors import (
    AkUnsupportedScheme,
    BadAttestSignature,
    ClockWentBackwards,
    PcrDigestMismatch,
    PcrSelectionMismatch,
    QualifyingDataMismatch,
    SignatureSchemeMismatch,
)
from attest.public import parse_tpmt_public
from attest.quote import BootTransition, PcrRequest, QuoteClock, QuoteWarning, VerifiedQuote, verify_quote
from tests.support.swtpm import RunningTpm
from tests.unit.vectors.attest.load import QUOTE_KINDS, QUOTE_STEPS
from tests.unit.vectors.attest.regenerate import (
    HERE,
    QUOTE_BANK,
    QUOTE_PCRS,
    extend_boot,
    lifecycle,
    record_quote_only,
    sha1_quote,
)
from tests.unit.vectors.attest.regenerate import QUOTE_STEPS as REGENERATED_STEPS

pytestmark = pytest.mark.integration

SHA256 = PcrRequest(Alg.SHA256, QUOTE_PCRS)
# (KeySpec, the AK's signing hash as tpm2_checkquote -g names it)
AKS: dict[str, tuple[KeySpec, str]] = {
    "ecc-p256": (KeySpec.attestation_key("ecc-p256"), "sha256"),
    "rsa-2048": (KeySpec.attestation_key("rsa-2048"), "sha256"),
    "ecc-p384": (KeySpec(algorithm="ecc-p384"), "sha384"),
}


@pytest.fixture(params=["tpm", "rsa_tpm"])
def any_tpm(request: pytest.FixtureRequest) -> RunningTpm:
    """Once with the ECC (P-384) EK as the truck's EK and once with the RSA-2048 EK."""
    running: RunningTpm = request.getfixturevalue(request.param)
    return running


@dataclass(frozen=True)
class Quote:
    """What a truck sends to attest: quote, signature, the PCR values it read, for this nonce."""

    nonce: bytes
    pcr_values: dict[int, bytes]
    attest: bytes
    signature: bytes


def make_ak(tpm: RunningTpm, spec: KeySpec) -> tuple[KeyBlob, VerifiedAk]:
    """An AK under the truck's EK, and what the authority enrolled for it."""
    with TruckTpm.open(tpm.tcti) as truck:
        blob = truck.create_key(tpm.ek.kind, spec)
    return blob, check_attestation_key(parse_tpmt_public(blob.public))


def take_quote(tpm: RunningTpm, ak: KeyBlob, pcrs: tuple[int, ...] = QUOTE_PCRS) -> Quote:
    nonce = os.urandom(32)
    with TruckTpm.open(tpm.tcti) as truck:
        values = truck.pcr_read(QUOTE_BANK, pcrs)
        attest, signature = truck.quote(ak, nonce, QUOTE_BANK, pcrs)
    return Quote(nonce, values, attest, signature)


def boot(tpm: RunningTpm) -> None:
    with TruckTpm.open(tpm.tcti) as truck:
        extend_boot(truck)


def verify(
    q: Quote, ak: VerifiedAk, previous: QuoteClock | None = None, selection: PcrRequest = SHA256
) -> VerifiedQuote:
    return verify_quote(
        q.attest,
        q.signature,
        ak=ak,
        nonce=q.nonce,
        selection=selection,
        pcr_values=q.pcr_values,
        previous=previous,
    )


@pytest.mark.parametrize("algorithm", AKS)
def test_quote_verifies(any_tpm: RunningTpm, algorithm: str) -> None:
    blob, ak = make_ak(any_tpm, AKS[algorithm][0])
    boot(any_tpm)
    q = take_quote(any_tpm, blob)
    verified = verify(q, ak)
    assert dict(verified.pcr_values) == q.pcr_values
    assert q.pcr_values[0] != bytes(32)  # the boot was measured
    assert verified.transition is BootTransition.FIRST
    assert verified.safe
    assert verified.warnings == ()
    # pcrDigest is the AK's signing hash over the sha256 bank's values, in PCR order.
    concatenated = b"".join(q.pcr_values[p] for p in QUOTE_PCRS)
    assert verified.pcr_digest == hashlib.new(AKS[algorithm][1], concatenated).digest()


def test_quote_by_another_trucks_ak_is_refused(tpm: RunningTpm, rsa_tpm: RunningTpm) -> None:
    # Two trucks (two TPMs), both with P-256 AKs: truck B's quote checked against truck A's AK.
    _, ak_a = make_ak(tpm, KeySpec.attestation_key("ecc-p256"))
    blob_b, ak_b = make_ak(rsa_tpm, KeySpec.attestation_key("ecc-p256"))
    q = take_quote(rsa_tpm, blob_b)
    verify(q, ak_b)
    with pytest.raises(BadAttestSignature):
        verify(q, ak_a)


def test_quote_by_another_ak_of_the_same_tpm_is_refused(tpm: RunningTpm) -> None:
    blob, _ = make_ak(tpm, KeySpec.attestation_key("ecc-p256"))
    _, enrolled = make_ak(tpm, KeySpec.attestation_key("ecc-p256"))
    with pytest.raises(BadAttestSignature):
        verify(take_quote(tpm, blob), enrolled)


def tpm2_tools_pcrs(values: dict[int, bytes]) -> bytes:
    """`values` (sha256 bank) in tpm2-tools' "serialized" PCR file (tpm2_pcrread/tpm2_quote -F
    serialized): the host C structs, little-endian and padded: TPML_PCR_SELECTION (u32 count, 16
    TPMS_PCR_SELECTION of hash u16, sizeofSelect u8, pcrSelect[4], 1 pad byte), a u32 count of
    TPML_DIGEST, then each TPML_DIGEST (u32 count, 8 TPM2B_DIGEST of u16 size and 64 bytes).

    tpm2_checkquote 5.4's other input, raw values with -l, drops the 8th value of a selection (it
    starts a new TPML_DIGEST without counting the 8th), so 8 or more PCRs need this format.
    """
    pcrs = sorted(values)
    bitmap = bytearray(4)
    for pcr in pcrs:
        bitmap[pcr // 8] |= 1 << (pcr % 8)
    out = struct.pack("<IHB4sx", 1, Alg.SHA256, 3, bytes(bitmap)) + bytes(8 * 15)
    chunks = [pcrs[i : i + 8] for i in range(0, len(pcrs), 8)]
    out += struct.pack("<I", len(chunks))
    for chunk in chunks:
        digests = [struct.pack("<H", len(values[p])) + values[p].ljust(64, b"\0") for p in chunk]
        out += struct.pack("<I", len(chunk)) + b"".join(digests) + bytes(66 * (8 - len(chunk)))
    return out


def checkquote(workdir: Path, ak: VerifiedAk, q: Quote, hash_name: str) -> subprocess.CompletedProcess[bytes]:
    """tpm2_checkquote on the quote as the authority received it (no TPM involved)."""
    pem = ak.key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    files = {
        "ak.pem": pem,
        "quote.msg": q.attest,
        "quote.sig": q.signature,
        "pcrs.bin": tpm2_tools_pcrs(q.pcr_values),
    }
    for name, data in files.items():
        (workdir / name).write_bytes(data)
    argv = [
        "tpm2_checkquote",
        "-u", str(workdir / "ak.pem"),
        "-m", str(workdir / "quote.msg"),
        "-s", str(workdir / "quote.sig"),
        "-f", str(workdir / "pcrs.bin"),
        "-q", q.nonce.hex(),
        "-g", hash_name,
    ]  # fmt: skip
    return subprocess.run(argv, capture_output=True, timeout=60, check=False)


@pytest.mark.parametrize("algorithm", AKS)
def test_accepted_quote_is_accepted_by_tpm2_checkquote(
    tpm: RunningTpm, tmp_path: Path, algorithm: str
) -> None:
    spec, hash_name = AKS[algorithm]
    blob, ak = make_ak(tpm, spec)
    boot(tpm)
    q = take_quote(tpm, blob)
    verify(q, ak)
    result = checkquote(tmp_path, ak, q, hash_name)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    # The PCR file is byte for byte what tpm2_pcrread writes for the same selection and values.
    pcrread = tmp_path / "pcrread.bin"
    selection = f"{QUOTE_BANK}:{','.join(str(p) for p in QUOTE_PCRS)}"
    tpm.tool("tpm2_pcrread", selection, "-F", "serialized", "-o", pcrread)
    assert pcrread.read_bytes() == (tmp_path / "pcrs.bin").read_bytes()


def test_wrong_pcr_value_or_nonce_is_refused_by_both(tpm: RunningTpm, tmp_path: Path) -> None:
    # Negative controls: tpm2_checkquote really compares values and nonce, as verify_quote does.
    blob, ak = make_ak(tpm, KeySpec.attestation_key("ecc-p256"))
    boot(tpm)
    good = take_quote(tpm, blob)
    bad_value = Quote(good.nonce, {**good.pcr_values, 7: bytes(32)}, good.attest, good.signature)
    with pytest.raises(PcrDigestMismatch):
        verify(bad_value, ak)
    assert checkquote(tmp_path, ak, bad_value, "sha256").returncode != 0
    bad_nonce = Quote(os.urandom(32), good.pcr_values, good.attest, good.signature)
    with pytest.raises(QualifyingDataMismatch):
        verify(bad_nonce, ak)
    assert checkquote(tmp_path, ak, bad_nonce, "sha256").returncode != 0
    assert checkquote(tmp_path, ak, good, "sha256").returncode == 0


def test_quote_of_other_pcrs_relabelled_is_refused(tpm: RunningTpm) -> None:
    # CVE-2024-29039 class on a real TPM: asked for PCRs 0 and 7, the truck quotes 0 and 16 (the
    # debug PCR anyone may reset and extend), and labels PCR 16's value as PCR 7's. The signature
    # and pcrDigest are genuine; only the signed selection gives it away.
    blob, ak = make_ak(tpm, KeySpec.attestation_key("ecc-p256"))
    boot(tpm)
    with TruckTpm.open(tpm.tcti) as truck:
        truck.pcr_extend(16, {QUOTE_BANK: hashlib.sha256(b"forged secure boot policy").digest()})
    q = take_quote(tpm, blob, (0, 16))
    relabelled = Quote(q.nonce, {0: q.pcr_values[0], 7: q.pcr_values[16]}, q.attest, q.signature)
    with pytest.raises(PcrSelectionMismatch):
        verify(relabelled, ak, selection=PcrRequest(Alg.SHA256, (0, 7)))


def test_lifecycle_on_a_live_tpm(tpm: RunningTpm) -> None:
    blob, ak = make_ak(tpm, KeySpec.attestation_key("ecc-p256"))
    previous: QuoteClock | None = None
    accepted: dict[str, Quote] = {}
    transitions = []
    for step in QUOTE_STEPS:
        lifecycle(tpm, step)
        q = take_quote(tpm, blob)
        verified = verify(q, ak, previous)
        transitions.append((step, verified.transition, verified.warnings))
        previous = verified.clock
        accepted[step] = q
    assert transitions == [
        ("boot", BootTransition.FIRST, ()),
        ("same-boot", BootTransition.SAME_BOOT, ()),
        ("resume", BootTransition.RESUMED, ()),
        ("reboot", BootTransition.REBOOTED, ()),
        ("power-loss", BootTransition.REBOOTED, (QuoteWarning.CLOCK_NOT_SAFE,)),
    ]
    # Resume kept the PCRs; a reboot started them again and the same boot measured the same values.
    assert accepted["resume"].pcr_values == accepted["same-boot"].pcr_values
    assert accepted["reboot"].pcr_values == accepted["boot"].pcr_values
    # An older quote presented after a newer one was accepted (fresh nonce or not): refused.
    older = verify(accepted["same-boot"], ak)
    with pytest.raises(ClockWentBackwards):
        verify(accepted["boot"], ak, older.clock)


def test_sha1_quote_is_refused(tpm: RunningTpm, tmp_path: Path) -> None:
    # A real ECDSA-SHA1 quote by an AK pinned to SHA-1 (made with tpm2-tools).
    nonce = os.urandom(32)
    public, attest, signature = sha1_quote(tpm, nonce, tmp_path)
    area = parse_tpmt_public(public)
    with pytest.raises(AkUnsupportedScheme):
        check_attestation_key(area)
    quote = parse_tpms_attest(attest).attested
    assert isinstance(quote, QuoteInfo)
    assert len(quote.pcr_digest) == 20  # SHA-1: the scheme's hash again
    with TruckTpm.open(tpm.tcti) as truck:
        values = truck.pcr_read(QUOTE_BANK, QUOTE_PCRS)
    key = area.public_key()
    # Registered by hand as if it pinned SHA-256: the SHA-1 signature breaks the pin.
    pinned = VerifiedAk(public=area, name=area.name(), scheme=Alg.ECDSA, hash_alg=Alg.SHA256, key=key)
    with pytest.raises(SignatureSchemeMismatch):
        verify(Quote(nonce, values, attest, signature), pinned)


def test_regenerated_quote_vectors_have_the_recorded_shape(tmp_path: Path) -> None:
    """The regeneration script still produces what the unit tests were recorded from, and it verifies."""
    assert QUOTE_STEPS == REGENERATED_STEPS  # load.py's copy of the steps
    fresh = tmp_path / "vectors"
    record_quote_only(fresh, tmp_path / "scratch")
    names = sorted(p.name for p in fresh.iterdir())
    assert names == sorted(p.name for p in HERE.glob("quote-*.json"))
    assert names == sorted([*(f"quote-{kind}.json" for kind in QUOTE_KINDS), "quote-sha1.json"])

    def shape(vector: dict[str, object]) -> object:
        quotes = vector["quotes"]
        assert isinstance(quotes, list)
        return (
            vector["bank"],
            vector["pcrs"],
            len(str(vector["ak_public"])),
            [(q["step"], len(q["nonce"]), sorted(q["pcr_values"]), len(q["signature"])) for q in quotes],
        )

    for name in names:
        old = json.loads((HERE / name).read_text())
        new = json.loads((fresh / name).read_text())
        assert shape(old) == shape(new), name
        assert (
            parse_tpmt_public(bytes.fromhex(old["ak_public"])).parameters
            == parse_tpmt_public(bytes.fromhex(new["ak_public"])).parameters
        )
