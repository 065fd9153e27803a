"""Access-token verification: a good token passes; each forgery changes one thing (algorithm, key,
audience, issuer, expiry, key id, the key's purpose) and is refused with invalid-token."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pki.filekeys import FileKeyBackend
from pki.jws import sign_compact
from provision.audit import Actor
from provision.clients import ACCESS, Clients
from provision.db import make_engine
from provision.errors import AccessTokenInvalid, ClientAuthenticationFailed
from provision.migrate import upgrade_to_head
from provision.token_keys import RESULTS, TokenKeys

ISSUER = "https://ws.fleet.test"


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[Clients, TokenKeys, str, str]]:
    engine = make_engine(f"sqlite:///{tmp_path / 'ws.db'}")
    upgrade_to_head(engine)
    keys = TokenKeys(engine, FileKeyBackend(tmp_path / "keys", b"pass"), clock=lambda: datetime.now(UTC))
    keys.ensure(Actor("test"), ACCESS)
    keys.ensure(Actor("test"), RESULTS)
    clients = Clients(
        engine, keys, issuer=ISSUER, token_ttl=timedelta(minutes=5), clock=lambda: datetime.now(UTC)
    )
    registered = clients.register(
        Actor("test"),
        name="b",
        kind="broker",
        organisation="o",
        fleets=[],
        insurer_policies=[],
        global_admin=False,
        scopes=["decisions"],
    )
    assert registered.secret is not None
    yield clients, keys, registered.client.client_id, registered.secret
    engine.dispose()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_good_token_verifies(world: tuple[Clients, TokenKeys, str, str]) -> None:
    clients, _, client_id, secret = world
    claims = clients.verify(clients.token(client_id, secret, None).token)
    assert claims.client_id == client_id and claims.kind == "broker" and claims.scopes == {"decisions"}


def test_wrong_secret_and_disabled_shapes(world: tuple[Clients, TokenKeys, str, str]) -> None:
    clients, _, client_id, secret = world
    with pytest.raises(ClientAuthenticationFailed):
        clients.token(client_id, secret[:-1], None)
    with pytest.raises(ClientAuthenticationFailed):
        clients.token("unknown", secret, None)


def _claims(world: tuple[Clients, TokenKeys, str, str], **changes: Any) -> dict[str, Any]:
    clients, _, client_id, secret = world
    good = jwt.decode(clients.token(client_id, secret, None).token, options={"verify_signature": False})
    good.update(changes)
    return good


@pytest.mark.parametrize(
    "forgery",
    [
        "alg-none",
        "hs256-with-public-key",
        "other-key-same-kid",
        "wrong-audience",
        "wrong-issuer",
        "expired",
        "not-yet-valid",
        "unknown-kid",
        "result-token-key",
        "no-scope",
        "verified-token-with-another-signature",
    ],
)
def test_forged_tokens_are_refused(world: tuple[Clients, TokenKeys, str, str], forgery: str) -> None:
    clients, keys, client_id, secret = world
    # A good token verified first: what is remembered of it must not let any other bytes through.
    good = clients.token(client_id, secret, None).token
    assert clients.verify(good).client_id == client_id
    kid, signer = keys.active(ACCESS)
    now = int(datetime.now(UTC).timestamp())
    claims = _claims(world)
    if forgery == "alg-none":
        token = jwt.encode(claims, "", algorithm="none", headers={"kid": kid})
    elif forgery == "hs256-with-public-key":
        public = signer.public_key()
        pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        header = b64url(json.dumps({"alg": "HS256", "kid": kid}).encode())
        body = b64url(json.dumps(claims).encode())
        token = f"{header}.{body}." + b64url(
            hmac.new(pem, f"{header}.{body}".encode(), hashlib.sha256).digest()
        )
    elif forgery == "other-key-same-kid":
        token = jwt.encode(
            claims, ec.generate_private_key(ec.SECP256R1()), algorithm="ES256", headers={"kid": kid}
        )
    elif forgery == "verified-token-with-another-signature":
        head, body, _ = good.split(".")
        other = jwt.encode(claims, ec.generate_private_key(ec.SECP256R1()), algorithm="ES256")
        token = f"{head}.{body}.{other.split('.')[2]}"
    elif forgery == "result-token-key":
        result_kid, result_signer = keys.active(RESULTS)
        token = sign_compact(result_signer, claims, kid=result_kid)
    else:
        changed: dict[str, dict[str, Any]] = {
            "wrong-audience": {"aud": "https://other.example"},
            "wrong-issuer": {"iss": "https://other.example"},
            "expired": {"exp": now - 1},
            "not-yet-valid": {"nbf": now + 600},
            "unknown-kid": {},
            "no-scope": {},
        }
        claims.update(changed[forgery])
        if forgery == "no-scope":
            del claims["scope"]
        token = sign_compact(signer, claims, kid="nope" if forgery == "unknown-kid" else kid)
    with pytest.raises(AccessTokenInvalid):
        clients.verify(token)


def test_a_verified_token_is_refused_once_it_expires(world: tuple[Clients, TokenKeys, str, str]) -> None:
    """Verified once, remembered, and still refused from its exp on (checked again on every call)."""
    clients, keys, client_id, _ = world
    kid, signer = keys.active(ACCESS)
    expires = int(time.time()) + 2
    token = sign_compact(signer, _claims(world, exp=expires), kid=kid)
    assert clients.verify(token).client_id == client_id
    assert clients.verify(token).client_id == client_id
    time.sleep(max(0.0, expires - time.time()) + 0.05)
    with pytest.raises(AccessTokenInvalid, match="expired"):
        clients.verify(token)


def test_a_verified_token_is_refused_before_its_nbf_even_if_remembered(
    world: tuple[Clients, TokenKeys, str, str],
) -> None:
    """nbf is re-checked on a remembered token as well: the bound kept is the later of nbf and iat."""
    clients, keys, _, _ = world
    kid, signer = keys.active(ACCESS)
    token = sign_compact(signer, _claims(world, nbf=int(time.time()) + 600), kid=kid)
    for _ in range(2):
        with pytest.raises(AccessTokenInvalid, match="not yet valid"):
            clients.verify(token)
