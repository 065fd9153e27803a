"""OAuth2 clients and the client-credentials grant (RFC 6749 §4.4).

The operator registers a client with a kind (operator, broker, tms, insurer), the attributes policies
read (organisation, fleets it manages or contracts with, insurer policies, global admin) and the scopes
it may ask for. The secret is shown once; only a scrypt hash is stored and compared in constant time.
Access tokens are short-lived ES256 JWTs signed by a key kept for that purpose only, so a result
token's key can never pass as an access token's.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import jwt
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from pki.jws import sign_compact
from provision import audit
from provision.audit import Actor
from provision.errors import AccessTokenInvalid, ClientAuthenticationFailed, InvalidScope, UnknownFleet
from provision.tables import Fleet, OAuthClient
from provision.token_keys import TokenKeys

ACCESS = "access-token"
KINDS = ("operator", "broker", "tms", "insurer")
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}
_REQUIRED = ["exp", "iat", "nbf", "iss", "aud", "sub", "jti", "scope"]


@dataclass(frozen=True)
class ClientView:
    client_id: str
    name: str
    kind: str
    organisation: str
    fleets: tuple[str, ...]
    insurer_policies: tuple[str, ...]
    global_admin: bool
    scopes: tuple[str, ...]
    created_at: datetime


@dataclass(frozen=True)
class RegisteredClient:
    client: ClientView
    secret: str  # shown once


@dataclass(frozen=True)
class AccessToken:
    token: str
    expires_in: int
    scope: str


@dataclass(frozen=True)
class AccessClaims:
    """A verified access token: who (the client) and what it may ask for."""

    client_id: str
    kind: str
    scopes: frozenset[str]
    expires_at: datetime


def hash_secret(secret: str, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, dklen=32, **_SCRYPT)
    return "scrypt$" + base64.b64encode(salt).decode() + "$" + base64.b64encode(digest).decode()


def secret_matches(secret: str, stored: str) -> bool:
    scheme, _, rest = stored.partition("$")
    salt_b64, _, digest_b64 = rest.partition("$")
    if scheme != "scrypt" or not salt_b64 or not digest_b64:
        return False
    candidate = hash_secret(secret, base64.b64decode(salt_b64))
    return hmac.compare_digest(candidate.encode(), stored.encode())


def _view(row: OAuthClient) -> ClientView:
    return ClientView(
        client_id=row.id,
        name=row.name,
        kind=row.kind,
        organisation=row.organisation,
        fleets=tuple(json.loads(row.fleets)),
        insurer_policies=tuple(json.loads(row.insurer_policies)),
        global_admin=row.global_admin,
        scopes=tuple(row.scopes.split()),
        created_at=row.created_at,
    )


class Clients:
    def __init__(
        self,
        engine: Engine,
        token_keys: TokenKeys,
        *,
        issuer: str,
        token_ttl: timedelta,
        clock: Callable[[], datetime],
    ) -> None:
        self._engine = engine
        self._token_keys = token_keys
        self._issuer = issuer
        self._token_ttl = token_ttl
        self._clock = clock
        # A dummy hash so an unknown client id costs the same scrypt as a wrong secret.
        self._decoy = hash_secret(secrets.token_urlsafe(16))

    def register(
        self,
        actor: Actor,
        *,
        name: str,
        kind: str,
        organisation: str,
        fleets: Sequence[str],
        insurer_policies: Sequence[str],
        global_admin: bool,
        scopes: Sequence[str],
    ) -> RegisteredClient:
        now = self._clock()
        secret = secrets.token_urlsafe(32)
        row = OAuthClient(
            id=secrets.token_urlsafe(12),
            name=name,
            kind=kind,
            organisation=organisation,
            fleets=json.dumps(sorted(set(fleets))),
            insurer_policies=json.dumps(sorted(set(insurer_policies))),
            global_admin=global_admin and kind == "operator",
            scopes=" ".join(sorted(set(scopes))),
            secret_hash=hash_secret(secret),
            registered_by=actor.name[:128],
            created_at=now,
        )
        with Session(self._engine) as session:
            for fleet in fleets:
                if session.get(Fleet, fleet) is None:
                    raise UnknownFleet(f"no fleet {fleet[:64]!r}")
            session.add(row)
            detail = {"name": name, "kind": kind, "fleets": sorted(set(fleets)), "scopes": row.scopes}
            audit.record(
                session, audit.values(actor, "client.register", at=now, target=row.id, detail=detail)
            )
            view = _view(row)
            session.commit()
        return RegisteredClient(client=view, secret=secret)

    def clients(self) -> list[ClientView]:
        with Session(self._engine) as session:
            return [
                _view(r)
                for r in session.exec(select(OAuthClient).order_by(col(OAuthClient.created_at))).all()
            ]

    def token(self, client_id: str, secret: str, scope: str | None) -> AccessToken:
        """The client-credentials grant: authenticate the client, narrow the scopes, sign a token."""
        with Session(self._engine) as session:
            row = session.get(OAuthClient, client_id[:64])
        stored = row.secret_hash if row is not None and row.disabled_at is None else self._decoy
        if not secret_matches(secret, stored) or row is None or row.disabled_at is not None:
            raise ClientAuthenticationFailed("unknown client or wrong secret")
        allowed = set(row.scopes.split())
        asked = set(scope.split()) if scope else allowed
        if not asked <= allowed:
            raise InvalidScope(f"scopes {sorted(asked - allowed)} are not granted to this client")
        now = self._clock()
        granted = " ".join(sorted(asked))
        claims = {
            "iss": self._issuer,
            "aud": self._issuer,
            "sub": row.id,
            "client_id": row.id,
            "kind": row.kind,
            "scope": granted,
            "jti": secrets.token_urlsafe(16),
            "iat": int(now.timestamp()),
            "nbf": int(now.timestamp()),
            "exp": int((now + self._token_ttl).timestamp()),
        }
        kid, signer = self._token_keys.active(ACCESS)
        token = sign_compact(signer, claims, kid=kid, typ="at+jwt")
        return AccessToken(token=token, expires_in=int(self._token_ttl.total_seconds()), scope=granted)

    def verify(self, token: str) -> AccessClaims:
        """Verify an access token: only ES256, only our access-token keys, our issuer and audience, in
        date. `alg: none`, HS/RS confusion and unknown key ids are refused before any signature check."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError as exc:
            raise AccessTokenInvalid(f"not a JWT: {exc}") from None
        if header.get("alg") != "ES256":
            raise AccessTokenInvalid(f"algorithm {header.get('alg')!r} is not accepted; ES256 only")
        key = self._token_keys.verifying_keys(ACCESS).get(str(header.get("kid")))
        if key is None:
            raise AccessTokenInvalid("unknown key id")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=["ES256"],
                audience=self._issuer,
                issuer=self._issuer,
                options={"require": _REQUIRED},
            )
        except jwt.InvalidTokenError as exc:
            raise AccessTokenInvalid(f"access token refused: {exc}") from None
        return AccessClaims(
            client_id=str(claims["sub"]),
            kind=str(claims.get("kind", "")),
            scopes=frozenset(str(claims["scope"]).split()),
            expires_at=datetime.fromtimestamp(int(claims["exp"]), tz=self._clock().tzinfo),
        )
