"""Typed attestation errors. Each carries a stable `code` (the problem+json type suffix) and a `kind`
that the HTTP layer maps to a status; the core itself knows nothing of HTTP.

Verification in `attest` returns a verified object or raises exactly one of these per failure kind,
so callers (and the audit log) can tell *why* a TPM was turned away without parsing messages.
"""

from __future__ import annotations

from typing import ClassVar, Literal

ErrorKind = Literal["invalid", "not_found", "conflict", "unavailable", "forbidden", "unauthorized", "gone"]


class AttestError(Exception):
    code: ClassVar[str] = "attest-error"
    kind: ClassVar[ErrorKind] = "invalid"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.audited = False  # set by the caller that wrote the refusal's audit row


# --- TPM structures -------------------------------------------------------------------------


class MalformedStructure(AttestError):
    """A TPM structure is truncated, has trailing bytes, or holds a value its type does not allow."""

    code = "malformed-tpm-structure"


class UnsupportedAlgorithm(AttestError):
    """A well-formed structure names an algorithm (key type, hash, curve, scheme) we do not accept."""

    code = "unsupported-algorithm"


class UnsupportedKeyType(UnsupportedAlgorithm):
    """TPMT_PUBLIC.type is neither TPM_ALG_RSA nor TPM_ALG_ECC."""

    code = "unsupported-key-type"


# --- Attestation key (AK) -------------------------------------------------------------------


class AkRejected(AttestError):
    """The AK public area does not describe a key the authority accepts as an attestation key."""

    code = "ak-rejected"


class AkNotRestricted(AkRejected):
    code = "ak-not-restricted"


class AkNotSigning(AkRejected):
    code = "ak-not-signing"


class AkCanDecrypt(AkRejected):
    code = "ak-can-decrypt"


class AkNotFixedTpm(AkRejected):
    code = "ak-not-fixed-tpm"


class AkNotFixedParent(AkRejected):
    code = "ak-not-fixed-parent"


class AkNotSensitiveDataOrigin(AkRejected):
    code = "ak-not-sensitive-data-origin"


class AkWeakKey(AkRejected):
    """RSA below 2048 bits, or an ECC curve other than NIST P-256 / P-384."""

    code = "ak-weak-key"


class AkWeakNameAlg(AkRejected):
    """The AK's nameAlg is not SHA-256 or SHA-384 (its name would be a weak binding)."""

    code = "ak-weak-name-alg"


class AkSchemeNotPinned(AkRejected):
    """The AK leaves its signing scheme NULL, so quotes could pick any scheme and hash."""

    code = "ak-scheme-not-pinned"


class AkUnsupportedScheme(AkRejected):
    """The AK's scheme is not RSASSA (RSA) / ECDSA (ECC) with SHA-256 or SHA-384."""

    code = "ak-unsupported-scheme"


# --- Endorsement key (EK) -------------------------------------------------------------------


class EkRejected(AttestError):
    code = "ek-rejected"
    kind: ClassVar[ErrorKind] = "forbidden"


class MalformedEkCertificate(EkRejected):
    code = "malformed-ek-certificate"
    kind = "invalid"


class EkChainUntrusted(EkRejected):
    """No chain of valid signatures leads from the EK certificate to a pinned manufacturer root."""

    code = "ek-chain-untrusted"


class EkCertificateExpired(EkRejected):
    code = "ek-certificate-expired"


class EkCertificateNotYetValid(EkRejected):
    code = "ek-certificate-not-yet-valid"


class EkIssuerNotCa(EkRejected):
    """An issuer in the chain lacks CA:true or keyCertSign, or its path length is exceeded."""

    code = "ek-issuer-not-ca"


class EkLeafIsCa(EkRejected):
    code = "ek-leaf-is-ca"


class EkUnhandledCriticalExtension(EkRejected):
    """A certificate in the chain has a critical extension this verifier does not process."""

    code = "ek-unhandled-critical-extension"


