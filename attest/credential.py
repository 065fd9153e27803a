"""Software TPM2_MakeCredential: the enrollment challenge sealed to an EK for an AK name.

TPM 2.0 Part 1 §24 (Credential Protection) with the secret sharing of Part 1 Annex B (RSA: OAEP)
and Annex C (ECC: one-pass Diffie-Hellman, C(1e,1s)), and the KDFs of Part 1 §11.4.10. Only a TPM
holding the EK private key *and* a loaded object with exactly `object_name` can recover the secret
with TPM2_ActivateCredential, which is how the authority learns that the AK lives beside the EK.

Randomness can be passed in (`rand`), as in pyca/cryptography's style. Given a fixed `rand` the ECC
result is fully deterministic; for an RSA EK the credential blob is deterministic but the OAEP
ciphertext is not (OAEP draws its own padding seed inside OpenSSL). Without `rand`, the seed comes
from os.urandom and the ephemeral ECC key from OpenSSL's own key generation.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.decrepit.ciphers.modes import CFB
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from attest.alg import HASH_ALGS, Alg, alg_name, curve_bytes, curve_for, digest_size, hash_for
from attest.errors import (
    ActivationSecretMismatch,
    CredentialSecretSize,
    EkNotStorageKey,
    MalformedStructure,
)
from attest.marshal import Reader, tpm2b, u32
from attest.public import EccParms, EccPoint, ObjectAttributes, RsaParms, TpmtPublic

MIN_SECRET_BYTES = 16  # 128 bits (DESIGN.md)

_IDENTITY = b"IDENTITY"
_STORAGE = b"STORAGE"
_INTEGRITY = b"INTEGRITY"


@dataclass(frozen=True)
class MadeCredential:
    """TPM2_MakeCredential's outputs, each as the *contents* of its TPM2B (no size prefix)."""

    credential_blob: bytes  # TPM2B_ID_OBJECT: TPM2B_DIGEST(outerHMAC) ‖ encIdentity
    encrypted_secret: bytes  # TPM2B_ENCRYPTED_SECRET: OAEP ciphertext, or a TPMS_ECC_POINT


def _label(label: bytes) -> bytes:
    # Part 1 §11.4.10.4: the label is used with its terminating NUL octet (added if missing).
    return label if label.endswith(b"\x00") else label + b"\x00"


