"""A `cryptography` EC private key whose private half never leaves the TPM.

`TpmEcdsaKey.sign(data, ECDSA(SHA256()))` hashes here and has the TPM sign the digest, so it
slots into x509 builders (CSRs) and anything else that takes an EllipticCurvePrivateKey. Only
ECDSA with SHA-256 is offered: that is the scheme the identity key is bound to in the TPM.
"""

from __future__ import annotations

from collections.abc import Callable

from cryptography import utils as crypto_utils
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils


class TpmKeyError(TypeError):
    """An operation a TPM-resident key cannot do: export, ECDH, or a scheme it is not bound to."""


class TpmEcdsaKey(ec.EllipticCurvePrivateKey):
    """P-256 key in the TPM; `sign_digest(sha256_digest) -> (r, s)` is the TPM call."""

    def __init__(
        self, public_key: ec.EllipticCurvePublicKey, sign_digest: Callable[[bytes], tuple[int, int]]
    ) -> None:
        if not isinstance(public_key.curve, ec.SECP256R1):
            raise TpmKeyError("only P-256 identity keys are supported")
        self._public_key = public_key
        self._sign_digest = sign_digest

    def sign(
        self,
        data: crypto_utils.Buffer,
        signature_algorithm: ec.EllipticCurveSignatureAlgorithm,
    ) -> bytes:
        if not isinstance(signature_algorithm, ec.ECDSA):
            raise TpmKeyError("the TPM identity key only signs ECDSA")
        if not isinstance(signature_algorithm.algorithm, hashes.SHA256):
            raise TpmKeyError("the TPM identity key only signs with SHA-256 (hashed here, not prehashed)")
        hasher = hashes.Hash(hashes.SHA256())
        hasher.update(data)
        digest = hasher.finalize()
        r, s = self._sign_digest(digest)
        return utils.encode_dss_signature(r, s)

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._public_key

    @property
    def curve(self) -> ec.EllipticCurve:
        return self._public_key.curve

    @property
    def key_size(self) -> int:
        return self._public_key.key_size

    def exchange(self, algorithm: ec.ECDH, peer_public_key: ec.EllipticCurvePublicKey) -> bytes:
        raise TpmKeyError("the TPM identity key is a signing key: no ECDH")

    def private_numbers(self) -> ec.EllipticCurvePrivateNumbers:
        raise TpmKeyError("the TPM identity key cannot be exported")

    def private_bytes(
        self,
        encoding: serialization.Encoding,
        format: serialization.PrivateFormat,
        encryption_algorithm: serialization.KeySerializationEncryption,
    ) -> bytes:
        raise TpmKeyError("the TPM identity key cannot be exported")

    def __copy__(self) -> TpmEcdsaKey:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> TpmEcdsaKey:
        return self
