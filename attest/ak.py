"""Attestation-key (AK) checks at enrollment (DESIGN.md, "The quote verifier must check").

`check_attestation_key` returns a `VerifiedAk` that pins the signing scheme and hash: later quotes
are verified with exactly that scheme, never with one the request names. A `VerifiedAk` is immutable
and also carries what verifying each quote needs (the `cryptography` signature algorithm and the
pcrDigest hash for the pinned hash), so a server that keeps it per truck pays for them once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from attest.alg import Alg, Curve, alg_name, curve_name, hash_for
from attest.errors import (
    AkCanDecrypt,
    AkNotFixedParent,
    AkNotFixedTpm,
    AkNotRestricted,
    AkNotSensitiveDataOrigin,
    AkNotSigning,
    AkSchemeNotPinned,
    AkUnsupportedScheme,
    AkWeakKey,
    AkWeakNameAlg,
    UnsupportedAlgorithm,
)
from attest.public import EccParms, ObjectAttributes, RsaParms, TpmtPublic

MIN_RSA_BITS = 2048
ACCEPTED_CURVES = frozenset({Curve.NIST_P256, Curve.NIST_P384})
ACCEPTED_NAME_ALGS = frozenset({Alg.SHA256, Alg.SHA384})
ACCEPTED_SIGNING_HASHES = frozenset({Alg.SHA256, Alg.SHA384})

# The attribute checks in order: (flag, must be set, error).
_ATTRIBUTE_RULES: tuple[tuple[ObjectAttributes, bool, type[Exception]], ...] = (
    (ObjectAttributes.RESTRICTED, True, AkNotRestricted),
    (ObjectAttributes.SIGN, True, AkNotSigning),
    (ObjectAttributes.DECRYPT, False, AkCanDecrypt),
    (ObjectAttributes.FIXED_TPM, True, AkNotFixedTpm),
    (ObjectAttributes.FIXED_PARENT, True, AkNotFixedParent),
    (ObjectAttributes.SENSITIVE_DATA_ORIGIN, True, AkNotSensitiveDataOrigin),
)


# hashlib is several times cheaper per call than cryptography's Hash for the short pcrDigest input.
# No SHA-1: an AK pinned to it is never enrolled, and verify_quote refuses one made by hand.
_HASHLIB: dict[int, Callable[[bytes], bytes]] = {
    Alg.SHA256: lambda data: hashlib.sha256(data).digest(),
    Alg.SHA384: lambda data: hashlib.sha384(data).digest(),
    Alg.SHA512: lambda data: hashlib.sha512(data).digest(),
}
_PKCS1V15 = padding.PKCS1v15()


@dataclass(frozen=True)
class VerifiedAk:
    """An AK public area that passed every enrollment check."""

    public: TpmtPublic
    name: bytes  # computed by the authority from the public area, never taken from the request
    scheme: int  # Alg.RSASSA or Alg.ECDSA: the only scheme quotes may use
    hash_alg: int  # Alg.SHA256 or Alg.SHA384: the only hash quotes may use
    key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey
    # Derived from hash_alg and key once (recomputed by dataclasses.replace): None when the pinned
    # hash is one this module cannot compute, which verification refuses anyway.
    ecdsa: ec.ECDSA | None = field(init=False, repr=False, compare=False)
    rsa_hash: hashes.HashAlgorithm | None = field(init=False, repr=False, compare=False)
    pcr_hash: Callable[[bytes], bytes] | None = field(init=False, repr=False, compare=False)
    # `key` by type, so the hot path needs no isinstance check (an ABC check costs as much as a parse).
    ec_key: ec.EllipticCurvePublicKey | None = field(init=False, repr=False, compare=False)
    rsa_key: rsa.RSAPublicKey | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        algorithm: hashes.HashAlgorithm | None
        try:
            algorithm = hash_for(self.hash_alg)
        except UnsupportedAlgorithm:
            algorithm = None
        ec_key = self.key if isinstance(self.key, ec.EllipticCurvePublicKey) else None
        rsa_key = self.key if isinstance(self.key, rsa.RSAPublicKey) else None
        object.__setattr__(self, "ec_key", ec_key)
        object.__setattr__(self, "rsa_key", rsa_key)
        object.__setattr__(self, "ecdsa", ec.ECDSA(algorithm) if algorithm and ec_key else None)
        object.__setattr__(self, "rsa_hash", algorithm if rsa_key else None)
        object.__setattr__(self, "pcr_hash", _HASHLIB.get(self.hash_alg))

    @property
    def rsa_padding(self) -> padding.AsymmetricPadding:
        """RSASSA-PKCS1-v1_5 (Part 1 §B.7), the only RSA scheme an AK is enrolled with."""
        return _PKCS1V15


def check_attestation_key(public: TpmtPublic) -> VerifiedAk:
    """Check an AK public area; raise one AkRejected subclass for the first rule it breaks."""
    # 1. Attributes (Part 2 §8.3): a restricted signing key that cannot decrypt, created inside
    #    this TPM (sensitiveDataOrigin) and unable to leave it or its parent (fixedTPM, fixedParent).
    for flag, required, error in _ATTRIBUTE_RULES:
        if public.has(flag) != required:
            state = "clear" if required else "set"
            raise error(f"AK objectAttributes has {flag.name} {state} (0x{int(public.attributes):08x})")

    # 2. nameAlg: the name binds the AK to the credential; it must be a strong hash.
    if public.name_alg not in ACCEPTED_NAME_ALGS:
        raise AkWeakNameAlg(f"AK nameAlg is {alg_name(public.name_alg)}; SHA256 or SHA384 required")

    # 3. Key strength.
    params = public.parameters
    if isinstance(params, RsaParms):
        if params.key_bits < MIN_RSA_BITS:
            raise AkWeakKey(f"AK is RSA-{params.key_bits}; at least RSA-{MIN_RSA_BITS} required")
        wanted_scheme = Alg.RSASSA
    else:
        assert isinstance(params, EccParms)
        if params.curve not in ACCEPTED_CURVES:
            raise AkWeakKey(f"AK curve is {curve_name(params.curve)}; NIST P-256 or P-384 required")
        wanted_scheme = Alg.ECDSA

    # 4. Scheme pinned in the key itself, so the TPM refuses to sign with any other.
    scheme = params.scheme
    if scheme.scheme == Alg.NULL:
        raise AkSchemeNotPinned("AK signing scheme is NULL; it must be fixed in the public area")
    if scheme.scheme != wanted_scheme or scheme.hash_alg not in ACCEPTED_SIGNING_HASHES:
        raise AkUnsupportedScheme(
            f"AK scheme {alg_name(scheme.scheme)}/{alg_name(scheme.hash_alg or Alg.NULL)}; "
            f"{wanted_scheme.name} with SHA256 or SHA384 required"
        )
    assert scheme.hash_alg is not None

    # 5. The key material itself must be a valid key of the declared size / curve.
    key = public.public_key()
    return VerifiedAk(
        public=public, name=public.name(), scheme=scheme.scheme, hash_alg=scheme.hash_alg, key=key
    )
