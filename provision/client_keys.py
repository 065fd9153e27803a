"""The public keys a private_key_jwt client registers (an RFC 7517 JWKS): EC P-256 / P-384 or RSA of at
least 2048 bits, each named by a `kid`, public members only.

Each key is pinned at registration to the JWS algorithms its type allows (RFC 7518 §3.3-3.5), or to the
one its `alg` member names, so an assertion's header can never choose an algorithm the key was not
registered for (no `none`, no HMAC keyed with the public key, no RS256 header on an EC key).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from provision.errors import ClientMetadataInvalid

MAX_KEYS = 10
MIN_RSA_BITS = 2048
MAX_RSA_BITS = 8192  # bounds the cost of one verification
# RFC 7517 §4 and RFC 7518 §6: members that carry private or symmetric key material.
_PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")
_CURVES: dict[str, tuple[ec.EllipticCurve, int, str]] = {
    "P-256": (ec.SECP256R1(), 32, "ES256"),
    "P-384": (ec.SECP384R1(), 48, "ES384"),
}
_RSA_ALGORITHMS = ("PS256", "RS256")
_KID = re.compile(r"^[\x21-\x7e]{1,128}$")
_B64URL = re.compile(r"^[A-Za-z0-9_-]+$")

PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey


@dataclass(frozen=True)
class ClientKey:
    kid: str
    algorithms: tuple[str, ...]  # the JWS algorithms an assertion under this kid may use
    public_key: PublicKey
    jwk: dict[str, str]  # the public members that were kept, for storage and display


def _b64url(jwk: Mapping[str, Any], member: str, where: str) -> bytes:
    value = jwk.get(member)
    if not isinstance(value, str) or not _B64URL.match(value):
        raise ClientMetadataInvalid(f"{where}: {member!r} must be unpadded base64url")
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        raise ClientMetadataInvalid(f"{where}: {member!r} is not base64url") from None


def _pinned(jwk: Mapping[str, Any], allowed: tuple[str, ...], where: str) -> tuple[str, ...]:
    alg = jwk.get("alg")
    if alg is None:
        return allowed
    if alg not in allowed:
        raise ClientMetadataInvalid(f"{where}: alg {alg!r} does not fit this key; expected one of {allowed}")
    return (str(alg),)


def _ec_key(jwk: Mapping[str, Any], where: str) -> tuple[PublicKey, tuple[str, ...], dict[str, str]]:
    crv = jwk.get("crv")
    if not isinstance(crv, str) or crv not in _CURVES:
        raise ClientMetadataInvalid(f"{where}: EC keys must be on P-256 or P-384, not {crv!r}")
    curve, size, alg = _CURVES[crv]
    x, y = _b64url(jwk, "x", where), _b64url(jwk, "y", where)
    if len(x) != size or len(y) != size:
        raise ClientMetadataInvalid(f"{where}: x and y of a {crv} key are {size} bytes each")
    numbers = ec.EllipticCurvePublicNumbers(int.from_bytes(x, "big"), int.from_bytes(y, "big"), curve)
    try:
        public = numbers.public_key()
    except ValueError:
        raise ClientMetadataInvalid(f"{where}: the point is not on {crv}") from None
    kept = {"kty": "EC", "crv": str(crv), "x": str(jwk["x"]), "y": str(jwk["y"])}
    return public, _pinned(jwk, (alg,), where), kept


def _rsa_key(jwk: Mapping[str, Any], where: str) -> tuple[PublicKey, tuple[str, ...], dict[str, str]]:
    n = int.from_bytes(_b64url(jwk, "n", where), "big")
    e = int.from_bytes(_b64url(jwk, "e", where), "big")
    if not MIN_RSA_BITS <= n.bit_length() <= MAX_RSA_BITS:
        raise ClientMetadataInvalid(
            f"{where}: RSA keys must be at least {MIN_RSA_BITS} bits (and at most {MAX_RSA_BITS}), "
            f"not {n.bit_length()}"
        )
    try:
        public = rsa.RSAPublicNumbers(e, n).public_key()
    except ValueError as exc:
        raise ClientMetadataInvalid(f"{where}: not a usable RSA public key ({exc})") from None
    kept = {"kty": "RSA", "n": str(jwk["n"]), "e": str(jwk["e"])}
    return public, _pinned(jwk, _RSA_ALGORITHMS, where), kept


def parse_jwk(jwk: Mapping[str, Any], where: str = "key") -> ClientKey:
    """One public signing JWK, or ClientMetadataInvalid naming what is wrong with it."""
    private = [member for member in _PRIVATE_MEMBERS if member in jwk]
    if private:
        raise ClientMetadataInvalid(f"{where}: private key members {private} must never be sent")
    kid = jwk.get("kid")
    if not isinstance(kid, str) or not _KID.match(kid):
        raise ClientMetadataInvalid(f"{where}: a kid of 1 to 128 visible ASCII characters is required")
    where = f"{where} (kid {kid!r})"
    if jwk.get("use", "sig") != "sig":
        raise ClientMetadataInvalid(f"{where}: use must be 'sig'")
    kty = jwk.get("kty")
    if kty == "EC":
        public, algorithms, kept = _ec_key(jwk, where)
    elif kty == "RSA":
        public, algorithms, kept = _rsa_key(jwk, where)
    else:
        raise ClientMetadataInvalid(f"{where}: kty must be EC or RSA, not {kty!r}")
    return ClientKey(kid=kid, algorithms=algorithms, public_key=public, jwk={**kept, "kid": kid})


def parse_jwks(jwks: Mapping[str, Any]) -> list[ClientKey]:
    """A registered JWKS: 1 to MAX_KEYS public keys with distinct kids."""
    keys = jwks.get("keys")
    if not isinstance(keys, list) or not 1 <= len(keys) <= MAX_KEYS:
        raise ClientMetadataInvalid(f"jwks: 'keys' must list 1 to {MAX_KEYS} keys")
    parsed: list[ClientKey] = []
    for index, jwk in enumerate(keys):
        if not isinstance(jwk, dict):
            raise ClientMetadataInvalid(f"jwks.keys[{index}]: a JSON object is required")
        parsed.append(parse_jwk(jwk, f"jwks.keys[{index}]"))
    kids = [key.kid for key in parsed]
    if len(set(kids)) != len(kids):
        raise ClientMetadataInvalid("jwks: every key needs its own kid")
    return parsed


def stored_key(kid: str, algorithms: str, public_jwk: str) -> ClientKey:
    """A key as stored at registration (already validated then; parsed again, never trusted blindly)."""
    key = parse_jwk(json.loads(public_jwk))
    return ClientKey(kid=kid, algorithms=tuple(algorithms.split()), public_key=key.public_key, jwk=key.jwk)
