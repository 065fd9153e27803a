"""The Signer protocol: how the cores reach a private key without knowing where it lives.

A backend (file keys here, Vault/OpenBao Transit in provision/) hands out objects of this shape.
`private_key()` returns something cryptography's builders accept: the real key for file keys, a
wrapper whose `sign` calls out to the backend for Transit, so certificate, CRL and OCSP signing all
go through one path.
"""

from __future__ import annotations

import enum
from typing import Protocol, runtime_checkable

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificateIssuerPublicKeyTypes,
)


class KeyAlgorithm(enum.StrEnum):
    EC_P256 = "ec-p256"
    EC_P384 = "ec-p384"
    RSA_3072 = "rsa-3072"
    ED25519 = "ed25519"

    def signing_hash(self) -> hashes.SHA256 | hashes.SHA384 | None:
        """The hash cryptography's builders need with this key type (None for Ed25519)."""
        if self is KeyAlgorithm.EC_P384:
            return hashes.SHA384()
        if self is KeyAlgorithm.ED25519:
            return None
        return hashes.SHA256()


def algorithm_of(public_key: CertificateIssuerPublicKeyTypes) -> KeyAlgorithm:
    """Classify a public key; raises ValueError for anything a CA key may not be."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if isinstance(public_key.curve, ec.SECP256R1):
            return KeyAlgorithm.EC_P256
        if isinstance(public_key.curve, ec.SECP384R1):
            return KeyAlgorithm.EC_P384
    elif isinstance(public_key, rsa.RSAPublicKey) and public_key.key_size == 3072:
        return KeyAlgorithm.RSA_3072
    elif isinstance(public_key, ed25519.Ed25519PublicKey):
        return KeyAlgorithm.ED25519
    raise ValueError(f"unsupported CA key: {type(public_key).__name__}")


@runtime_checkable
class Signer(Protocol):
    """A private key held by some backend. `key_ref` is stable and storable (e.g. "file:ab12..")."""

    @property
    def key_ref(self) -> str: ...

    @property
    def algorithm(self) -> KeyAlgorithm: ...

    def public_key(self) -> CertificateIssuerPublicKeyTypes: ...

    def private_key(self) -> CertificateIssuerPrivateKeyTypes:
        """A key object cryptography's Certificate/CRL/OCSP builders can sign with."""
        ...


class KeyBackend(Protocol):
    """Creates and loads signers. Raises pki.errors.SignerUnavailable when the backend is down."""

    def create(self, algorithm: KeyAlgorithm, label: str) -> Signer: ...

    def load(self, key_ref: str) -> Signer: ...

    def check(self) -> None:
        """Raise SignerUnavailable if the backend cannot sign right now (readiness)."""
        ...

    def close(self) -> None: ...