def kdfa(hash_alg: int, key: bytes, label: bytes, *, context_u: bytes, context_v: bytes, bits: int) -> bytes:
    """KDFa (Part 1 §11.4.10.2): SP 800-108 counter-mode KDF with HMAC-hash_alg; `bits` % 8 == 0.

    K(i) = HMAC(key, [i]32 ‖ label ‖ 00 ‖ contextU ‖ contextV ‖ [bits]32), concatenated, truncated.
    """
    if bits <= 0 or bits % 8:
        raise ValueError("KDFa here only produces a whole number of bytes")
    algorithm = hash_for(hash_alg)
    fixed = _label(label) + context_u + context_v + u32(bits)
    out = b""
    counter = 1
    while len(out) * 8 < bits:
        mac = crypto_hmac.HMAC(key, algorithm)
        mac.update(u32(counter) + fixed)
        out += mac.finalize()
        counter += 1
    return out[: bits // 8]


def kdfe(hash_alg: int, z: bytes, label: bytes, *, party_u: bytes, party_v: bytes, bits: int) -> bytes:
    """KDFe (Part 1 §11.4.10.3): SP 800-56A concatenation KDF with hash_alg; `bits` % 8 == 0.

    K(i) = H([i]32 ‖ Z ‖ label ‖ 00 ‖ partyUInfo ‖ partyVInfo), concatenated, truncated.
    """
    if bits <= 0 or bits % 8:
        raise ValueError("KDFe here only produces a whole number of bytes")
    algorithm = hash_for(hash_alg)
    other = _label(label) + party_u + party_v
    out = b""
    counter = 1
    while len(out) * 8 < bits:
        h = hashes.Hash(algorithm)
        h.update(u32(counter) + z + other)
        out += h.finalize()
        counter += 1
    return out[: bits // 8]


def _check_name(object_name: bytes) -> None:
    # A TPM2B_NAME of an object: nameAlg (u16) ‖ digest of that algorithm's size.
    r = Reader(object_name, "object name")
    name_alg = r.u16()
    if name_alg not in HASH_ALGS:
        raise MalformedStructure(f"object name starts with {alg_name(name_alg)}, not a hash algorithm")
    r.take(digest_size(name_alg))
    r.finish()


def _storage_symmetric(ek: TpmtPublic) -> int:
    """The EK's AES-CFB key size in bits; EkNotStorageKey if it cannot protect a credential."""
    if not (ek.has(ObjectAttributes.RESTRICTED) and ek.has(ObjectAttributes.DECRYPT)):
        raise EkNotStorageKey("EK is not a restricted decryption (storage) key")
    symmetric = ek.parameters.symmetric
    if symmetric.algorithm != Alg.AES or symmetric.mode != Alg.CFB:
        raise EkNotStorageKey(
            f"EK symmetric is {alg_name(symmetric.algorithm)}/{alg_name(symmetric.mode)}; AES-CFB required"
        )
    if symmetric.key_bits not in (128, 192, 256):
        raise EkNotStorageKey(f"EK symmetric AES key size {symmetric.key_bits} is invalid")
    return symmetric.key_bits


def _random_scalar(order: int, rand: Callable[[int], bytes]) -> int:
    # FIPS 186-5 A.2.1 (extra random bits): 64 more bits than the order, reduced into [1, n-1].
    size = (order.bit_length() + 64 + 7) // 8
    return int.from_bytes(rand(size), "big") % (order - 1) + 1


_ORDERS: dict[int, int] = {
    256: 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
    384: int(
        "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973",
        16,
    ),
    521: int("01" + "F" * 64 + "FA51868783BF2F966B7FCC0148F709A5D03BB5C9B8899C47AEBB6FB71E91386409", 16),
}


def _seed_rsa(ek: TpmtPublic, rand: Callable[[int], bytes] | None) -> tuple[bytes, bytes]:
    # Part 1 Annex B.10.4: a random seed of the nameAlg digest size, RSA-OAEP encrypted to the EK
    # with the EK's nameAlg as OAEP and MGF1 hash and "IDENTITY\0" as the label.
    key = ek.public_key()
    assert isinstance(key, rsa.RSAPublicKey)
    seed = (rand or os.urandom)(digest_size(ek.name_alg))
    algorithm = hash_for(ek.name_alg)
    encrypted = key.encrypt(
        seed, padding.OAEP(mgf=padding.MGF1(algorithm), algorithm=algorithm, label=_label(_IDENTITY))
    )
    return seed, encrypted


def _seed_ecc(ek: TpmtPublic, rand: Callable[[int], bytes] | None) -> tuple[bytes, bytes]:
    # Part 1 Annex C.6.4: an ephemeral key on the EK's curve, Z = x of d_e·Q_EK, and
    # seed = KDFe(nameAlg, Z, "IDENTITY", x_ephemeral, x_EK, digest bits); the TPM gets the point.
    params = ek.parameters
    assert isinstance(params, EccParms) and isinstance(ek.unique, EccPoint)
    ek_key = ek.public_key()
    assert isinstance(ek_key, ec.EllipticCurvePublicKey)
    curve = curve_for(params.curve)
    size = curve_bytes(params.curve)
    if rand is None:
        ephemeral = ec.generate_private_key(curve)  # OpenSSL's generator: about twice as fast as deriving
    else:
        ephemeral = ec.derive_private_key(_random_scalar(_ORDERS[curve.key_size], rand), curve)
    z = ephemeral.exchange(ec.ECDH(), ek_key)
    numbers = ephemeral.public_key().public_numbers()
    x = numbers.x.to_bytes(size, "big")
    y = numbers.y.to_bytes(size, "big")
    seed = kdfe(ek.name_alg, z, _IDENTITY, party_u=x, party_v=ek.unique.x, bits=digest_size(ek.name_alg) * 8)
    return seed, tpm2b(x) + tpm2b(y)


def make_credential(
    ek: TpmtPublic,
    object_name: bytes,
    secret: bytes,
    *,
    rand: Callable[[int], bytes] | None = None,
) -> MadeCredential:
    """Seal `secret` to `ek` for the object (AK) named `object_name` (Part 1 §24, Part 3 §12.6).

    `object_name` must be the name the *authority* computed (`TpmtPublic.name()` of the checked
    AK), never one a request carries. `secret` must be 16 bytes up to the EK nameAlg digest size.
    """
    # 1. Inputs.
    max_secret = digest_size(ek.name_alg)
    if not MIN_SECRET_BYTES <= len(secret) <= max_secret:
        raise CredentialSecretSize(
            f"credential secret is {len(secret)} bytes; {MIN_SECRET_BYTES}..{max_secret} required"
        )
    _check_name(object_name)
    sym_bits = _storage_symmetric(ek)

    # 2. Seed shared with the EK (Part 1 §24.4 / Annex B, C).
    if isinstance(ek.parameters, RsaParms):
        seed, encrypted_secret = _seed_rsa(ek, rand)
    else:
        seed, encrypted_secret = _seed_ecc(ek, rand)

    # 3. encIdentity = CFB_symKey(TPM2B_DIGEST(secret)), IV zero (Part 1 §24.4).
    sym_key = kdfa(ek.name_alg, seed, _STORAGE, context_u=object_name, context_v=b"", bits=sym_bits)
    encryptor = Cipher(algorithms.AES(sym_key), CFB(bytes(16))).encryptor()
    enc_identity = encryptor.update(tpm2b(secret)) + encryptor.finalize()

    # 4. outerHMAC = HMAC_nameAlg(KDFa(seed, "INTEGRITY"), encIdentity ‖ name) (Part 1 §24.5).
    hmac_key = kdfa(
        ek.name_alg, seed, _INTEGRITY, context_u=b"", context_v=b"", bits=digest_size(ek.name_alg) * 8
    )
    mac = crypto_hmac.HMAC(hmac_key, hash_for(ek.name_alg))
    mac.update(enc_identity + object_name)
    outer_hmac = mac.finalize()

    return MadeCredential(credential_blob=tpm2b(outer_hmac) + enc_identity, encrypted_secret=encrypted_secret)


def secrets_match(expected: bytes, presented: bytes) -> None:
    """Raise ActivationSecretMismatch unless `presented` equals `expected` (constant time)."""
    if not hmac.compare_digest(expected, presented):
        raise ActivationSecretMismatch("the activated credential secret does not match the challenge")
