"""Typed errors of the use cases that are not PKI errors; same shape as pki.errors (code, kind, reason)."""

from __future__ import annotations

from typing import ClassVar

from pki.errors import ErrorKind


class ProvisionError(Exception):
    code: ClassVar[str] = "provision-error"
    kind: ClassVar[ErrorKind] = "invalid"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        # Set by a use case that wrote the refusal's audit row itself (with its target), so the HTTP
        # layer does not write a second one.
        self.audited = False


class IdempotencyKeyReused(ProvisionError):
    """The key was used before for a different operation or a different request body."""

    code = "idempotency-key-reused"


class IdempotencyKeyInUse(ProvisionError):
    """Another request with the same key is being processed or just won the race; retry to replay it."""

    code = "idempotency-key-in-use"
    kind = "conflict"


class InvalidIdempotencyKey(ProvisionError):
    code = "invalid-idempotency-key"


# --- fleets and trucks ----------------------------------------------------------------------


class FleetExists(ProvisionError):
    code = "fleet-exists"
    kind = "conflict"


class UnknownFleet(ProvisionError):
    code = "unknown-fleet"
    kind = "not_found"


class TruckExists(ProvisionError):
    """A truck with that id, or that VIN, is already registered."""

    code = "truck-exists"
    kind = "conflict"


class UnknownTruck(ProvisionError):
    code = "unknown-truck"
    kind = "not_found"


class InvalidAutonomyMode(ProvisionError):
    """Not one of the autonomy modes a truck's profile may name (provision.fleets.AUTONOMY_MODES)."""

    code = "invalid-autonomy-mode"


# --- enrollment -----------------------------------------------------------------------------


class EnrollmentTokenInvalid(ProvisionError):
    """Not a token this authority minted: bad signature, algorithm, audience, issuer or claims."""

    code = "enrollment-token-invalid"
    kind = "unauthorized"


class EnrollmentTokenExpired(ProvisionError):
    code = "enrollment-token-expired"
    kind = "unauthorized"


class EnrollmentTokenUsed(ProvisionError):
    """The token already started an enrollment; tokens are single use."""

    code = "enrollment-token-used"
    kind = "unauthorized"


class EnrollmentTokenWrongTruck(ProvisionError):
    """The token was minted for another truck than the one the agent says it is."""

    code = "enrollment-token-wrong-truck"
    kind = "forbidden"


class EnrollmentNotConfigured(ProvisionError):
    """No TPM-manufacturer roots are configured, so no EK can be trusted."""

    code = "enrollment-not-configured"
    kind = "unavailable"


class EkNotRegisteredForTruck(ProvisionError):
    """The operator pinned this truck's EK at registration, and the TPM presented another one."""

    code = "ek-not-registered-for-truck"
    kind = "forbidden"


class EkBoundToOtherTruck(ProvisionError):
    """This TPM is already the hardware of another truck."""

    code = "ek-bound-to-other-truck"
    kind = "forbidden"


class HardwareSwapNotApproved(ProvisionError):
    """The truck is enrolled with another EK; a new one needs an operator-approved hardware swap."""

    code = "hardware-swap-not-approved"
    kind = "conflict"


class UnknownEnrollment(ProvisionError):
    code = "unknown-enrollment"
    kind = "not_found"


class EnrollmentChallengeUsed(ProvisionError):
    """The challenge was already answered (successfully or not); challenges are single use."""

    code = "enrollment-challenge-used"
    kind = "conflict"


class EnrollmentChallengeExpired(ProvisionError):
    code = "enrollment-challenge-expired"
    kind = "gone"


# --- releases -------------------------------------------------------------------------------


class InvalidReleaseKey(ProvisionError):
    code = "invalid-release-key"


class UnknownReleaseKey(ProvisionError):
    code = "unknown-release-key"
    kind = "not_found"


class ReleaseKeyRevoked(ProvisionError):
    code = "release-key-revoked"
    kind = "forbidden"


class ReleaseExists(ProvisionError):
    """That model and version is already registered (a release is never silently replaced)."""

    code = "release-exists"
    kind = "conflict"


class UnknownRelease(ProvisionError):
    code = "unknown-release"
    kind = "not_found"


# --- attestation ----------------------------------------------------------------------------


class TruckNotEnrolled(ProvisionError):
    code = "truck-not-enrolled"
    kind = "conflict"


class UnknownAttestationNonce(ProvisionError):
    code = "unknown-attestation-nonce"
    kind = "not_found"


class AttestationNonceWrongTruck(ProvisionError):
    """The nonce was issued to another truck: a quote over it proves nothing about this one."""

    code = "attestation-nonce-wrong-truck"
    kind = "forbidden"


class AttestationNonceUsed(ProvisionError):
    code = "attestation-nonce-used"
    kind = "conflict"


