"""Client assertion checks on vectors with a fixed clock: a good ES384 / PS256 assertion verifies; each
negative changes one claim or header field around the edges (leeway, lifetime, NumericDate shape); a
registered JWK keeps only its public members and is pinned to its algorithms."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from provision.client_assertions import claimed_client, verify_assertion
from provision.client_keys import ClientKey, parse_jwk, parse_jwks
from provision.errors import ClientAuthenticationFailed, ClientMetadataInvalid

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
AT = int(NOW.timestamp())
ENDPOINT = "https://ws.fleet.test/v1/oauth/token"
ISSUER = "https://ws.fleet.test"
LEEWAY = timedelta(seconds=30)
EC_KEY = ec.generate_private_key(ec.SECP384R1())
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def ec_client_key() -> ClientKey:
    return parse_jwk({**ECAlgorithm.to_jwk(EC_KEY.public_key(), as_dict=True), "kid": "ec"})


def good_claims(**changes: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "iss": "c1",
        "sub": "c1",
        "aud": ENDPOINT,
        "iat": AT,
        "exp": AT + 120,
        "jti": "j1",
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def check(token: str, key: ClientKey | None = None) -> str:
    verified = verify_assertion(
        token,
        claimed_client(token),
        key or ec_client_key(),
        audiences=(ENDPOINT, ISSUER),
        now=NOW,
        leeway=LEEWAY,
    )
    return verified.jti


def test_good_assertions_verify() -> None:
    assert check(jwt.encode(good_claims(), EC_KEY, algorithm="ES384", headers={"kid": "ec"})) == "j1"
    rsa_key = parse_jwk({**RSAAlgorithm.to_jwk(RSA_KEY.public_key(), as_dict=True), "kid": "r"})
    assert rsa_key.algorithms == ("PS256", "RS256")
    token = jwt.encode(good_claims(aud=ISSUER), RSA_KEY, algorithm="PS256", headers={"kid": "r"})
    assert check(token, rsa_key) == "j1"
    # A fractional NumericDate and a one-element aud array are fine.
    fractional = jwt.encode(
        good_claims(exp=AT + 60.5, aud=[ENDPOINT]), EC_KEY, algorithm="ES384", headers={"kid": "ec"}
    )
    assert check(fractional) == "j1"


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("exp", AT - 31, "expired"),
        ("exp", AT + 301, "short-lived"),
        ("exp", "soon", "not a NumericDate"),
        ("exp", True, "not a NumericDate"),
        ("nbf", AT + 31, "not yet valid"),
        ("iat", AT + 31, "iat is in the future"),
        ("jti", "", "jti is missing"),
        ("jti", "j" * 129, "jti is longer than 128"),
        ("aud", [ENDPOINT, ISSUER], "aud must be exactly one of"),
        ("aud", ENDPOINT + "/", "aud must be exactly one of"),
        ("aud", None, "aud must be exactly one of"),
    ],
)
def test_one_changed_claim_is_refused(field: str, value: Any, reason: str) -> None:
    token = jwt.encode(good_claims(**{field: value}), EC_KEY, algorithm="ES384", headers={"kid": "ec"})
    with pytest.raises(ClientAuthenticationFailed, match=reason):
        check(token)


def test_edges_inside_the_leeway_pass() -> None:
    for changes in ({"exp": AT - 29, "iat": AT - 60}, {"nbf": AT + 29}, {"iat": AT + 29, "exp": AT + 300}):
        assert check(jwt.encode(good_claims(**changes), EC_KEY, algorithm="ES384", headers={"kid": "ec"}))


def test_es256_header_on_a_p384_key_is_refused() -> None:
    # pyjwt will not sign ES256 with a P-384 key: relabel a good token's header (the alg is checked
    # against the key before any signature).
    _, body, signature = jwt.encode(good_claims(), EC_KEY, algorithm="ES384", headers={"kid": "ec"}).split(
        "."
    )
    header = jwt.utils.base64url_encode(b'{"alg":"ES256","kid":"ec"}').decode()
    with pytest.raises(ClientAuthenticationFailed, match="alg ES256 does not fit key 'ec'"):
        check(f"{header}.{body}.{signature}")


def test_registered_jwk_keeps_public_members_only() -> None:
    jwk = {**ECAlgorithm.to_jwk(EC_KEY.public_key(), as_dict=True), "kid": "ec", "x5u": "https://evil"}
    assert set(parse_jwk(jwk).jwk) == {"kty", "crv", "x", "y", "kid"}
    pinned = parse_jwk(
        {**RSAAlgorithm.to_jwk(RSA_KEY.public_key(), as_dict=True), "kid": "r", "alg": "PS256"}
    )
    assert pinned.algorithms == ("PS256",)


@pytest.mark.parametrize(
    ("jwk_change", "reason"),
    [
        ({"d": "AAAA"}, "private key members"),
        ({"kty": "oct", "k": "AAAA"}, "private key members"),
        ({"kid": ""}, "a kid of 1 to 128"),
        ({"kid": "k" * 129}, "a kid of 1 to 128"),
        ({"use": "enc"}, "use must be 'sig'"),
        ({"crv": "P-256"}, "x and y of a P-256 key are 32 bytes"),
        ({"x": "AA=="}, "unpadded base64url"),
        ({"alg": "ES256"}, "does not fit this key"),
    ],
)
def test_unusable_jwk_is_refused(jwk_change: dict[str, str], reason: str) -> None:
    jwk = {**ECAlgorithm.to_jwk(EC_KEY.public_key(), as_dict=True), "kid": "ec", **jwk_change}
    with pytest.raises(ClientMetadataInvalid, match=reason):
        parse_jwks({"keys": [jwk]})


def test_oversized_rsa_key_is_refused() -> None:
    big = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key().public_numbers()
    modulus = big.n << 6200  # more than 8192 bits; never used, only its size is checked
    n = jwt.utils.to_base64url_uint(modulus).decode()
    with pytest.raises(ClientMetadataInvalid, match="at most 8192"):
        parse_jwk({"kty": "RSA", "kid": "r", "n": n, "e": "AQAB"})
