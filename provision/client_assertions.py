"""Checking a private_key_jwt client assertion (RFC 7523 §2.2 and §3, OpenID Connect Core §9).

Two steps, because the key to check with depends on who the assertion claims to be from:
`claimed_client` reads the unverified header and claims only to find the client and the key id (and
refuses unsupported algorithms before any key is touched); `verify_assertion` then checks the signature
with that client's registered key and every claim against the authority's clock. Each failure raises
ClientAuthenticationFailed with the precise reason (RFC 6749 §5.2 invalid_client).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from jwt.api_jws import PyJWS

from provision.client_keys import ClientKey
from provision.errors import ClientAuthenticationFailed

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
SIGNING_ALGORITHMS = ("ES256", "ES384", "PS256", "RS256")
MAX_LIFETIME = timedelta(minutes=5)
MAX_JTI = 128
_JWS = PyJWS(algorithms=list(SIGNING_ALGORITHMS))


@dataclass(frozen=True)
class ClaimedClient:
    """What an assertion says before it is verified: only good for choosing the key."""

    client_id: str
    kid: str
    alg: str


@dataclass(frozen=True)
class VerifiedAssertion:
    client_id: str
    jti: str
    expires_at: datetime


def _fail(reason: str) -> ClientAuthenticationFailed:
    return ClientAuthenticationFailed(f"client assertion refused: {reason}")


def claimed_client(assertion: str) -> ClaimedClient:
    try:
        header = jwt.get_unverified_header(assertion)
        claims = jwt.decode(assertion, options={"verify_signature": False})
    except jwt.InvalidTokenError as exc:
        raise _fail(f"not a JWS compact JWT ({exc})") from None
    alg = header.get("alg")
    if alg not in SIGNING_ALGORITHMS:
        raise _fail(f"alg {alg!r} is not accepted; one of {list(SIGNING_ALGORITHMS)}")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise _fail("the header has no kid naming one of the client's registered keys")
    iss, sub = claims.get("iss"), claims.get("sub")
    # RFC 7523 §3 points 1-2: the client is both the issuer and the subject.
    if not isinstance(sub, str) or not sub:
        raise _fail("sub (the client_id) is missing or not a string")
    if iss != sub:
        raise _fail("iss and sub must both be the client_id")
    return ClaimedClient(client_id=sub, kid=kid, alg=str(alg))


def _time_claim(claims: Mapping[str, Any], name: str) -> float | None:
    """A NumericDate (RFC 7519 §2: seconds, possibly fractional), or None when absent."""
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _fail(f"{name} is not a NumericDate")
    return float(value)


def verify_assertion(
    assertion: str,
    claimed: ClaimedClient,
    key: ClientKey,
    *,
    audiences: tuple[str, ...],
    now: datetime,
    leeway: timedelta,
) -> VerifiedAssertion:
    """The assertion's signature by `key` and its claims, or ClientAuthenticationFailed."""
    if claimed.alg not in key.algorithms:
        raise _fail(f"alg {claimed.alg} does not fit key {key.kid!r}, registered for {list(key.algorithms)}")
    try:
        payload = _JWS.decode_complete(assertion, key.public_key, algorithms=[claimed.alg])["payload"]
    except jwt.InvalidSignatureError:
        raise _fail(f"the signature does not verify with key {key.kid!r}") from None
    except jwt.InvalidTokenError as exc:
        raise _fail(f"not verifiable ({exc})") from None
    claims = json.loads(payload)
    # RFC 7523 §3 point 3: we are the audience. The token endpoint URL (OIDC Core §9) or the issuer
    # identifier, and nothing else in the same aud: an array naming other parties is refused.
    aud = claims.get("aud")
    values = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    if len(values) != 1 or values[0] not in audiences:
        raise _fail(f"aud must be exactly one of {list(audiences)}")
    # Point 4: exp is required, and an assertion is short-lived (at most MAX_LIFETIME).
    at = now.timestamp()
    slack = leeway.total_seconds()
    exp, iat, nbf = (_time_claim(claims, name) for name in ("exp", "iat", "nbf"))
    if exp is None:
        raise _fail("exp is missing")
    if exp <= at - slack:
        raise _fail("expired (exp is in the past)")
    # Point 5-6: not before its time, and not issued in the future.
    if nbf is not None and nbf > at + slack:
        raise _fail("not yet valid (nbf is in the future)")
    if iat is not None and iat > at + slack:
        raise _fail("iat is in the future")
    longest = MAX_LIFETIME.total_seconds()
    if exp - (iat if iat is not None else at) > longest or exp > at + longest + slack:
        raise _fail(f"exp is more than {longest:.0f} s after iat; assertions are short-lived")
    # Point 7: a jti the caller spends once (provision.single_use).
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti:
        raise _fail("jti is missing; assertions are single use")
    if len(jti) > MAX_JTI:
        raise _fail(f"jti is longer than {MAX_JTI} characters")
    if claims.get("iss") != claimed.client_id or claims.get("sub") != claimed.client_id:
        raise _fail("iss and sub must both be the client_id")
    return VerifiedAssertion(
        client_id=claimed.client_id, jti=jti, expires_at=datetime.fromtimestamp(exp + slack, tz=UTC)
    )