class AttestationNonceExpired(ProvisionError):
    code = "attestation-nonce-expired"
    kind = "gone"


class ReleaseRevokedFirmware(ProvisionError):
    """The truck proved it runs firmware of a release the operator revoked."""

    code = "release-revoked"
    kind = "forbidden"


class TruckNotQuarantined(ProvisionError):
    code = "truck-not-quarantined"
    kind = "conflict"


class FirstQuoteRequired(ProvisionError):
    """Activation without the first quote (quote, its signature, PCR values and event log, all four)
    over the challenge's quote nonce: the certificate is issued only after a quote passes."""

    code = "first-quote-required"


class FirmwareNotApproved(ProvisionError):
    """The enrolling truck's first quote verified, but its PCRs match no active release of its model."""

    code = "firmware-not-approved"
    kind = "forbidden"


class NoGoldenRelease(ProvisionError):
    """The truck's model has no registered release to appraise its first quote against (and the
    authority requires one: WEIGHSTATION_ENROLLMENT_REQUIRE_RELEASE)."""

    code = "no-golden-release"
    kind = "conflict"


# --- renewal --------------------------------------------------------------------------------


class TruckQuarantined(ProvisionError):
    code = "truck-quarantined"
    kind = "forbidden"


class AttestationRequired(ProvisionError):
    """No passing attestation recent enough: the truck must attest (purpose renew) first."""

    code = "attestation-required"
    kind = "forbidden"


class RenewalKeyMismatch(ProvisionError):
    """A truck renews its TPM-resident identity key only; another key needs a new enrollment."""

    code = "renewal-key-mismatch"
    kind = "forbidden"


# --- OAuth2 clients -------------------------------------------------------------------------


class ClientAuthenticationFailed(ProvisionError):
    """RFC 6749 §5.2 invalid_client: unknown client, wrong secret, or a disabled client."""

    code = "invalid-client"
    kind = "unauthorized"


class InvalidScope(ProvisionError):
    code = "invalid-scope"


class ClientMetadataInvalid(ProvisionError):
    """RFC 7591 §3.2.2 invalid_client_metadata: an unusable JWKS or authentication method at registration."""

    code = "invalid-client-metadata"


class AccessTokenInvalid(ProvisionError):
    code = "invalid-token"
    kind = "unauthorized"


class PolicyRejected(ProvisionError):
    """The uploaded Cedar policy set does not parse or validate against the schema; the active set stays."""

    code = "policy-set-invalid"


class JwtReplayed(ProvisionError):
    """A single-use JWT (its jti) was presented before."""

    code = "jwt-replayed"
    kind = "unauthorized"


class TruckRequestInvalid(ProvisionError):
    """A truck's request credential (x5c request JWT or forwarded client certificate) does not hold up;
    the reason names the one check that failed."""

    code = "invalid-truck-request"
    kind = "unauthorized"


# --- truck statements -----------------------------------------------------------------------


class StatementWrongTruck(ProvisionError):
    """The statement names another truck than the one it is submitted for."""

    code = "statement-wrong-truck"
    kind = "forbidden"


class StatementCertificateInvalid(ProvisionError):
    """The certificate chain is not PEM, or its leaf is not a certificate our CA issued to this truck's
    enrolled identity key (chain, SPIFFE ID or key do not match)."""

    code = "statement-certificate-invalid"
    kind = "forbidden"


class StatementCertificateNotCurrent(ProvisionError):
    """The certificate is one this truck held, but not its current one (it renewed since)."""

    code = "statement-certificate-not-current"
    kind = "forbidden"


class StatementCertificateRevoked(ProvisionError):
    code = "statement-certificate-revoked"
    kind = "forbidden"


class StatementCertificateExpired(ProvisionError):
    """The certificate is outside its validity period at submission."""

    code = "statement-certificate-expired"
    kind = "forbidden"


class StatementSignatureInvalid(ProvisionError):
    """The signature is not ECDSA P-256/SHA-256 over the statement's bytes by the certificate's key."""

    code = "statement-signature-invalid"
    kind = "forbidden"


class StatementCheckpointUnknown(ProvisionError):
    """The statement's checkpoint is not one this log signed (other origin, size, or root)."""

    code = "statement-checkpoint-unknown"


class StatementSequenceGap(ProvisionError):
    """The sequence skips past the truck's chain head + 1."""

    code = "statement-sequence-gap"
    kind = "conflict"


class StatementFork(ProvisionError):
    """A sequence the chain already holds with other content, or a `previous` that is not the hash of
    the chain head: the truck signed two histories. Refused, and marked on the truck's chain."""

    code = "statement-fork"
    kind = "conflict"


class UnknownStatement(ProvisionError):
    code = "unknown-statement"
    kind = "not_found"