class EkKeyMismatch(EkRejected):
    """The EK public area the TPM presented is not the key its EK certificate certifies."""

    code = "ek-key-mismatch"


# --- Credential challenge -------------------------------------------------------------------


class CredentialSecretSize(AttestError):
    """The MakeCredential secret is shorter than 128 bits or longer than the EK's digest size."""

    code = "credential-secret-size"


class EkNotStorageKey(AttestError):
    """The EK cannot receive a credential: not restricted+decrypt, or no AES-CFB symmetric."""

    code = "ek-not-storage-key"


class ActivationSecretMismatch(AttestError):
    """The secret the TPM recovered with ActivateCredential is not the one the authority sealed."""

    code = "activation-secret-mismatch"
    kind = "forbidden"


# --- Attestation structures (TPMS_ATTEST, TPMT_SIGNATURE) -------------------------------------


class NotTpmGenerated(AttestError):
    """TPMS_ATTEST.magic is not TPM_GENERATED_VALUE (0xff544347): the TPM did not make this structure."""

    code = "not-tpm-generated"


class UnsupportedAttestType(AttestError):
    """TPMS_ATTEST.type is not an attestation type this verifier parses (CERTIFY, QUOTE)."""

    code = "unsupported-attest-type"


class UnsupportedSignatureScheme(UnsupportedAlgorithm):
    """TPMT_SIGNATURE.sigAlg is neither TPM_ALG_ECDSA nor TPM_ALG_RSASSA."""

    code = "unsupported-signature-scheme"


class SignatureSchemeMismatch(AttestError):
    """The signature's scheme or hash is not the one pinned in the enrolled AK."""

    code = "signature-scheme-mismatch"
    kind = "forbidden"


class BadAttestSignature(AttestError):
    """The signature over the TPMS_ATTEST bytes does not verify with the enrolled AK."""

    code = "bad-attest-signature"
    kind = "forbidden"


class WrongAttestType(AttestError):
    """A well-formed, correctly signed TPMS_ATTEST of another type than the one the caller expects."""

    code = "wrong-attest-type"


class QualifyingDataMismatch(AttestError):
    """TPMS_ATTEST.extraData is not the qualifying data (nonce) the authority issued."""

    code = "qualifying-data-mismatch"
    kind = "forbidden"


# --- Certify of the identity key ------------------------------------------------------------


class CertifiedNameMismatch(AttestError):
    """The name in TPMS_CERTIFY_INFO is not the name of the identity public area presented."""

    code = "certified-name-mismatch"
    kind = "forbidden"


class IdentityKeyRejected(AttestError):
    """The certified identity key is not a key the authority issues identity certificates for."""

    code = "identity-key-rejected"


class IdentityKeyNotTpmBound(IdentityKeyRejected):
    """The identity key could leave the TPM or its parent, or was imported rather than made inside."""

    code = "identity-key-not-tpm-bound"


class IdentityKeyNotFixedTpm(IdentityKeyNotTpmBound):
    code = "identity-key-not-fixed-tpm"


class IdentityKeyNotFixedParent(IdentityKeyNotTpmBound):
    code = "identity-key-not-fixed-parent"


class IdentityKeyNotSensitiveDataOrigin(IdentityKeyNotTpmBound):
    code = "identity-key-not-sensitive-data-origin"


class IdentityKeyNotSigning(IdentityKeyRejected):
    code = "identity-key-not-signing"


class IdentityKeyRestricted(IdentityKeyRejected):
    """A restricted key only signs TPM-made digests: it is an AK, not an identity key for CSRs."""

    code = "identity-key-restricted"


class IdentityKeyCanDecrypt(IdentityKeyRejected):
    code = "identity-key-can-decrypt"


class IdentityKeyWeak(IdentityKeyRejected):
    """RSA below 2048 bits, or an ECC curve other than NIST P-256 / P-384."""

    code = "identity-key-weak"


class IdentityKeyWeakNameAlg(IdentityKeyRejected):
    """The identity key's nameAlg is not SHA-256 or SHA-384, so its name is a weak binding."""

    code = "identity-key-weak-name-alg"


