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
"""

from __future__ import annotations

import enum
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from attest.ak import ACCEPTED_SIGNING_HASHES, VerifiedAk
from attest.alg import Alg, alg_name, digest, digest_size
from attest.attestation import (
    AttestType,
    ClockInfo,
    QuoteInfo,
    Signature,
    TpmsAttest,
    parse_tpms_attest,
    parse_tpmt_signature,
    verify_attest_signature,
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

    def __post_init__(self) -> None:
        if self.bank not in ACCEPTED_PCR_BANKS:
            raise ValueError(f"PCR bank {alg_name(self.bank)} is not one the authority appraises")
        pcrs = tuple(sorted(set(self.pcrs)))
        if not pcrs or any(not 0 <= p < PCR_COUNT for p in pcrs):
            raise ValueError(
                f"PCR selection {list(self.pcrs)} must be non-empty and within 0..{PCR_COUNT - 1}"
            )
        object.__setattr__(self, "pcrs", pcrs)

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


@dataclass(frozen=True)
class VerifiedQuote:
    """A quote that passed every check: the enrolled AK's TPM held these PCR values, for this nonce."""

    attest: TpmsAttest
    signature: Signature
    selection: PcrRequest
    pcr_values: Mapping[int, bytes]  # read-only; exactly selection.pcrs
    pcr_digest: bytes  # hashed with the AK's pinned hash
    clock: QuoteClock  # store it: the `previous` of the truck's next quote
    safe: bool
    firmware_version: int  # TPMS_ATTEST.firmwareVersion, vendor-defined
    transition: BootTransition
    warnings: tuple[QuoteWarning, ...]

    @property
    def rebooted(self) -> bool:
        """The TPM was reset since the last accepted quote."""
        return self.transition is BootTransition.REBOOTED

    @property
    def requires_full_appraisal(self) -> bool:
        """Whether the caller must replay the whole event log rather than trust the last appraisal:
        always but within one boot, as a restart (hibernate) may also have reset the PCRs."""
        return self.transition is not BootTransition.SAME_BOOT


def _pcr_digest(hash_alg: int, selection: PcrRequest, values: Mapping[int, bytes]) -> bytes:
    return digest(hash_alg, b"".join(values[p] for p in selection.pcrs))


def _check_selection(quote: QuoteInfo, selection: PcrRequest) -> None:
    if len(quote.pcr_select) != 1:
        banks = ", ".join(alg_name(s.hash_alg) for s in quote.pcr_select) or "none"
        raise PcrSelectionMismatch(
            f"the quote selects {len(quote.pcr_select)} banks ({banks}); one, {alg_name(selection.bank)}, "
            "was asked for"
        )
    (quoted,) = quote.pcr_select
    if quoted.hash_alg != selection.bank:
        raise PcrSelectionMismatch(
            f"the quote selects the {alg_name(quoted.hash_alg)} bank; "
            f"{alg_name(selection.bank)} was asked for"
        )
    pcrs = set(quoted.pcrs())
    wanted = set(selection.pcrs)
    if pcrs != wanted:
        raise PcrSelectionMismatch(
            f"the quote selects PCRs {sorted(pcrs)}; {sorted(wanted)} were asked for "
            f"(extra {sorted(pcrs - wanted)}, missing {sorted(wanted - pcrs)})"
        )


def _check_values(selection: PcrRequest, values: Mapping[int, bytes]) -> dict[int, bytes]:
    supplied = set(values)
    wanted = set(selection.pcrs)
    if supplied != wanted:
        raise PcrValuesMismatch(
            f"PCR values supplied for {sorted(supplied)}; the quote covers {sorted(wanted)} "
            f"(extra {sorted(supplied - wanted)}, missing {sorted(wanted - supplied)})"
        )
    size = digest_size(selection.bank)
    for pcr in selection.pcrs:
        if len(values[pcr]) != size:
            raise PcrValuesMismatch(
                f"PCR {pcr} value is {len(values[pcr])} bytes; a {alg_name(selection.bank)} digest is {size}"
            )
    return {pcr: bytes(values[pcr]) for pcr in selection.pcrs}


def _transition(current: QuoteClock, previous: QuoteClock | None) -> BootTransition:
    if previous is None:
        return BootTransition.FIRST
    if current < previous:
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
    if ak.hash_alg not in ACCEPTED_SIGNING_HASHES:
        raise AkUnsupportedScheme(f"the AK pins {alg_name(ak.hash_alg)}; SHA256 or SHA384 required")
    if len(nonce) < MIN_NONCE_BYTES:
        raise ValueError(f"the expected nonce is {len(nonce)} bytes; at least {MIN_NONCE_BYTES} required")

    # 1. Strict parse (magic, type, sizes, no trailing bytes).
    parsed = parse_tpms_attest(attest)
    sig = parse_tpmt_signature(signature)

    # 2. The enrolled AK signed these exact bytes, with its pinned scheme and hash.
    verify_attest_signature(parsed.raw, sig, ak)

    # 3. A quote (TPM_ST_ATTEST_QUOTE), not a Certify or other statement by the same AK.
    if parsed.type != AttestType.QUOTE or not isinstance(parsed.attested, QuoteInfo):
        raise WrongAttestType(f"TPMS_ATTEST type is {parsed.type.name}; QUOTE required")
    quote = parsed.attested

    # 4. It answers this nonce.
    if not hmac.compare_digest(parsed.extra_data, nonce):
        raise QualifyingDataMismatch("TPMS_ATTEST.extraData is not the issued nonce")

    # 5. It quotes exactly the PCRs asked for, in the bank asked for.
    _check_selection(quote, selection)

    # 6. The values supplied are exactly those PCRs, each one digest of the bank.
    values = _check_values(selection, pcr_values)

    # 7. They are the values the TPM quoted: pcrDigest with the AK's signing hash.
    if not hmac.compare_digest(quote.pcr_digest, _pcr_digest(ak.hash_alg, selection, values)):
        raise PcrDigestMismatch(
            f"pcrDigest is not the {alg_name(ak.hash_alg)} digest of the supplied PCR values"
        )

    # 8. Not before the last accepted quote; safe = NO only warns.
    clock = QuoteClock.of(parsed.clock_info)
    transition = _transition(clock, previous)
    warnings = () if parsed.clock_info.safe else (QuoteWarning.CLOCK_NOT_SAFE,)

    return VerifiedQuote(
        attest=parsed,
        signature=sig,
        selection=selection,
        pcr_values=MappingProxyType(values),
        pcr_digest=quote.pcr_digest,
        clock=clock,
        safe=parsed.clock_info.safe,
        firmware_version=parsed.firmware_version,
        transition=transition,
        warnings=warnings,
    )
