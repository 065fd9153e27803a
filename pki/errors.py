"""Typed PKI errors. Each carries a stable `code` (the problem+json type suffix) and a `kind`
that the HTTP layer maps to a status; the core itself knows nothing of HTTP."""

from __future__ import annotations

from typing import ClassVar, Literal

ErrorKind = Literal["invalid", "not_found", "conflict", "unavailable", "forbidden", "unauthorized", "gone"]


class PkiError(Exception):
    code: ClassVar[str] = "pki-error"
    kind: ClassVar[ErrorKind] = "invalid"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.audited = False  # set by the caller that wrote the refusal's audit row


class MalformedCsr(PkiError):
    code = "malformed-csr"


class CsrSignatureInvalid(PkiError):
    code = "csr-signature-invalid"


class ProfileViolation(PkiError):
    """The CSR or request breaks the certificate profile (key type/size, SAN shape, TTL, EKU)."""

    code = "profile-violation"


class UnknownProfile(PkiError):
    code = "unknown-profile"


class SanOutsideTrustDomain(ProfileViolation):
    code = "san-outside-trust-domain"


class TtlTooLong(ProfileViolation):
    code = "ttl-too-long"


class KeyNotAllowed(ProfileViolation):
    code = "key-not-allowed"


class UnknownCertificate(PkiError):
    code = "unknown-certificate"
    kind = "not_found"


class AlreadyRevoked(PkiError):
    code = "already-revoked"
    kind = "conflict"


class InvalidRevocationReason(PkiError):
    code = "invalid-revocation-reason"


class MalformedOcspRequest(PkiError):
    code = "malformed-ocsp-request"


class SignerUnavailable(PkiError):
    """The key backend (e.g. Vault Transit) could not be reached; nothing was signed."""

    code = "signer-unavailable"
    kind = "unavailable"


class KeyNotFound(PkiError):
    """A key the authority stored a reference to is gone from its backend: the server's fault, never the
    caller's, so it is reported as unavailable (503), not as a missing resource."""

    code = "key-not-found"
    kind = "unavailable"


class IssuerExpired(PkiError):
    """The issuing CA's validity has ended (or ends before the requested start); rotate the CA."""

    code = "issuer-expired"
    kind = "unavailable"


class UnknownAuthority(PkiError):
    code = "unknown-authority"
    kind = "not_found"