class CsrKeyMismatch(AttestError):
    """The CSR's public key is not the TPM-resident identity key the Certify statement covers."""

    code = "csr-key-mismatch"
    kind = "forbidden"


# --- Releases -------------------------------------------------------------------------------


class ReleaseManifestInvalid(AttestError):
    """A release manifest that is not a compact JWS of the expected type and strict document shape."""

    code = "release-manifest-invalid"


class ReleaseSignatureInvalid(AttestError):
    """The release manifest is not signed by the registered release key (or with another algorithm)."""

    code = "release-signature-invalid"
    kind = "forbidden"


# --- Quotes ---------------------------------------------------------------------------------


class PcrSelectionMismatch(AttestError):
    """The signed pcrSelect is not exactly the selection the authority asked for: another bank, an
    extra bank, or a PCR more or less. Values labelled by a selection nobody asked for would let a
    truck pass one PCR's value off as another's (the CVE-2024-29039 class)."""

    code = "pcr-selection-mismatch"
    kind = "forbidden"


class PcrValuesMismatch(AttestError):
    """The PCR values the truck supplied are not exactly the quoted ones: a PCR missing or extra,
    or a value that is not one digest of the quoted bank."""

    code = "pcr-values-mismatch"


class PcrDigestMismatch(AttestError):
    """The quote's signed pcrDigest is not the digest of the PCR values the truck supplied."""

    code = "pcr-digest-mismatch"
    kind = "forbidden"


class ClockWentBackwards(AttestError):
    """The quote's (resetCount, restartCount, clock) is before the truck's last accepted quote's:
    a replayed older quote, or a TPM whose counters were reset (TPM2_Clear) since enrollment."""

    code = "clock-went-backwards"
    kind = "forbidden"


# --- Event log ------------------------------------------------------------------------------


class MalformedEventLog(AttestError):
    """The TCG PC Client crypto-agile event log is truncated, has trailing bytes, exceeds a size
    bound, or holds a value its structure does not allow (a PCR index above 23, an EV_NO_ACTION
    event with a non-zero digest, a misplaced or repeated StartupLocality event, ...)."""

    code = "malformed-event-log"


class EventLogSpecIdInvalid(MalformedEventLog):
    """The log does not open with a well-formed "Spec ID Event03" (TCG_EfiSpecIDEvent in an
    SHA-1-format EV_NO_ACTION record): wrong signature, spec version, uintnSize, platform class, or
    an algorithm list naming an unknown hash or a digest size that is not that hash's."""

    code = "event-log-spec-id"


class EventLogAlgorithmMismatch(AttestError):
    """An event's digests are not exactly one of each algorithm the Spec ID event declares, or
    the bank to replay is not one the log carries digests for."""

    code = "event-log-algorithm-mismatch"


class PcrWithoutEvents(AttestError):
    """A PCR to appraise has no extended event in the log: nothing explains its value."""

    code = "pcr-without-events"

    def __init__(self, reason: str, *, pcr: int) -> None:
        super().__init__(reason)
        self.pcr = pcr


class MissingSeparator(AttestError):
    """An appraised PCR in 0-7 never had the EV_SEPARATOR digest (of 0x00000000) extended in the
    appraised bank, or had the error separator (0xFFFFFFFF): the firmware did not close its
    pre-boot measurements normally."""

    code = "missing-separator"
    kind = "forbidden"

    def __init__(self, reason: str, *, pcr: int) -> None:
        super().__init__(reason)
        self.pcr = pcr


class EventLogReplayMismatch(AttestError):
    """Replaying the log's digests does not give the PCR values the TPM vouched for: the log is
    not the record of this boot (edited, reordered, truncated, or another boot's)."""

    code = "event-log-replay-mismatch"
    kind = "forbidden"

    def __init__(self, reason: str, *, pcrs: tuple[int, ...]) -> None:
        super().__init__(reason)
        self.pcrs = pcrs
