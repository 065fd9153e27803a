"""Compact JWS (RFC 7515) signed with ECDSA (RFC 7518 §3.4: ES256 on P-256, ES384 on P-384) by any
key a `Signer` hands out, and the matching public JWK (RFC 7517) for a JWKS.

Signing goes through the backend's key object, so a token key can live in Vault Transit like a CA key;
verification is left to standard JWT libraries against the published JWKS.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from pki.signer import KeyAlgorithm, Signer

# A part longer than this is not peeked at: a truck's header carries its certificates (x5c) and fits.
_MAX_PEEK = 16384
_JWS_ALG = {KeyAlgorithm.EC_P256: ("ES256", "P-256", 32), KeyAlgorithm.EC_P384: ("ES384", "P-384", 48)}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _params(algorithm: KeyAlgorithm) -> tuple[str, str, int]:
    try:
        return _JWS_ALG[algorithm]
    except KeyError:
        raise ValueError(f"token keys must be EC P-256 or P-384, not {algorithm}") from None


def thumbprint(public: ec.EllipticCurvePublicKey) -> str:
    """RFC 7638 JWK thumbprint: stable, and derived from nothing but the key."""
    jwk = ec_jwk(public, kid=None)
    members = {name: jwk[name] for name in ("crv", "kty", "x", "y")}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    return b64url(hashlib.sha256(canonical).digest())


def ec_jwk(public: ec.EllipticCurvePublicKey, *, kid: str | None) -> dict[str, str]:
    """The public JWK of a P-256 or P-384 key (RFC 7518 §6.2)."""
    curves = {"secp256r1": ("ES256", "P-256", 32), "secp384r1": ("ES384", "P-384", 48)}
    if public.curve.name not in curves:
        raise ValueError(f"token keys must be EC P-256 or P-384, not {public.curve.name}")
    alg, crv, size = curves[public.curve.name]
    numbers = public.public_numbers()
    jwk = {
        "kty": "EC",
        "crv": crv,
        "x": b64url(numbers.x.to_bytes(size, "big")),
        "y": b64url(numbers.y.to_bytes(size, "big")),
        "use": "sig",
        "alg": alg,
    }
    if kid is not None:
        jwk["kid"] = kid
    return jwk


def _ec_public(signer: Signer) -> ec.EllipticCurvePublicKey:
    _params(signer.algorithm)
    public = signer.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey):
        raise ValueError("token keys must be EC keys")
    return public


def key_id(signer: Signer) -> str:
    return thumbprint(_ec_public(signer))


def public_jwk(signer: Signer, *, kid: str | None) -> dict[str, str]:
    return ec_jwk(_ec_public(signer), kid=kid)


def sign_compact(signer: Signer, claims: Mapping[str, Any], *, kid: str, typ: str = "JWT") -> str:
    """header.payload.signature, the signature as the fixed-size r ‖ s JWS requires (not DER)."""
    alg, _, size = _params(signer.algorithm)
    header = {"alg": alg, "kid": kid, "typ": typ}
    signing_input = (
        b64url(json.dumps(header, separators=(",", ":")).encode())
        + "."
        + b64url(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())
    )
    key = signer.private_key()
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("token keys must be EC keys")
    hash_alg: hashes.HashAlgorithm = hashes.SHA256() if size == 32 else hashes.SHA384()
    r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hash_alg)))
    return signing_input + "." + b64url(r.to_bytes(size, "big") + s.to_bytes(size, "big"))


def unverified_part(token: str, index: int) -> dict[str, Any] | None:
    """Part `index` of a compact JWS (0 the protected header, 1 the payload) as a JSON object, unverified:
    only to route a bearer token to the verifier of its kind or to look up what it claims before the
    verifier checks it, never to decide anything. None when that part is not a base64url JSON object."""
    parts = token.split(".", 3)
    if len(parts) < 2 or index >= len(parts) or not parts[index] or len(parts[index]) > _MAX_PEEK:
        return None
    segment = parts[index]
    try:
        value = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


def unverified_type(token: str) -> str | None:
    """The `typ` of a compact JWS's protected header, unverified (see `unverified_part`)."""
    header = unverified_part(token, 0)
    typ = header.get("typ") if header is not None else None
    return typ if isinstance(typ, str) else None
