"""In-process quote verification: `attest.quote.verify_quote` (every per-quote check) on real swtpm quotes,
beside the raw `cryptography` ECDSA P-256 verify of the same signatures over the same bytes (the baseline)
and Keylime's pure-Python `keylime.tpm.tpm_util.checkquote` on the same quotes, in the same run.

    .venv/bin/python -m bench.quote_verify [--quotes 256] [--n 1000] [--rounds 9] [--chunk 50]

At start a fresh batch is recorded from swtpm (a TPM-manufacturer CA, one provisioned swtpm, all stopped
again on exit): an ECC P-256 AK under the ECC EK (the agent's `create_attestation_key`), the agent's
simulated measured boot (`agent.boot.measure_boot` of `truck_boot()`), then `--quotes` TPM2_Quotes of
PCRs 0-15 in the sha256 bank, each over its own nonce (32 ASCII hex characters, 128 random bits: the
shape of Keylime's pull-mode nonces, so its check compares them as it does in production), and the PCR
values (TPM2_PCR_Read). Timed in --rounds rounds of --n calls each, the systems taking turns every --chunk
calls within a round (so load from other jobs on a shared box falls on all alike); rates are medians over
the rounds, ratios medians of the per-round ratios. Each system runs over the same quotes:

* raw:          `EllipticCurvePublicKey.verify(der, attest, ECDSA(SHA256))`, DER signatures precomputed;
* ours:         `verify_quote` with the enrolled `VerifiedAk`, the issued nonce, the requested selection
                (sha256, 0-15), the supplied PCR values and the previous quote's clock: strict parse,
                pinned scheme, signature, type, extraData, selection, values, pcrDigest, clock order;
* ours+ak:      the same, with the AK looked up from its stored TPMT_PUBLIC bytes as the server does per
                attestation (`provision.attestation.enrolled_ak`: checked once per distinct stored bytes);
* ours+log:     ours+ak plus `parse_event_log` and `appraise_event_log` of the boot's event log
                (replay of PCRs 0-15, separators): the server's verification before appraisal;
* ak-check:     (not a ratio) `check_attestation_key(parse_tpmt_public(...))` alone, uncached: what each
                attestation paid before the cache.
* keylime:      `checkquote(aik_pem, nonce, sigblob, quoteblob, pcrblob, "sha256")`: signature, nonce,
                pcrDigest over the PCR values in tpm2-tools' pcr-output layout (built here).

Verdicts: every recorded quote must pass both verifiers; mutated ones (wrong nonce, one wrong PCR value,
one flipped byte of the signed TPMS_ATTEST) must be refused by both. A quote of PCRs 0-7 presented for a
request of 0-15 is reported too: Keylime's checkquote takes the selection from the PCR blob the agent
sends, so it accepts; ours refuses (PcrSelectionMismatch).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import secrets
import shutil
import statistics
import struct
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from agent.boot import measure_boot, truck_boot
from agent.tpm import PcrBank, TruckTpm
from attest.ak import VerifiedAk, check_attestation_key
from attest.alg import Alg
from attest.attestation import EcdsaSignature, parse_tpmt_signature
from attest.eventlog import parse_event_log
from attest.public import parse_tpmt_public
from attest.quote import PcrRequest, QuoteClock, verify_quote
from attest.replay import appraise_event_log
from provision.attestation import enrolled_ak
from tests.support.swtpm import manufacturer_ca, running_tpms
from tests.unit.vectors.attest.load import attest_offsets

OUT = Path(__file__).resolve().parent / "out" / "quote_verify.json"
PCRS = tuple(range(16))
BANK: PcrBank = "sha256"
# tpm2-tools' pcr output (TPML_PCR_SELECTION then TPML_DIGESTs, as in memory, little-endian).
_TOOLS_SELECTIONS = 16  # HASH_COUNT entries, each u16 hash, u8 sizeofSelect, 3-byte bitmap, 2 bytes padding
_TOOLS_DIGESTS_PER_LIST = 8
_TOOLS_DIGEST_BUFFER = 64


@dataclass(frozen=True)
class Quote:
    nonce: bytes
    attest: bytes
    signature: bytes
    pcr_values: dict[int, bytes]


@dataclass(frozen=True)
class Recorded:
    ak_public: bytes  # bare TPMT_PUBLIC
    quotes: list[Quote]
    narrow: Quote  # a quote of PCRs 0-7 only (the selection differs from the request)
    event_log: bytes
    seconds_per_quote: float


# -- recording ------------------------------------------------------------------------------------


def record(count: int, work: Path) -> Recorded:
    """`count` quotes of PCRs 0-15 (sha256) from a freshly provisioned swtpm, after a simulated boot."""
    ca = manufacturer_ca(work / "manufacturer", "Bench TPM Maker")
    with running_tpms(work / "tpms", ca, 1, "ecc") as (running,), TruckTpm.open(running.tcti) as tpm:
        ak = tpm.create_attestation_key("ecc", "ecc-p256")
        boot = measure_boot(tpm, truck_boot())
        quotes = []
        started = time.perf_counter()
        for _ in range(count):
            nonce = secrets.token_hex(16).encode()
            attest, signature = tpm.quote(ak, nonce, BANK, PCRS)
            quotes.append(Quote(nonce, attest, signature, tpm.pcr_read(BANK, PCRS)))
        per_quote = (time.perf_counter() - started) / count
        nonce = secrets.token_hex(16).encode()
        attest, signature = tpm.quote(ak, nonce, BANK, PCRS[:8])
        narrow = Quote(nonce, attest, signature, tpm.pcr_read(BANK, PCRS[:8]))
    return Recorded(ak.public, quotes, narrow, boot.log, per_quote)


# -- Keylime ----------------------------------------------------------------------------------------

CheckQuote = Callable[[bytes, str, bytes, bytes, bytes, str], object]


def load_keylime() -> tuple[CheckQuote, str] | str:
    """Keylime's checkquote and version, or why it cannot be used. Its config module warns at import
    that /etc/keylime has no logging.conf; checkquote reads no configuration, so that is silenced."""
    logging.getLogger("keylime").setLevel(logging.CRITICAL)
    try:
        tpm_util = importlib.import_module("keylime.tpm.tpm_util")
        version = importlib.import_module("importlib.metadata").version("keylime")
    except ImportError as exc:
        return f"keylime is not importable ({exc}); install the bench extra: pip install -e '.[bench]'"
    checkquote: CheckQuote = tpm_util.checkquote
    return checkquote, str(version)


def tools_pcr_blob(bank: int, values: Mapping[int, bytes]) -> bytes:
    """PCR values in the layout tpm2_quote / tpm2_pcrread write with -o (what checkquote parses)."""
    pcrs = sorted(values)
    bitmap = sum(1 << p for p in pcrs)
    blob = struct.pack("<I", 1)
    blob += struct.pack("<HB", bank, 3) + bitmap.to_bytes(3, "little") + bytes(2)
    blob += bytes(8) * (_TOOLS_SELECTIONS - 1)
    chunks = [pcrs[i : i + _TOOLS_DIGESTS_PER_LIST] for i in range(0, len(pcrs), _TOOLS_DIGESTS_PER_LIST)]
    blob += struct.pack("<I", len(chunks))
    for chunk in chunks:
        blob += struct.pack("<I", len(chunk))
        for slot in range(_TOOLS_DIGESTS_PER_LIST):
            value = values[chunk[slot]] if slot < len(chunk) else b""
            blob += struct.pack("<H", len(value)) + value.ljust(_TOOLS_DIGEST_BUFFER, b"\0")
    return blob


# -- timing -----------------------------------------------------------------------------------------


def rate(fn: Callable[[int], object], n: int) -> float:
    started = time.perf_counter()
    for i in range(n):
        fn(i)
    return n / (time.perf_counter() - started)


@dataclass(frozen=True)
class Timed:
    rates: dict[str, float]  # median over rounds of each system's rate
    ratios: dict[str, float]  # median over rounds of each system's rate / the first system's, same round


def alternating(fns: dict[str, Callable[[int], object]], n: int, rounds: int, chunk: int) -> Timed:
    """Each function's rate over `rounds` rounds of `n` calls; within a round the functions take turns
    every `chunk` calls, so load from elsewhere on a shared box falls on all of them alike, and each
    ratio to the first function is taken within a round (paired) before the median."""
    for fn in fns.values():
        rate(fn, max(1, n // 10))
    rates: dict[str, list[float]] = {name: [] for name in fns}
    ratios: dict[str, list[float]] = {name: [] for name in fns}
    first = next(iter(fns))
    for _ in range(rounds):
        spent = dict.fromkeys(fns, 0.0)
        for start in range(0, n, chunk):
            size = min(chunk, n - start)
            for name, fn in fns.items():
                spent[name] += size / rate(fn, size)
        for name in fns:
            rates[name].append(n / spent[name])
            ratios[name].append(spent[first] / spent[name])
    return Timed(
        {name: statistics.median(values) for name, values in rates.items()},
        {name: statistics.median(values) for name, values in ratios.items()},
    )


# -- verdicts ---------------------------------------------------------------------------------------


class _Outcome:
    """Records the type of an Exception raised in its block and swallows it (Keylime refuses with bare
    `Exception`s, InvalidSignature and ValueError; ours with one AttestError subclass per check)."""

    def __init__(self) -> None:
        self.refused: str | None = None

    def __enter__(self) -> _Outcome:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> bool:
        if exc_type is not None and issubclass(exc_type, Exception):
            self.refused = exc_type.__name__
            return True
        return False


def verdict(call: Callable[[], object]) -> str:
    """ "accept", or "refuse: <error type>"."""
    with _Outcome() as outcome:
        call()
    return "accept" if outcome.refused is None else f"refuse: {outcome.refused}"


def _flip_signed_byte(attest: bytes) -> bytes:
    """The attest with the clock's low byte flipped: still well-formed, no longer what the AK signed."""
    at = attest_offsets(attest)["clock"] + 7
    return attest[:at] + bytes([attest[at] ^ 0x01]) + attest[at + 1 :]


