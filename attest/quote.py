"""Verification of a TPM2_Quote against what the authority asked for (DESIGN.md, "The quote verifier
must check", per quote).

`verify_quote` takes the bytes the truck sent, the enrolled `VerifiedAk` (looked up by the truck,
never a key the request carries), the nonce the authority issued, the PCR selection it asked for,
the PCR values the truck supplied and the clock of the truck's last accepted quote. It returns a
`VerifiedQuote` or raises one `AttestError` subclass for the first check that fails:

1. strict parse of TPMS_ATTEST and TPMT_SIGNATURE, no trailing bytes; the magic must be
   TPM_GENERATED_VALUE (`MalformedStructure`, `NotTpmGenerated`, `UnsupportedAttestType`, ...);
2. the signature is the enrolled AK's, with its pinned scheme and hash (`SignatureSchemeMismatch`,
   `BadAttestSignature`); a SHA-1 signature never gets further, as no AK pins SHA-1. Every later
   step reads only signed fields;
3. the type is TPM_ST_ATTEST_QUOTE (`WrongAttestType`: e.g. the enrollment Certify replayed);
4. extraData is the issued nonce, compared in constant time (`QualifyingDataMismatch`);
5. pcrSelect is exactly the requested selection (`PcrSelectionMismatch`), see below;
6. the supplied PCR values are exactly the selected PCRs, each one digest of the bank
   (`PcrValuesMismatch`);
7. pcrDigest is recomputed from those values and compared in constant time (`PcrDigestMismatch`);
8. (resetCount, restartCount, clock) is not before the last accepted quote's (`ClockWentBackwards`);
   safe = NO is a warning, a higher resetCount a reboot.

pcrDigest (TPM 2.0 Part 3 §18.4 TPM2_Quote): the digest, with the hash of the *signing scheme* (the
AK's pinned hash, not the bank's), of the concatenation of the selected PCR values in selection
order (Part 1 "Selecting Multiple PCR": banks in list order, PCRs in ascending index). Checked on
swtpm: a P-384 AK pinned to ECDSA-SHA384 quoting the sha256 bank gives a 48-byte pcrDigest.

Selection: the authority asks for one bank and a set of PCRs; the signed TPML_PCR_SELECTION must
hold exactly one TPMS_PCR_SELECTION, of that bank, whose bitmap selects exactly that set. An extra
bank (even one selecting nothing), another bank, or a PCR more or less fails. The bitmap's length
(sizeofSelect) is encoding, not meaning: a 4-byte bitmap selecting the same PCRs as a 3-byte one
selects the same values in the same order, so it is accepted.

Clock: quotes are ordered by (resetCount, restartCount, clock). A higher resetCount is a TPM Reset
(a reboot: PCRs start again, so the caller must appraise the whole event log); a higher
restartCount with the same resetCount is a TPM Resume or Restart (hibernate; PCRs may have been
reset too); within one (resetCount, restartCount) the clock must not go back. An equal tuple is
not "backwards" (two quotes within the clock's resolution); replay is the nonce's job.

Cost: every check above stays, but the hot path reads the quote with `scan_quote` (one struct read
per fixed run) and compares against state made once: the AK's signature algorithm and pcrDigest hash
live in the `VerifiedAk`, the expected bitmap and digest size in the `PcrRequest`, so a server that
keeps both per truck pays for the signature verify and little else. Failures take the slow road that
explains them (the reference parse, the set differences) so the errors and their reasons stay the same.
"""

from __future__ import annotations

import enum
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import NoReturn

from attest.ak import ACCEPTED_SIGNING_HASHES, VerifiedAk
from attest.alg import Alg, alg_name, digest_size
from attest.attestation import (
    AttestType,
    ClockInfo,
    QuoteInfo,
    ScannedQuote,
    ScannedSignature,
    Signature,
    TpmsAttest,
    parse_tpms_attest,
    parse_tpmt_signature,
    scan_quote,
    scan_signature,
    verify_scanned_signature,
)
from attest.errors import (
    AkUnsupportedScheme,
    ClockWentBackwards,
    PcrDigestMismatch,
    PcrSelectionMismatch,
    PcrValuesMismatch,
    QualifyingDataMismatch,
    WrongAttestType,
)

