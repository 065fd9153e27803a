"""TPMT_PUBLIC / TPM2B_PUBLIC for RSA and ECC keys (TPM 2.0 Part 2 §12.2), parsed strictly.

The parsed object keeps the exact bytes it came from: `name()` hashes those bytes, never a
re-marshalled copy, so the name the authority computes is the name the TPM computes.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from attest.alg import HASH_ALGS, Alg, alg_name, curve_bytes, curve_for, curve_name, digest
from attest.errors import MalformedStructure, UnsupportedAlgorithm, UnsupportedKeyType
from attest.marshal import Reader, u16

# Largest RSA modulus / ECC coordinate / digest a TPM2B in a public area may carry (Part 2 §10.3,
# §11.2.4.5, §11.2.5.1 with MAX_RSA_KEY_BYTES = 512, MAX_ECC_KEY_BYTES = 128, sizeof(TPMU_HA) = 64).
_MAX_RSA_BYTES = 512
_MAX_ECC_BYTES = 128
_MAX_DIGEST = 64
_DEFAULT_EXPONENT = 65537


class ObjectAttributes(enum.IntFlag):
    """TPMA_OBJECT (Part 2 §8.3). Bits not listed here are reserved and must be clear."""

    FIXED_TPM = 1 << 1
    ST_CLEAR = 1 << 2
    FIXED_PARENT = 1 << 4
    SENSITIVE_DATA_ORIGIN = 1 << 5
    USER_WITH_AUTH = 1 << 6
    ADMIN_WITH_POLICY = 1 << 7
    NO_DA = 1 << 10
    ENCRYPTED_DUPLICATION = 1 << 11
    RESTRICTED = 1 << 16
    DECRYPT = 1 << 17
    SIGN = 1 << 18
    X509_SIGN = 1 << 19


_ALL_ATTRIBUTES = 0
for _flag in ObjectAttributes:
    _ALL_ATTRIBUTES |= _flag.value


@dataclass(frozen=True)
class SymDef:
    """TPMT_SYM_DEF_OBJECT: algorithm NULL (key_bits = mode = 0) or a block cipher, key size, mode."""

    algorithm: int
    key_bits: int = 0
    mode: int = 0


@dataclass(frozen=True)
class Scheme:
    """TPMT_RSA_SCHEME / TPMT_ECC_SCHEME / TPMT_KDF_SCHEME: scheme NULL (no hash) or scheme + hash."""

    scheme: int
    hash_alg: int | None = None
    count: int | None = None  # ECDAA only


@dataclass(frozen=True)
class RsaParms:
    symmetric: SymDef
    scheme: Scheme
    key_bits: int
    exponent: int  # as marshalled: 0 means 65537

    @property
    def effective_exponent(self) -> int:
        return self.exponent or _DEFAULT_EXPONENT


@dataclass(frozen=True)
class EccParms:
    symmetric: SymDef
    scheme: Scheme
    curve: int
    kdf: Scheme


@dataclass(frozen=True)
class EccPoint:
    x: bytes
    y: bytes


@dataclass(frozen=True)
class TpmtPublic:
    type: int
    name_alg: int
    attributes: ObjectAttributes
    auth_policy: bytes
    parameters: RsaParms | EccParms
    unique: bytes | EccPoint  # RSA modulus, or the ECC point
    raw: bytes  # the exact marshalled TPMT_PUBLIC this was parsed from

    def has(self, flag: ObjectAttributes) -> bool:
        return bool(self.attributes & flag)

    def name(self) -> bytes:
        """TPM2B_NAME contents: nameAlg (u16) ‖ H_nameAlg(marshalled TPMT_PUBLIC) (Part 1 §16)."""
        return u16(self.name_alg) + digest(self.name_alg, self.raw)

    def public_key(self) -> rsa.RSAPublicKey | ec.EllipticCurvePublicKey:
        """The key as a cryptography object; MalformedStructure if unique does not fit the parameters."""
        if isinstance(self.parameters, RsaParms):
            assert isinstance(self.unique, bytes)
            modulus = self.unique
            if len(modulus) * 8 != self.parameters.key_bits or not modulus or modulus[0] & 0x80 == 0:
                raise MalformedStructure(
                    f"TPMT_PUBLIC: RSA modulus of {len(modulus)} bytes does not match "
                    f"keyBits {self.parameters.key_bits}"
                )
            try:
                return rsa.RSAPublicNumbers(
                    self.parameters.effective_exponent, int.from_bytes(modulus, "big")
                ).public_key()
            except ValueError as exc:
                raise MalformedStructure(f"TPMT_PUBLIC: invalid RSA public key: {exc}") from None
        assert isinstance(self.unique, EccPoint)
        curve = curve_for(self.parameters.curve)
        size = curve_bytes(self.parameters.curve)
        point = self.unique
        if len(point.x) != size or len(point.y) != size:
            raise MalformedStructure(
                f"TPMT_PUBLIC: ECC point coordinates of {len(point.x)}/{len(point.y)} bytes, "
                f"{curve_name(self.parameters.curve)} needs {size}"
            )
        try:
            return ec.EllipticCurvePublicKey.from_encoded_point(curve, b"\x04" + point.x + point.y)
        except ValueError:
            raise MalformedStructure("TPMT_PUBLIC: ECC point is not on the curve") from None


def _hash_alg(r: Reader, field: str) -> int:
    value = r.u16()
    if value not in HASH_ALGS:
        raise UnsupportedAlgorithm(f"{r.what}: {field} {alg_name(value)} is not a hash algorithm")
    return value


def _sym_def_object(r: Reader) -> SymDef:
    # TPMT_SYM_DEF_OBJECT (Part 2 §11.1.7): algorithm, then keyBits and mode unless NULL.
    algorithm = r.u16()
    if algorithm == Alg.NULL:
        return SymDef(algorithm)
    if algorithm not in (Alg.AES, Alg.CAMELLIA, Alg.SM4):
        raise UnsupportedAlgorithm(f"{r.what}: symmetric algorithm {alg_name(algorithm)} not allowed")
    key_bits = r.u16()
    mode = r.u16()
    if mode not in (Alg.CTR, Alg.OFB, Alg.CBC, Alg.CFB, Alg.ECB, Alg.NULL):
        raise UnsupportedAlgorithm(f"{r.what}: symmetric mode {alg_name(mode)} not allowed")
    return SymDef(algorithm, key_bits, mode)


_RSA_SCHEMES = frozenset({Alg.RSASSA, Alg.RSAPSS, Alg.OAEP, Alg.RSAES})
_ECC_SCHEMES = frozenset({Alg.ECDSA, Alg.ECDH, Alg.ECDAA, Alg.SM2, Alg.ECSCHNORR, Alg.ECMQV})
_KDF_SCHEMES = frozenset({Alg.KDF1_SP800_56A, Alg.KDF2, Alg.KDF1_SP800_108})


def _scheme(r: Reader, allowed: frozenset[Alg], field: str) -> Scheme:
    # TPMT_*_SCHEME (Part 2 §11.2): scheme, then its details: nothing for NULL and RSAES,
    # TPMS_SCHEME_ECDAA (hash, count) for ECDAA, TPMS_SCHEME_HASH (hash) for all the others.
    scheme = r.u16()
    if scheme == Alg.NULL:
        return Scheme(scheme)
    if scheme not in allowed:
        raise UnsupportedAlgorithm(f"{r.what}: {field} {alg_name(scheme)} not allowed here")
    if scheme == Alg.RSAES:
        return Scheme(scheme)
    hash_alg = _hash_alg(r, f"{field} hash")
    if scheme == Alg.ECDAA:
        return Scheme(scheme, hash_alg, r.u16())
    return Scheme(scheme, hash_alg)


def _read_public(r: Reader) -> TpmtPublic:
    start = r.offset
    # Part 2 §12.2.4 TPMT_PUBLIC: type, nameAlg, objectAttributes, authPolicy, parameters, unique.
    key_type = r.u16()
    if key_type not in (Alg.RSA, Alg.ECC):
        raise UnsupportedKeyType(f"{r.what}: key type {alg_name(key_type)} (only RSA and ECC are accepted)")
    name_alg = _hash_alg(r, "nameAlg")
    raw_attributes = r.u32()
    if raw_attributes & ~_ALL_ATTRIBUTES:
        raise MalformedStructure(f"{r.what}: reserved objectAttributes bits set (0x{raw_attributes:08x})")
    attributes = ObjectAttributes(raw_attributes)
    auth_policy = r.tpm2b(_MAX_DIGEST)
    parameters: RsaParms | EccParms
    unique: bytes | EccPoint
    if key_type == Alg.RSA:
        # TPMS_RSA_PARMS (§12.2.3.5): symmetric, scheme, keyBits, exponent.
        symmetric = _sym_def_object(r)
        scheme = _scheme(r, _RSA_SCHEMES, "RSA scheme")
        key_bits = r.u16()
        exponent = r.u32()
        parameters = RsaParms(symmetric, scheme, key_bits, exponent)
        unique = r.tpm2b(_MAX_RSA_BYTES)
    else:
        # TPMS_ECC_PARMS (§12.2.3.6): symmetric, scheme, curveID, kdf.
        symmetric = _sym_def_object(r)
        scheme = _scheme(r, _ECC_SCHEMES, "ECC scheme")
        curve = r.u16()
        kdf = _scheme(r, _KDF_SCHEMES, "KDF scheme")
        parameters = EccParms(symmetric, scheme, curve, kdf)
        unique = EccPoint(r.tpm2b(_MAX_ECC_BYTES), r.tpm2b(_MAX_ECC_BYTES))
    return TpmtPublic(
        type=key_type,
        name_alg=name_alg,
        attributes=attributes,
        auth_policy=auth_policy,
        parameters=parameters,
        unique=unique,
        raw=r.consumed(start),
    )


def parse_tpmt_public(data: bytes) -> TpmtPublic:
    """Parse a marshalled TPMT_PUBLIC (e.g. `tpm2_readpublic -f tpmt`); no trailing bytes allowed."""
    r = Reader(data, "TPMT_PUBLIC")
    public = _read_public(r)
    r.finish()
    return public


def parse_tpm2b_public(data: bytes) -> TpmtPublic:
    """Parse a TPM2B_PUBLIC (what tpm2-tools writes with `-u` / `tpm2_readpublic -o`)."""
    outer = Reader(data, "TPM2B_PUBLIC")
    body = outer.tpm2b()
    outer.finish()
    if not body:
        raise MalformedStructure("TPM2B_PUBLIC: empty public area")
    return parse_tpmt_public(body)
