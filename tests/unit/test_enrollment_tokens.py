"""Enrollment-token checks on crafted tokens: each differs from a good one in one claim or header."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from sqlalchemy import create_engine

from provision.errors import EnrollmentTokenExpired, EnrollmentTokenInvalid
from provision.tokens import AUDIENCE, EnrollmentTokens

KEY = b"k" * 64
ISSUER = "https://ws.example"
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def tokens(now: datetime = NOW) -> EnrollmentTokens:
    # claims() reads no database; the engine is only for minting and consuming.
    return EnrollmentTokens(
        create_engine("sqlite://"),
        key=KEY,
        issuer=ISSUER,
        default_ttl=timedelta(minutes=15),
        clock=lambda: now,
    )


def good_claims() -> dict[str, Any]:
    t = int(NOW.timestamp())
    return {"iss": ISSUER, "aud": AUDIENCE, "sub": "t-001", "jti": "j1", "iat": t, "nbf": t, "exp": t + 900}


def token(claims: dict[str, Any], *, key: bytes = KEY, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, key, algorithm=algorithm)


def test_good_token_gives_its_truck_and_jti() -> None:
    claims = tokens().claims(token(good_claims()))
    assert (claims.truck, claims.jti) == ("t-001", "j1")


def test_expiry_is_judged_by_the_authority_clock() -> None:
    with pytest.raises(EnrollmentTokenExpired):
        tokens(NOW + timedelta(seconds=900)).claims(token(good_claims()))
    assert tokens(NOW + timedelta(seconds=899)).claims(token(good_claims())).truck == "t-001"


def test_not_yet_valid_is_refused() -> None:
    with pytest.raises(EnrollmentTokenInvalid, match="not valid yet"):
        tokens(NOW - timedelta(seconds=1)).claims(token(good_claims()))


@pytest.mark.parametrize(
    ("claim", "value"),
    [("aud", "weighstation:other"), ("iss", "https://evil.example"), ("sub", 7), ("exp", "soon")],
)
def test_one_wrong_claim_is_refused(claim: str, value: object) -> None:
    claims = good_claims() | {claim: value}
    with pytest.raises(EnrollmentTokenInvalid):
        tokens().claims(token(claims))


@pytest.mark.parametrize("missing", ["exp", "nbf", "jti", "sub", "iss", "aud", "iat"])
def test_each_required_claim_is_required(missing: str) -> None:
    claims = good_claims()
    del claims[missing]
    with pytest.raises(EnrollmentTokenInvalid):
        tokens().claims(token(claims))


@pytest.mark.parametrize(("key", "algorithm"), [(b"x" * 64, "HS256"), (KEY, "HS512"), (b"", "none")])
def test_other_keys_and_algorithms_are_refused(key: bytes, algorithm: str) -> None:
    forged = jwt.encode(good_claims(), key.decode() if algorithm == "none" else key, algorithm=algorithm)
    with pytest.raises(EnrollmentTokenInvalid):
        tokens().claims(forged)


def test_short_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        EnrollmentTokens(
            create_engine("sqlite://"),
            key=b"short",
            issuer=ISSUER,
            default_ttl=timedelta(minutes=1),
            clock=lambda: NOW,
        )