# The PCR banks the authority appraises; SHA-1 is not among them.
ACCEPTED_PCR_BANKS = frozenset({Alg.SHA256, Alg.SHA384, Alg.SHA512})
# PC Client Platform TPM Profile: 24 PCRs (IMPLEMENTATION_PCR).
PCR_COUNT = 24
# A nonce shorter than this proves no freshness (DESIGN.md: nonces of at least 128 bits).
MIN_NONCE_BYTES = 16


@dataclass(frozen=True)
class PcrRequest:
    """The selection the authority asked the truck to quote: one bank and a set of PCRs.

    `pcrs` may be given in any order; it is kept sorted and unique (the selection order of Part 1).
    Raises ValueError for a selection the authority must never ask for: it is the caller's own.
    """

    bank: int  # TPM_ALG_ID of the PCR bank: SHA256, SHA384 or SHA512
    pcrs: tuple[int, ...]
    # Derived once: the bitmap that selects exactly `pcrs` without trailing zero bytes (a quote's
    # bitmap selects the same PCRs iff it equals this once its own trailing zeros are dropped), and
    # the size of one PCR value of the bank.
    bitmap: bytes = field(init=False, repr=False, compare=False)
    digest_size: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.bank not in ACCEPTED_PCR_BANKS:
            raise ValueError(f"PCR bank {alg_name(self.bank)} is not one the authority appraises")
        pcrs = tuple(sorted(set(self.pcrs)))
        if not pcrs or any(not 0 <= p < PCR_COUNT for p in pcrs):
            raise ValueError(
                f"PCR selection {list(self.pcrs)} must be non-empty and within 0..{PCR_COUNT - 1}"
            )
        object.__setattr__(self, "pcrs", pcrs)
        bitmap = bytearray(pcrs[-1] // 8 + 1)
        for pcr in pcrs:
            bitmap[pcr // 8] |= 1 << (pcr % 8)
        object.__setattr__(self, "bitmap", bytes(bitmap))
        object.__setattr__(self, "digest_size", digest_size(self.bank))

    @classmethod
    def of(cls, bank: int, pcrs: Iterable[int]) -> PcrRequest:
        return cls(bank, tuple(pcrs))


@dataclass(frozen=True, order=True)
class QuoteClock:
    """The ordering key of a quote: (resetCount, restartCount, clock), compared in that order."""

    reset_count: int
    restart_count: int
    clock: int

    @classmethod
    def of(cls, info: ClockInfo) -> QuoteClock:
        return cls(info.reset_count, info.restart_count, info.clock)


class BootTransition(enum.StrEnum):
    """What happened to the TPM between the last accepted quote and this one."""

    FIRST = "first"  # no earlier accepted quote to compare with
    SAME_BOOT = "same-boot"  # same resetCount and restartCount, clock not earlier
    RESUMED = "resumed"  # restartCount higher, resetCount same: TPM Resume or TPM Restart
    REBOOTED = "rebooted"  # resetCount higher: TPM Reset, the PCRs started again


class QuoteWarning(enum.StrEnum):
    """Something a verified quote carries that the appraisal may weigh; never a refusal."""

    # clockInfo.safe = NO: the TPM may have reported a later clock before (trucks lose power).
    CLOCK_NOT_SAFE = "clock-not-safe"


_NOT_SAFE = (QuoteWarning.CLOCK_NOT_SAFE,)


@dataclass(frozen=True)
class VerifiedQuote:
    """A quote that passed every check: the enrolled AK's TPM held these PCR values, for this nonce."""

    attest_bytes: bytes  # the signed TPMS_ATTEST, exactly as received
    signature_bytes: bytes  # its TPMT_SIGNATURE
    selection: PcrRequest
    pcr_concatenation: bytes  # the selected PCR values in selection order: what pcrDigest hashes
    pcr_digest: bytes  # hashed with the AK's pinned hash
    clock: QuoteClock  # store it: the `previous` of the truck's next quote
    safe: bool
    firmware_version: int  # TPMS_ATTEST.firmwareVersion, vendor-defined
    transition: BootTransition
    warnings: tuple[QuoteWarning, ...]

    # Views built when asked for: verification itself needs none of them.
    @cached_property
    def pcr_values(self) -> Mapping[int, bytes]:
        """PCR index → value, read-only: exactly selection.pcrs, cut from the bytes that were hashed."""
        size = self.selection.digest_size
        blob = self.pcr_concatenation
        pcrs = self.selection.pcrs
        return MappingProxyType({pcr: blob[i * size : (i + 1) * size] for i, pcr in enumerate(pcrs)})

    @cached_property
    def attest(self) -> TpmsAttest:
        return parse_tpms_attest(self.attest_bytes)

    @cached_property
    def signature(self) -> Signature:
        return parse_tpmt_signature(self.signature_bytes)

    @property
    def rebooted(self) -> bool:
        """The TPM was reset since the last accepted quote."""
        return self.transition is BootTransition.REBOOTED

    @property
    def requires_full_appraisal(self) -> bool:
        """Whether the caller must replay the whole event log rather than trust the last appraisal:
        always but within one boot, as a restart (hibernate) may also have reset the PCRs."""
        return self.transition is not BootTransition.SAME_BOOT


def _refuse_selection(banks: tuple[tuple[int, bytes], ...], selection: PcrRequest) -> NoReturn:
    """Raise PcrSelectionMismatch saying how the quoted selection differs from the request."""
    if len(banks) != 1:
        names = ", ".join(alg_name(hash_alg) for hash_alg, _ in banks) or "none"
        raise PcrSelectionMismatch(
            f"the quote selects {len(banks)} banks ({names}); one, {alg_name(selection.bank)}, was asked for"
        )
    ((hash_alg, bitmap),) = banks
    if hash_alg != selection.bank:
        raise PcrSelectionMismatch(
            f"the quote selects the {alg_name(hash_alg)} bank; {alg_name(selection.bank)} was asked for"
        )
    pcrs = {i for i in range(len(bitmap) * 8) if bitmap[i // 8] & (1 << (i % 8))}
    wanted = set(selection.pcrs)
    raise PcrSelectionMismatch(
        f"the quote selects PCRs {sorted(pcrs)}; {sorted(wanted)} were asked for "
        f"(extra {sorted(pcrs - wanted)}, missing {sorted(wanted - pcrs)})"
    )


def _refuse_values(selection: PcrRequest, values: Mapping[int, bytes]) -> NoReturn:
    """Raise PcrValuesMismatch saying which supplied values are extra, missing or of the wrong size."""
    supplied = set(values)
    wanted = set(selection.pcrs)
    if supplied != wanted:
        raise PcrValuesMismatch(
            f"PCR values supplied for {sorted(supplied)}; the quote covers {sorted(wanted)} "
            f"(extra {sorted(supplied - wanted)}, missing {sorted(wanted - supplied)})"
        )
    size = selection.digest_size
    for pcr in selection.pcrs:
        if len(values[pcr]) != size:
            raise PcrValuesMismatch(
                f"PCR {pcr} value is {len(values[pcr])} bytes; a {alg_name(selection.bank)} digest is {size}"
            )
    raise PcrValuesMismatch("the supplied PCR values are not one digest of the bank per selected PCR")


def _transition(current: QuoteClock, previous: QuoteClock | None) -> BootTransition:
    if previous is None:
        return BootTransition.FIRST
    # The order of QuoteClock, on plain tuples (the generated __lt__ costs a microsecond).
    if (current.reset_count, current.restart_count, current.clock) < (
        previous.reset_count,
        previous.restart_count,
        previous.clock,
    ):
        raise ClockWentBackwards(
            f"quote clock (resetCount {current.reset_count}, restartCount {current.restart_count}, "
            f"clock {current.clock}) is before the last accepted quote's (resetCount "
            f"{previous.reset_count}, restartCount {previous.restart_count}, clock {previous.clock})"
        )
    if current.reset_count > previous.reset_count:
        return BootTransition.REBOOTED
    if current.restart_count > previous.restart_count:
        return BootTransition.RESUMED
    return BootTransition.SAME_BOOT


def verify_quote(
    attest: bytes,
    signature: bytes,
    *,
    ak: VerifiedAk,
    nonce: bytes,
    selection: PcrRequest,
    pcr_values: Mapping[int, bytes],
    previous: QuoteClock | None,
) -> VerifiedQuote:
    """Verify a TPM2_Quote by the enrolled AK; the steps are numbered in the module docstring.

    `attest` and `signature` are the marshalled TPMS_ATTEST and TPMT_SIGNATURE from the TPM; `nonce`
    is the extraData the authority expects (the issued nonce, or its tender binding); `previous` is
    the clock of the truck's last accepted quote, or None for its first.
    """
    # 0. The caller's own inputs: a VerifiedAk made by hand could pin SHA-1 (check_attestation_key
    #    never does), and an empty expected nonce would match an unqualified quote.
    if ak.hash_alg not in ACCEPTED_SIGNING_HASHES or ak.pcr_hash is None:
        raise AkUnsupportedScheme(f"the AK pins {alg_name(ak.hash_alg)}; SHA256 or SHA384 required")
    if len(nonce) < MIN_NONCE_BYTES:
        raise ValueError(f"the expected nonce is {len(nonce)} bytes; at least {MIN_NONCE_BYTES} required")
    if type(attest) is not bytes or type(signature) is not bytes:
        attest, signature = bytes(attest), bytes(signature)

    # 1. Strict parse (magic, type, sizes, no trailing bytes). Anything but a well-formed QUOTE goes
    #    through the reference parse, which raises the precise error or returns another type.
    quote = scan_quote(attest)
    parsed = parse_tpms_attest(attest) if quote is None else None
    sig = scan_signature(signature) or ScannedSignature.of(parse_tpmt_signature(signature))

    # 2. The enrolled AK signed these exact bytes, with its pinned scheme and hash.
    verify_scanned_signature(attest, sig, ak)

    # 3. A quote (TPM_ST_ATTEST_QUOTE), not a Certify or other statement by the same AK.
    if quote is None:
        assert parsed is not None
        if parsed.type != AttestType.QUOTE or not isinstance(parsed.attested, QuoteInfo):
            raise WrongAttestType(f"TPMS_ATTEST type is {parsed.type.name}; QUOTE required")
        quote = ScannedQuote.of(parsed)

    # 4. It answers this nonce.
    if not hmac.compare_digest(quote.extra_data, nonce):
        raise QualifyingDataMismatch("TPMS_ATTEST.extraData is not the issued nonce")

    # 5. It quotes exactly the PCRs asked for, in the bank asked for.
    banks = quote.banks
    if len(banks) != 1 or banks[0][0] != selection.bank or banks[0][1].rstrip(b"\0") != selection.bitmap:
        _refuse_selection(banks, selection)

    # 6. The values supplied are exactly those PCRs, each one digest of the bank.
    pcrs = selection.pcrs
    try:
        supplied = [*map(pcr_values.__getitem__, pcrs)]
    except KeyError:
        _refuse_values(selection, pcr_values)
    if len(pcr_values) != len(pcrs) or {*map(len, supplied)} != {selection.digest_size}:
        _refuse_values(selection, pcr_values)
    concatenation = b"".join(supplied)  # a copy: the caller's values may be mutable

    # 7. They are the values the TPM quoted: pcrDigest with the AK's signing hash.
    if not hmac.compare_digest(quote.pcr_digest, ak.pcr_hash(concatenation)):
        raise PcrDigestMismatch(
            f"pcrDigest is not the {alg_name(ak.hash_alg)} digest of the supplied PCR values"
        )

    # 8. Not before the last accepted quote; safe = NO only warns.
    clock = QuoteClock(quote.reset_count, quote.restart_count, quote.clock)
    transition = _transition(clock, previous)

    # A frozen dataclass's __init__ sets each field with object.__setattr__ (~0.1 µs apiece, a tenth
    # of what is left here beside the signature); filling the new instance's __dict__ in one call
    # makes the same object (no __post_init__, every field given).
    verified = object.__new__(VerifiedQuote)
    verified.__dict__.update(
        attest_bytes=attest,
        signature_bytes=signature,
        selection=selection,
        pcr_concatenation=concatenation,
        pcr_digest=quote.pcr_digest,
        clock=clock,
        safe=quote.safe,
        firmware_version=quote.firmware_version,
        transition=transition,
        warnings=() if quote.safe else _NOT_SAFE,
    )
    return verified