@contextlib.contextmanager
def _workdir() -> Iterator[Path]:
    work = Path(tempfile.mkdtemp(prefix="ws-bench-quote-"))
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.quote_verify", description=__doc__.split("\n")[0])
    parser.add_argument("--quotes", type=int, default=256, help="distinct quotes recorded (default 256)")
    parser.add_argument(
        "--n", type=int, default=1000, help="verifications per round and system (default 1000)"
    )
    parser.add_argument(
        "--rounds", type=int, default=9, help="alternating rounds, median reported (default 9)"
    )
    parser.add_argument("--chunk", type=int, default=50, help="calls per turn within a round (default 50)")
    parser.add_argument("--out", type=Path, default=OUT, help=f"JSON results (default {OUT})")
    args = parser.parse_args(argv)
    if args.quotes < 2:
        parser.error("--quotes must be at least 2")

    print(f"recording {args.quotes} quotes of PCRs 0-15 (sha256, ECC P-256 AK) from swtpm ...", flush=True)
    with _workdir() as work:
        recorded = record(args.quotes, work)
    quotes = recorded.quotes
    count = len(quotes)
    print(
        f"  swtpm: {recorded.seconds_per_quote * 1000:.2f} ms per quote + PCR read (agent's TruckTpm calls)"
    )

    # -- the systems ---------------------------------------------------------------------------------
    ak_public = recorded.ak_public
    ak: VerifiedAk = check_attestation_key(parse_tpmt_public(ak_public))
    assert isinstance(ak.key, ec.EllipticCurvePublicKey)
    ak_key: ec.EllipticCurvePublicKey = ak.key
    selection = PcrRequest.of(Alg.SHA256, PCRS)
    previous: QuoteClock | None = verify_quote(
        quotes[0].attest,
        quotes[0].signature,
        ak=ak,
        nonce=quotes[0].nonce,
        selection=selection,
        pcr_values=quotes[0].pcr_values,
        previous=None,
    ).clock
    event_log = recorded.event_log

    ders = []
    for q in quotes:
        sig = parse_tpmt_signature(q.signature)
        assert isinstance(sig, EcdsaSignature)
        ders.append(encode_dss_signature(int.from_bytes(sig.r, "big"), int.from_bytes(sig.s, "big")))
    sha256 = ec.ECDSA(hashes.SHA256())

    def raw(i: int) -> None:
        k = i % count
        ak_key.verify(ders[k], quotes[k].attest, sha256)

    def ours(i: int) -> None:
        q = quotes[i % count]
        verify_quote(
            q.attest,
            q.signature,
            ak=ak,
            nonce=q.nonce,
            selection=selection,
            pcr_values=q.pcr_values,
            previous=previous,
        )

    def ours_ak(i: int) -> None:
        q = quotes[i % count]
        verify_quote(
            q.attest,
            q.signature,
            ak=enrolled_ak(ak_public),
            nonce=q.nonce,
            selection=selection,
            pcr_values=q.pcr_values,
            previous=previous,
        )

    def ours_log(i: int) -> None:
        q = quotes[i % count]
        verified = verify_quote(
            q.attest,
            q.signature,
            ak=enrolled_ak(ak_public),
            nonce=q.nonce,
            selection=selection,
            pcr_values=q.pcr_values,
            previous=previous,
        )
        appraise_event_log(parse_event_log(event_log), selection.bank, verified.pcr_values)

    fns: dict[str, Callable[[int], object]] = {
        "raw": raw,
        "ours": ours,
        "ours+ak": ours_ak,
        "ours+log": ours_log,
    }

    keylime = load_keylime()
    keylime_version: str | None = None
    keylime_missing: str | None = None
    aik_pem = ak_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    blobs = [tools_pcr_blob(Alg.SHA256, q.pcr_values) for q in quotes]
    if isinstance(keylime, str):
        keylime_missing = keylime
        print(f"keylime: NOT RUN: {keylime}")
    else:
        checkquote, keylime_version = keylime

        def keylime_check(i: int) -> None:
            k = i % count
            q = quotes[k]
            checkquote(aik_pem, q.nonce.decode(), q.signature, q.attest, blobs[k], "sha256")

        fns["keylime"] = keylime_check

    # -- verdicts --------------------------------------------------------------------------------------
    def ours_verdict(
        q: Quote,
        *,
        nonce: bytes | None = None,
        values: Mapping[int, bytes] | None = None,
        attest: bytes | None = None,
    ) -> str:
        return verdict(
            lambda: verify_quote(
                attest or q.attest,
                q.signature,
                ak=ak,
                nonce=nonce or q.nonce,
                selection=selection,
                pcr_values=values or q.pcr_values,
                previous=previous,
            )
        )

    def keylime_verdict(
        q: Quote,
        *,
        nonce: bytes | None = None,
        values: Mapping[int, bytes] | None = None,
        attest: bytes | None = None,
    ) -> str:
        if isinstance(keylime, str):
            return "not run"
        check = keylime[0]
        blob = tools_pcr_blob(Alg.SHA256, values or q.pcr_values)
        return verdict(
            lambda: check(
                aik_pem, (nonce or q.nonce).decode(), q.signature, attest or q.attest, blob, "sha256"
            )
        )

    sample = quotes[count // 2]
    wrong_pcr = dict(sample.pcr_values)
    wrong_pcr[4] = bytes(b ^ 0xFF for b in wrong_pcr[4])
    other_nonce = secrets.token_hex(16).encode()
    cases: list[tuple[str, str, str, bool]] = []  # (case, ours, keylime, both must refuse)
    valid_ours = [ours_verdict(q) for q in quotes]
    valid_keylime = [keylime_verdict(q) for q in quotes]
    cases.append(
        (
            f"all {count} recorded quotes",
            "accept"
            if all(v == "accept" for v in valid_ours)
            else f"REFUSED {valid_ours.count('accept')}/{count}",
            "accept" if all(v == "accept" for v in valid_keylime) else str(sorted(set(valid_keylime))),
            False,
        )
    )
    cases.append(
        (
            "wrong nonce",
            ours_verdict(sample, nonce=other_nonce),
            keylime_verdict(sample, nonce=other_nonce),
            True,
        )
    )
    cases.append(
        (
            "wrong PCR 4 value",
            ours_verdict(sample, values=wrong_pcr),
            keylime_verdict(sample, values=wrong_pcr),
            True,
        )
    )
    flipped = _flip_signed_byte(sample.attest)
    cases.append(
        (
            "one signed byte flipped",
            ours_verdict(sample, attest=flipped),
            keylime_verdict(sample, attest=flipped),
            True,
        )
    )
    narrow = recorded.narrow
    cases.append(
        (
            "quote of PCRs 0-7 for a request of 0-15",
            ours_verdict(narrow),
            keylime_verdict(narrow),
            False,
        )
    )
    valid_ok = cases[0][1] == "accept" and cases[0][2] in ("accept", "not run")
    mutations_refused = all(
        o.startswith("refuse") and (k.startswith("refuse") or k == "not run")
        for _, o, k, must_refuse in cases
        if must_refuse
    )
    agree = valid_ok and mutations_refused

    # -- timing --------------------------------------------------------------------------------------
    print(
        f"timing {', '.join(fns)}: {args.rounds} alternating rounds of {args.n} verifications ...", flush=True
    )
    timed = alternating(fns, args.n, args.rounds, args.chunk)
    rates, ratios = timed.rates, timed.ratios
    ak_check = statistics.median(
        rate(lambda _: check_attestation_key(parse_tpmt_public(ak_public)), args.n) for _ in range(3)
    )

    print()
    print(f"{'system':<10} {'verifies/s':>11} {'µs each':>8} {'/raw':>6} {'/keylime':>9}")
    labels = {
        "raw": "raw cryptography ECDSA P-256 verify (baseline)",
        "ours": "verify_quote, every check, AK pre-checked",
        "ours+ak": "verify_quote + AK looked up by its stored TPMT_PUBLIC (as the server: enrolled_ak)",
        "ours+log": "ours+ak + event-log parse and replay (appraise_event_log, PCRs 0-15)",
        "keylime": f"Keylime {keylime_version} tpm_util.checkquote",
    }
    for name, value in rates.items():
        kl = ratios.get("keylime")
        ratio_kl = f"{ratios[name] / kl:>9.2f}" if kl else f"{'—':>9}"
        print(
            f"{name:<10} {value:>11,.0f} {1e6 / value:>8.1f} {ratios[name]:>6.2f} {ratio_kl}   {labels[name]}"
        )
    if keylime_missing:
        print(f"keylime: not run: {keylime_missing}")
    print(f"AK check from stored bytes alone, uncached (what enrolled_ak saves): {1e6 / ak_check:.1f} µs")
    print()
    print(
        f"target: ours >= 0.8x raw: ours {ratios['ours']:.2f}x, "
        f"ours+ak {ratios['ours+ak']:.2f}x, "
        f"with the event log {ratios['ours+log']:.2f}x"
    )
    print("verdicts (ours | keylime):")
    for case, o, k, must_refuse in cases:
        print(f"  {case:<42} {o:<34} | {k}{'   (both must refuse)' if must_refuse else ''}")
    print(f"verdicts agree where they must: {'yes' if agree else 'NO'}")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "benchmark": "quote_verify",
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "quotes": count,
        "n": args.n,
        "rounds": args.rounds,
        "swtpm_ms_per_quote_and_pcr_read": recorded.seconds_per_quote * 1000,
        "rates": rates,
        "ak_check_uncached_per_s": ak_check,
        "chunk": args.chunk,
        "ratios_to_raw": ratios,
        "ours_to_keylime": (ratios["ours"] / ratios["keylime"]) if "keylime" in ratios else None,
        "keylime_version": keylime_version,
        "keylime_not_run": keylime_missing,
        "verdicts": [{"case": c, "ours": o, "keylime": k, "both_must_refuse": m} for c, o, k, m in cases],
        "verdicts_agree": agree,
    }
    args.out.write_text(json.dumps(result, indent=2))
    print(f"results written to {args.out}")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
