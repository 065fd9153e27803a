"""Verification of the identity key's TPM2_Certify at enrollment (DESIGN.md, "The quote verifier must
check": the identity key's Certify says fixedTPM and matches the CSR key).

`verify_certify` returns a `VerifiedCertify` or raises one `AttestError` subclass for the first check
that fails. The AK is the enrolled, already checked `VerifiedAk`; the qualifying data is what the
authority issued; the identity public area and the CSR key are what the truck sent, and are trusted
only once the signed statement names that public area.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from attest.ak import ACCEPTED_CURVES, ACCEPTED_NAME_ALGS, MIN_RSA_BITS, VerifiedAk
from attest.alg import alg_name, curve_name
from attest.attestation import (
    AttestType,
    CertifyInfo,
    Signature,
    TpmsAttest,
    parse_tpms_attest,
    parse_tpmt_signature,
    verify_attest_signature,
)
from attest.errors import (
    AttestError,
    CertifiedNameMismatch,
    CsrKeyMismatch,
    IdentityKeyCanDecrypt,
    IdentityKeyNotFixedParent,
    IdentityKeyNotFixedTpm,
    IdentityKeyNotSensitiveDataOrigin,
    IdentityKeyNotSigning,
    IdentityKeyRestricted,
    IdentityKeyWeak,
    IdentityKeyWeakNameAlg,
    QualifyingDataMismatch,
    WrongAttestType,
)
from attest.public import EccParms, ObjectAttributes, RsaParms, TpmtPublic

# The identity-key attribute checks in order: (flag, must be set, error). TPM binding first.
_ATTRIBUTE_RULES: tuple[tuple[ObjectAttributes, bool, type[AttestError]], ...] = (
    (ObjectAttributes.FIXED_TPM, True, IdentityKeyNotFixedTpm),
    (ObjectAttributes.FIXED_PARENT, True, IdentityKeyNotFixedParent),
    (ObjectAttributes.SENSITIVE_DATA_ORIGIN, True, IdentityKeyNotSensitiveDataOrigin),
    (ObjectAttributes.SIGN, True, IdentityKeyNotSigning),
    (ObjectAttributes.RESTRICTED, False, IdentityKeyRestricted),
    (ObjectAttributes.DECRYPT, False, IdentityKeyCanDecrypt),
)

_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


@dataclass(frozen=True)
class VerifiedCertify:
    """A Certify statement that passed every check: the AK vouches that `key` lives in its TPM."""

    attest: TpmsAttest
    signature: Signature
    certified: CertifyInfo
    identity: TpmtPublic
    key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey


def check_identity_key(identity: TpmtPublic) -> rsa.RSAPublicKey | ec.EllipticCurvePublicKey:
    """Check the identity key's public area on its own; its key, or one IdentityKeyRejected subclass.

    Meaningful only for a public area whose name a verified Certify statement carries (as in
    `verify_certify`): the attributes of an unbound public area are whatever its sender wrote.
    """
    # a. Attributes (Part 2 §8.3): made inside this TPM and unable to leave it or its parent; an
    #    unrestricted signing key (restricted keys sign only TPM-made digests) that cannot decrypt.
    for flag, required, error in _ATTRIBUTE_RULES:
        if identity.has(flag) != required:
            state = "clear" if required else "set"
            raise error(
                f"identity key objectAttributes has {flag.name} {state} (0x{int(identity.attributes):08x})"
            )
    # b. nameAlg: the certified name binds this public area; it must be a strong hash.
    if identity.name_alg not in ACCEPTED_NAME_ALGS:
        raise IdentityKeyWeakNameAlg(
            f"identity key nameAlg is {alg_name(identity.name_alg)}; SHA256 or SHA384 required"
        )
    # c. Key strength.
    params = identity.parameters
    if isinstance(params, RsaParms):
        if params.key_bits < MIN_RSA_BITS:
            raise IdentityKeyWeak(f"identity key is RSA-{params.key_bits}; at least RSA-{MIN_RSA_BITS}")
    else:
        assert isinstance(params, EccParms)
        if params.curve not in ACCEPTED_CURVES:
            raise IdentityKeyWeak(
                f"identity key curve is {curve_name(params.curve)}; NIST P-256 or P-384 required"
            )
    # d. The key material is a valid key of the declared size / curve.
    return identity.public_key()


def verify_certify(
    attest: bytes,
    signature: bytes,
    *,
    ak: VerifiedAk,
    qualifying_data: bytes,
    identity: TpmtPublic,
    csr_public_key: CertificatePublicKeyTypes,
) -> VerifiedCertify:
    """Verify a TPM2_Certify of the identity key by the enrolled AK, and that the CSR carries that key.

    `attest` and `signature` are the marshalled TPMS_ATTEST and TPMT_SIGNATURE from the TPM;
    `qualifying_data` is the nonce the authority issued for this enrollment.
    """
    parsed = parse_tpms_attest(attest)
    sig = parse_tpmt_signature(signature)

    # 1. The enrolled AK signed these exact bytes, with its pinned scheme and hash.
    verify_attest_signature(parsed.raw, sig, ak)

    # 2. It is a Certify statement (TPM_ST_ATTEST_CERTIFY), not a quote or other attestation.
    if parsed.type != AttestType.CERTIFY or not isinstance(parsed.attested, CertifyInfo):
        raise WrongAttestType(f"TPMS_ATTEST type is {parsed.type.name}; CERTIFY required")
    certified = parsed.attested

    # 3. It answers this enrollment: extraData is the issued qualifying data (constant time).
    if not hmac.compare_digest(parsed.extra_data, qualifying_data):
        raise QualifyingDataMismatch("TPMS_ATTEST.extraData is not the issued qualifying data")

    # 4. It certifies the public area presented: the name is the authority's hash of it.
    if not hmac.compare_digest(certified.name, identity.name()):
        raise CertifiedNameMismatch("the certified name is not the name of the identity public area")

    # 5. The certified key is TPM-bound (fixedTPM, fixedParent, sensitiveDataOrigin), an
    #    unrestricted signer that cannot decrypt, with a strong nameAlg and key (check_identity_key).
    key = check_identity_key(identity)

    # 6. The CSR asks for a certificate on exactly that key.
    if csr_public_key.public_bytes(*_SPKI) != key.public_bytes(*_SPKI):
        raise CsrKeyMismatch("the CSR's public key is not the certified identity key")

    return VerifiedCertify(attest=parsed, signature=sig, certified=certified, identity=identity, key=key)
