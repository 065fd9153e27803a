"""TPM 2.0 algorithm and curve identifiers (TPM 2.0 Part 2 §6.3 TPM_ALG_ID, §6.4 TPM_ECC_CURVE)."""

from __future__ import annotations

import enum

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from attest.errors import UnsupportedAlgorithm


class Alg(enum.IntEnum):
    RSA = 0x0001
    SHA1 = 0x0004
    HMAC = 0x0005
    AES = 0x0006
    KEYEDHASH = 0x0008
    XOR = 0x000A
    SHA256 = 0x000B
    SHA384 = 0x000C
    SHA512 = 0x000D
    NULL = 0x0010
    SM3_256 = 0x0012
    SM4 = 0x0013
    RSASSA = 0x0014
    RSAES = 0x0015
    RSAPSS = 0x0016
    OAEP = 0x0017
    ECDSA = 0x0018
    ECDH = 0x0019
    ECDAA = 0x001A
    SM2 = 0x001B
    ECSCHNORR = 0x001C
    ECMQV = 0x001D
    KDF1_SP800_56A = 0x0020
    KDF2 = 0x0021
    KDF1_SP800_108 = 0x0022
    ECC = 0x0023
    SYMCIPHER = 0x0025
    CAMELLIA = 0x0026
    CTR = 0x0040
    OFB = 0x0041
    CBC = 0x0042
    CFB = 0x0043
    ECB = 0x0044


class Curve(enum.IntEnum):
    NIST_P192 = 0x0001
    NIST_P224 = 0x0002
    NIST_P256 = 0x0003
    NIST_P384 = 0x0004
    NIST_P521 = 0x0005
    BN_P256 = 0x0010
    BN_P638 = 0x0011
    SM2_P256 = 0x0020


HASH_ALGS: frozenset[Alg] = frozenset({Alg.SHA1, Alg.SHA256, Alg.SHA384, Alg.SHA512, Alg.SM3_256})

_HASHES: dict[Alg, type[hashes.HashAlgorithm]] = {
    Alg.SHA1: hashes.SHA1,
    Alg.SHA256: hashes.SHA256,
    Alg.SHA384: hashes.SHA384,
    Alg.SHA512: hashes.SHA512,
}

_CURVES: dict[Curve, type[ec.EllipticCurve]] = {
    Curve.NIST_P256: ec.SECP256R1,
    Curve.NIST_P384: ec.SECP384R1,
    Curve.NIST_P521: ec.SECP521R1,
}


def alg_name(value: int) -> str:
    try:
        return Alg(value).name
    except ValueError:
        return f"0x{value:04x}"


def curve_name(value: int) -> str:
    try:
        return Curve(value).name
    except ValueError:
        return f"0x{value:04x}"


def hash_for(alg: int) -> hashes.HashAlgorithm:
    """The cryptography hash for a TPM hash algorithm; UnsupportedAlgorithm for others (and SM3)."""
    try:
        return _HASHES[Alg(alg)]()
    except (ValueError, KeyError):
        raise UnsupportedAlgorithm(f"hash algorithm {alg_name(alg)} is not supported") from None


def digest_size(alg: int) -> int:
    return hash_for(alg).digest_size


def digest(alg: int, data: bytes) -> bytes:
    h = hashes.Hash(hash_for(alg))
    h.update(data)
    return h.finalize()


def curve_for(curve: int) -> ec.EllipticCurve:
    """The cryptography curve for a TPM curve ID; UnsupportedAlgorithm for curves we do not handle."""
    try:
        return _CURVES[Curve(curve)]()
    except (ValueError, KeyError):
        raise UnsupportedAlgorithm(f"ECC curve {curve_name(curve)} is not supported") from None


def curve_bytes(curve: int) -> int:
    return (curve_for(curve).key_size + 7) // 8
