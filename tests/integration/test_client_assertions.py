"""private_key_jwt client authentication (RFC 7523 §2.2) against the running service: a client that
registered a public JWKS gets an access token with an assertion pyjwt signs; every negative changes one
thing of the good assertion and gets invalid_client (401) with a precise description, an audit row and
no spent jti; registration refuses a JWKS with a private member, a short RSA key or no kid. Last, two
replicas on PostgreSQL share the single-use jti (in process)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from pki.filekeys import FileKeyBackend
from provision.audit import Actor
from provision.clients import ACCESS, Clients
from provision.db import make_engine
from provision.errors import ClientAuthenticationFailed
from provision.migrate import upgrade_to_head
from provision.token_keys import TokenKeys
from tests.support.audit import audit_rows, count_rows
from tests.support.enrolling import Operator
from tests.support.postgres import scratch_database
from tests.support.service import RunningService

pytestmark = pytest.mark.integration

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ISSUER = "https://ws.fleet.test"


def db(service: RunningService) -> str:
    return f"sqlite:///{service.data_dir / 'weighstation.db'}"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def public_jwk(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        jwk: dict[str, Any] = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    else:
        jwk = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {**jwk, "kid": kid}


@dataclass(frozen=True)
class KeyClient:
    client_id: str
    fleet: str
    ec_key: ec.EllipticCurvePrivateKey
    rsa_key: rsa.RSAPrivateKey
    token_endpoint: str

    def claims(self, **changes: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": self.token_endpoint,
            "iat": now,
            "exp": now + 60,
            "jti": secrets.token_urlsafe(16),
        }
        claims.update(changes)
        return {k: v for k, v in claims.items() if v is not None}

    def assertion(self, **changes: Any) -> str:
        return jwt.encode(self.claims(**changes), self.ec_key, algorithm="ES256", headers={"kid": "ec-1"})


def form(assertion: str, **extra: str) -> dict[str, str]:
    return {
        "grant_type": "client_credentials",
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion,
        **extra,
    }


def register(operator: Operator, **changes: Any) -> httpx.Response:
    body: dict[str, Any] = {
        "name": "Keyed Brokerage",
        "kind": "broker",
        "organisation": "keyed",
        "scopes": ["decisions"],
    }
    body.update(changes)
    return operator.post("/v1/clients", body)


@pytest.fixture(scope="module")
def keyed(service: RunningService) -> Iterator[KeyClient]:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with service.client() as client:
        operator = Operator(service, client)
        fleet = operator.fleet()
        response = register(
            operator,
            fleets=[fleet],
            token_endpoint_auth_method="private_key_jwt",
            jwks={"keys": [public_jwk(ec_key, "ec-1"), public_jwk(rsa_key, "rsa-1")]},
        )
        assert response.status_code == 201, response.text
        body = response.json()
        metadata = client.get("/.well-known/oauth-authorization-server").json()
    assert body["client_secret"] is None and body["token_endpoint_auth_method"] == "private_key_jwt"
    assert [k["kid"] for k in body["jwks"]["keys"]] == ["ec-1", "rsa-1"]
    assert all("d" not in k for k in body["jwks"]["keys"])
    yield KeyClient(body["client_id"], fleet, ec_key, rsa_key, metadata["token_endpoint"])


def spent_assertions(service: RunningService) -> int:
    return count_rows(db(service), "spent_jtis")


def test_client_gets_a_token_by_assertion_and_uses_it(service: RunningService, keyed: KeyClient) -> None:
    with service.client() as client:
        metadata = client.get("/.well-known/oauth-authorization-server").json()
        by_ec = client.post("/v1/oauth/token", data=form(keyed.assertion(), client_id=keyed.client_id))
        rsa_assertion = jwt.encode(keyed.claims(), keyed.rsa_key, algorithm="PS256", headers={"kid": "rsa-1"})
        by_rsa = client.post("/v1/oauth/token", data=form(rsa_assertion, scope="decisions"))
        assert by_ec.status_code == 200 and by_rsa.status_code == 200, by_ec.text + by_rsa.text
        truck = Operator(service, client).truck(keyed.fleet)
        decision = client.post(
            "/v1/decisions",
            json={"action": "dispatch", "truck": truck},
            headers={"Authorization": f"Bearer {by_ec.json()['access_token']}"},
        )
    assert "private_key_jwt" in metadata["token_endpoint_auth_methods_supported"]
    assert metadata["token_endpoint_auth_signing_alg_values_supported"] == [
        "ES256",
        "ES384",
        "PS256",
        "RS256",
    ]
    assert by_ec.headers["cache-control"] == "no-store"
    claims = jwt.decode(by_ec.json()["access_token"], options={"verify_signature": False})
    assert claims["sub"] == keyed.client_id and claims["scope"] == "decisions"
    # Authenticated and authorized: the decision itself is a deny (the truck never attested).
    assert decision.status_code == 200, decision.text
    assert decision.json()["truck"] == truck and decision.json()["decision"] == "deny"


def _hs256_with_public_key(keyed: KeyClient) -> str:
    pem = keyed.ec_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = b64url(json.dumps({"alg": "HS256", "kid": "ec-1"}).encode())
    body = b64url(json.dumps(keyed.claims()).encode())
    signature = hmac.new(pem, f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{b64url(signature)}"


def _forged(keyed: KeyClient, case: str, secret_client: str) -> str:
    now = int(time.time())
    changed: dict[str, dict[str, Any]] = {
        "wrong-aud": {"aud": "https://other.example/v1/oauth/token"},
        "aud-with-another-party": {"aud": [keyed.token_endpoint, "https://other.example"]},
        "iss-not-sub": {"iss": "someone-else"},
        "expired": {"iat": now - 200, "exp": now - 100},
        "exp-too-long": {"exp": now + 600},
        "nbf-in-future": {"nbf": now + 300},
        "iat-in-future": {"iat": now + 300, "exp": now + 360},
        "no-jti": {"jti": None},
        "no-exp": {"exp": None},
    }
    if case in changed:
        return keyed.assertion(**changed[case])
    if case == "unknown-kid":
        return jwt.encode(keyed.claims(), keyed.ec_key, algorithm="ES256", headers={"kid": "ec-9"})
    if case == "alg-none":
        return jwt.encode(keyed.claims(), "", algorithm="none", headers={"kid": "ec-1"})
    if case == "hs256-with-public-key":
        return _hs256_with_public_key(keyed)
    if case == "rs256-header-on-ec-key":
        return jwt.encode(keyed.claims(), keyed.rsa_key, algorithm="RS256", headers={"kid": "ec-1"})
    if case == "signed-by-another-key":
        other = ec.generate_private_key(ec.SECP256R1())
        return jwt.encode(keyed.claims(), other, algorithm="ES256", headers={"kid": "ec-1"})
    if case == "secret-client-with-assertion":
        return keyed.assertion(iss=secret_client, sub=secret_client)
    raise AssertionError(case)


@pytest.mark.parametrize(
    ("case", "description"),
    [
        ("wrong-aud", "aud must be exactly one of"),
        ("aud-with-another-party", "aud must be exactly one of"),
        ("iss-not-sub", "iss and sub must both be the client_id"),
        ("expired", "expired"),
        ("exp-too-long", "assertions are short-lived"),
        ("nbf-in-future", "not yet valid"),
        ("iat-in-future", "iat is in the future"),
        ("no-jti", "jti is missing"),
        ("no-exp", "exp is missing"),
        ("unknown-kid", "kid 'ec-9' is not one of the client's keys"),
        ("alg-none", "alg 'none' is not accepted"),
        ("hs256-with-public-key", "alg 'HS256' is not accepted"),
        ("rs256-header-on-ec-key", "alg RS256 does not fit key 'ec-1'"),
        ("signed-by-another-key", "signature does not verify with key 'ec-1'"),
        ("secret-client-with-assertion", "it authenticates with its secret, not an assertion"),
    ],
)
def test_forged_assertions_are_refused(
    service: RunningService, keyed: KeyClient, case: str, description: str
) -> None:
    with service.client() as client:
        secret_client = register(Operator(service, client)).json()["client_id"]
        before = spent_assertions(service)
        response = client.post("/v1/oauth/token", data=form(_forged(keyed, case, secret_client)))
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "invalid_client"
    assert description in response.json()["error_description"]
    assert response.headers["cache-control"] == "no-store"
    refusals = [r for r in audit_rows(db(service)) if r["code"] == "invalid-client"]
    assert any(description in str(r["detail"]) for r in refusals)
    assert spent_assertions(service) == before


def test_replayed_assertion_is_refused(service: RunningService, keyed: KeyClient) -> None:
    assertion = keyed.assertion()
    with service.client() as client:
        first = client.post("/v1/oauth/token", data=form(assertion))
        replay = client.post("/v1/oauth/token", data=form(assertion))
    assert first.status_code == 200, first.text
    assert replay.status_code == 401 and replay.json()["error"] == "invalid_client"
    assert "was already used" in replay.json()["error_description"]


@pytest.mark.parametrize(
    ("case", "status", "error"),
    [
        ("client-id-param-differs", 401, "invalid_client"),
        ("wrong-assertion-type", 401, "invalid_client"),
        ("assertion-and-secret", 400, "invalid_request"),
    ],
)
def test_assertion_request_shape(
    service: RunningService, keyed: KeyClient, case: str, status: int, error: str
) -> None:
    data = form(keyed.assertion())
    if case == "client-id-param-differs":
        data["client_id"] = keyed.client_id + "x"
    elif case == "wrong-assertion-type":
        data["client_assertion_type"] = "urn:ietf:params:oauth:client-assertion-type:saml2-bearer"
    else:
        data["client_secret"] = "also-a-secret"
    with service.client() as client:
        response = client.post("/v1/oauth/token", data=data)
    assert (response.status_code, response.json()["error"]) == (status, error), response.text


def test_assertion_client_cannot_use_a_secret(service: RunningService, keyed: KeyClient) -> None:
    with service.client() as client:
        basic = client.post(
            "/v1/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=httpx.BasicAuth(keyed.client_id, "guessed-secret"),
        )
    assert basic.status_code == 401 and basic.json()["error"] == "invalid_client"
    assert "registered for private_key_jwt, not client_secret_basic" in basic.json()["error_description"]


def test_secret_client_keeps_to_its_registered_method(service: RunningService) -> None:
    with service.client() as client:
        broker = register(Operator(service, client)).json()
        posted = client.post(
            "/v1/oauth/token",
            data={
                "grant_type": "client_credentials",
                "client_id": broker["client_id"],
                "client_secret": broker["client_secret"],
            },
        )
    assert posted.status_code == 401 and posted.json()["error"] == "invalid_client"
    assert "registered for client_secret_basic, not client_secret_post" in posted.json()["error_description"]


def _bad_jwks(case: str) -> dict[str, Any]:
    good = public_jwk(ec.generate_private_key(ec.SECP256R1()), "k1")
    if case == "private-member":
        return {
            "keys": [
                {**ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP256R1()), as_dict=True), "kid": "k1"}
            ]
        }
    if case == "rsa-1024":
        return {"keys": [public_jwk(rsa.generate_private_key(public_exponent=65537, key_size=1024), "k1")]}
    if case == "no-kid":
        return {"keys": [{k: v for k, v in good.items() if k != "kid"}]}
    if case == "p-521":
        return {"keys": [public_jwk(ec.generate_private_key(ec.SECP521R1()), "k1")]}
    if case == "point-off-curve":
        return {"keys": [{**good, "y": good["x"]}]}
    if case == "rs256-alg-on-ec-key":
        return {"keys": [{**good, "alg": "RS256"}]}
    if case == "duplicate-kid":
        return {"keys": [good, public_jwk(ec.generate_private_key(ec.SECP256R1()), "k1")]}
    raise AssertionError(case)


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("private-member", "private key members ['d'] must never be sent"),
        ("rsa-1024", "RSA keys must be at least 2048 bits"),
        ("no-kid", "a kid of 1 to 128 visible ASCII characters is required"),
        ("p-521", "EC keys must be on P-256 or P-384"),
        ("point-off-curve", "the point is not on P-256"),
        ("rs256-alg-on-ec-key", "alg 'RS256' does not fit this key"),
        ("duplicate-kid", "every key needs its own kid"),
    ],
)
def test_registration_refuses_unusable_jwks(service: RunningService, case: str, reason: str) -> None:
    with service.client() as client:
        operator = Operator(service, client)
        before = count_rows(db(service), "oauth_clients")
        response = register(operator, token_endpoint_auth_method="private_key_jwt", jwks=_bad_jwks(case))
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "invalid-client-metadata" and reason in response.json()["detail"]
    assert count_rows(db(service), "oauth_clients") == before
    refusals = [r for r in audit_rows(db(service)) if r["code"] == "invalid-client-metadata"]
    assert any(reason in str(r["detail"]) for r in refusals)


@pytest.mark.parametrize("case", ["private-key-jwt-without-jwks", "secret-with-jwks"])
def test_registration_needs_exactly_one_auth_method(service: RunningService, case: str) -> None:
    jwks = {"keys": [public_jwk(ec.generate_private_key(ec.SECP256R1()), "k1")]}
    changes: dict[str, Any] = (
        {"token_endpoint_auth_method": "private_key_jwt"}
        if case == "private-key-jwt-without-jwks"
        else {"token_endpoint_auth_method": "client_secret_post", "jwks": jwks}
    )
    with service.client() as client:
        response = register(Operator(service, client), **changes)
    assert response.status_code == 422 and response.json()["code"] == "invalid-client-metadata", response.text


def test_assertions_on_postgresql_replicas(tmp_path: Path) -> None:
    """The same client on two replicas sharing PostgreSQL: an assertion spent on one is refused on the
    other (the jti row is in the database, not in a process)."""
    with scratch_database() as url:
        engine = make_engine(url)
        try:
            upgrade_to_head(engine)

            def replica() -> Clients:
                keys = TokenKeys(
                    engine, FileKeyBackend(tmp_path / "keys", b"pass"), clock=lambda: datetime.now(UTC)
                )
                keys.ensure(Actor("system"), ACCESS)
                return Clients(
                    engine,
                    keys,
                    issuer=ISSUER,
                    token_ttl=timedelta(minutes=5),
                    clock=lambda: datetime.now(UTC),
                )

            first, second = replica(), replica()
            key = ec.generate_private_key(ec.SECP384R1())
            registered = first.register(
                Actor("test"),
                name="pg",
                kind="tms",
                organisation="o",
                fleets=[],
                insurer_policies=[],
                global_admin=False,
                scopes=["decisions"],
                token_endpoint_auth_method="private_key_jwt",
                jwks={"keys": [public_jwk(key, "p384")]},
            )
            assert registered.secret is None
            client_id = registered.client.client_id
            now = int(time.time())
            claims = {
                "iss": client_id,
                "sub": client_id,
                "aud": ISSUER,
                "iat": now,
                "exp": now + 60,
                "jti": "j-1",
            }
            assertion = jwt.encode(claims, key, algorithm="ES384", headers={"kid": "p384"})
            issued = first.token_by_assertion(assertion, None, None)
            assert second.verify(issued.token).client_id == client_id
            with pytest.raises(ClientAuthenticationFailed, match="already used"):
                second.token_by_assertion(assertion, client_id, None)
        finally:
            engine.dispose()
