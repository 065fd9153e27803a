"""OAuth2 clients and the client-credentials grant (RFC 6749 §4.4).

The operator registers a client with a kind (operator, broker, tms, insurer), the attributes policies
read (organisation, fleets it manages or contracts with, insurer policies, global admin) and the scopes
it may ask for, and exactly one way to authenticate at the token endpoint: a secret (client_secret_basic
or client_secret_post; shown once, only a scrypt hash is stored and compared in constant time) or a
registered public JWKS (private_key_jwt, RFC 7523 §2.2: provision.client_assertions).
Access tokens are short-lived ES256 JWTs signed by a key kept for that purpose only, so a result
token's key can never pass as an access token's; that key rotates with an overlap (provision.token_keys).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import jwt
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from pki.jws import sign_compact
from provision import audit
from provision.audit import Actor
from provision.client_assertions import claimed_client, verify_assertion
from provision.client_keys import parse_jwks, stored_key
from provision.errors import (
    AccessTokenInvalid,
    ClientAuthenticationFailed,
    ClientMetadataInvalid,
    InvalidScope,
    JwtReplayed,
    UnknownFleet,
)
from provision.idempotency import Pending
from provision.single_use import spend_jti
from provision.tables import Fleet, OAuthClient, OAuthClientKey
from provision.token_keys import RotatedKey, TokenKeys
from provision.token_memo import Verified, VerifiedTokens

ACCESS = "access-token"
KINDS = ("operator", "broker", "tms", "insurer")
SECRET_BASIC = "client_secret_basic"  # noqa: S105 (a method name)
SECRET_POST = "client_secret_post"  # noqa: S105 (a method name)
PRIVATE_KEY_JWT = "private_key_jwt"
AUTH_METHODS = (SECRET_BASIC, SECRET_POST, PRIVATE_KEY_JWT)
ASSERTION_JTI = "client-assertion"
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
    token_endpoint_auth_method: str
    jwks: tuple[dict[str, str], ...]  # public keys of a private_key_jwt client


@dataclass(frozen=True)
class RegisteredClient:
    client: ClientView
    secret: str | None  # shown once; None for a private_key_jwt client


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


def _view(row: OAuthClient, keys: Sequence[OAuthClientKey]) -> ClientView:
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
        token_endpoint_auth_method=row.token_endpoint_auth_method,
        jwks=tuple(json.loads(k.public_jwk) for k in keys),
    )


def _jti_key(client_id: str, jti: str) -> str:
    # jti is unique per issuer (RFC 7519 §4.1.7): two clients may pick the same one.
    return hashlib.sha256(f"{client_id}\n{jti}".encode()).hexdigest()


class Clients:
    def __init__(
        self,
        engine: Engine,
        token_keys: TokenKeys,
        *,
        issuer: str,
        token_ttl: timedelta,
        clock: Callable[[], datetime],
        clock_skew: timedelta = timedelta(seconds=30),
        token_endpoint: str | None = None,
    ) -> None:
        self._engine = engine
        self._token_keys = token_keys
        self._verified: VerifiedTokens[AccessClaims] = VerifiedTokens()
        self._issuer = issuer
        self._token_ttl = token_ttl
        self._clock = clock
        self._skew = clock_skew
        self.token_endpoint = token_endpoint or f"{issuer}/v1/oauth/token"
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
        token_endpoint_auth_method: str = SECRET_BASIC,
        jwks: Mapping[str, Any] | None = None,
    ) -> RegisteredClient:
        if token_endpoint_auth_method not in AUTH_METHODS:
            raise ClientMetadataInvalid(f"token_endpoint_auth_method must be one of {list(AUTH_METHODS)}")
        if (token_endpoint_auth_method == PRIVATE_KEY_JWT) != (jwks is not None):
            raise ClientMetadataInvalid("a jwks is required for private_key_jwt and refused for a secret")
        keys = parse_jwks(jwks) if jwks is not None else []
        now = self._clock()
        secret = secrets.token_urlsafe(32) if not keys else None
        row = OAuthClient(
            id=secrets.token_urlsafe(12),
            name=name,
            kind=kind,
            organisation=organisation,
            fleets=json.dumps(sorted(set(fleets))),
            insurer_policies=json.dumps(sorted(set(insurer_policies))),
            global_admin=global_admin and kind == "operator",
            scopes=" ".join(sorted(set(scopes))),
            secret_hash=hash_secret(secret) if secret is not None else "",
            registered_by=actor.name[:128],
            created_at=now,
            token_endpoint_auth_method=token_endpoint_auth_method,
        )
        key_rows = [
            OAuthClientKey(
                client_id=row.id,
                kid=key.kid,
                algorithms=" ".join(key.algorithms),
                public_jwk=json.dumps(key.jwk, sort_keys=True),
                created_at=now,
            )
            for key in keys
        ]
        with Session(self._engine) as session:
            for fleet in fleets:
                if session.get(Fleet, fleet) is None:
                    raise UnknownFleet(f"no fleet {fleet[:64]!r}")
            session.add(row)
            session.flush()  # the client row before its keys (foreign key)
            session.add_all(key_rows)
            detail = {
                "name": name,
                "kind": kind,
                "fleets": sorted(set(fleets)),
                "scopes": row.scopes,
                "token_endpoint_auth_method": token_endpoint_auth_method,
                "kids": [k.kid for k in key_rows],
            }
            audit.record(
                session, audit.values(actor, "client.register", at=now, target=row.id, detail=detail)
            )
            view = _view(row, key_rows)
            session.commit()
        return RegisteredClient(client=view, secret=secret)

    def clients(self) -> list[ClientView]:
        with Session(self._engine) as session:
            rows = session.exec(select(OAuthClient).order_by(col(OAuthClient.created_at))).all()
            keys: dict[str, list[OAuthClientKey]] = {}
            for key in session.exec(select(OAuthClientKey)).all():
                keys.setdefault(key.client_id, []).append(key)
            return [_view(r, keys.get(r.id, [])) for r in rows]

    def token(
        self, client_id: str, secret: str, scope: str | None, *, method: str = SECRET_BASIC
    ) -> AccessToken:
        """The client-credentials grant with a secret presented by `method` (client_secret_basic or
        client_secret_post): authenticate the client, narrow the scopes, sign a token."""
        with Session(self._engine) as session:
            row = session.get(OAuthClient, client_id[:64])
        usable = row is not None and row.disabled_at is None and row.token_endpoint_auth_method == method
        stored = row.secret_hash if row is not None and usable else self._decoy
        matches = secret_matches(secret, stored)  # always one scrypt, whatever is wrong
        if row is None or row.disabled_at is not None:
            raise ClientAuthenticationFailed("unknown client or wrong secret")
        if row.token_endpoint_auth_method != method:
            raise ClientAuthenticationFailed(
                f"client {row.id!r} is registered for {row.token_endpoint_auth_method}, not {method}"
            )
        if not matches:
            raise ClientAuthenticationFailed("unknown client or wrong secret")
        return self._issue(row.id, row.kind, self._granted(row, scope))

    def token_by_assertion(self, assertion: str, client_id: str | None, scope: str | None) -> AccessToken:
        """The client-credentials grant with private_key_jwt (RFC 7523 §2.2): the assertion names the
        client and one of its registered keys, verifies with that key, and its jti is spent once."""
        claimed = claimed_client(assertion)
        if client_id and client_id != claimed.client_id:
            raise ClientAuthenticationFailed(
                "client assertion refused: the client_id parameter differs from the assertion's sub"
            )
        now = self._clock()
        with Session(self._engine) as session:
            row = session.get(OAuthClient, claimed.client_id) if len(claimed.client_id) <= 64 else None
            if row is None or row.disabled_at is not None:
                raise ClientAuthenticationFailed("client assertion refused: unknown or disabled client")
            if row.token_endpoint_auth_method != PRIVATE_KEY_JWT:
                raise ClientAuthenticationFailed(
                    f"client {row.id!r} is registered for {row.token_endpoint_auth_method}; "
                    "it authenticates with its secret, not an assertion"
                )
            key_row = session.get(OAuthClientKey, (row.id, claimed.kid)) if len(claimed.kid) <= 128 else None
            if key_row is None:
                raise ClientAuthenticationFailed(
                    f"client assertion refused: kid {claimed.kid[:128]!r} is not one of the client's keys"
                )
            key = stored_key(key_row.kid, key_row.algorithms, key_row.public_jwk)
            verified = verify_assertion(
                assertion,
                claimed,
                key,
                audiences=(self.token_endpoint, self._issuer),
                now=now,
                leeway=self._skew,
            )
            granted = self._granted(row, scope)
            try:
                spend_jti(
                    session,
                    purpose=ASSERTION_JTI,
                    jti=_jti_key(row.id, verified.jti),
                    subject=row.id,
                    expires_at=verified.expires_at,
                    now=now,
                )
            except JwtReplayed:
                raise ClientAuthenticationFailed(
                    f"client assertion refused: jti {verified.jti!r} was already used; assertions are "
                    "single use"
                ) from None
            client, kind = row.id, row.kind  # commit expires the row's attributes
            session.commit()
        return self._issue(client, kind, granted)

    def rotate_access_key(
        self, actor: Actor, *, idempotency: Pending[RotatedKey] | None = None
    ) -> RotatedKey:
        """Sign access tokens with a new key from now on; the old key verifies and stays in the JWKS
        until every token it signed has expired (the access-token TTL plus clock skew)."""
        return self._token_keys.rotate(
            actor, ACCESS, overlap=self._token_ttl + self._skew, idempotency=idempotency
        )

    @staticmethod
    def _granted(row: OAuthClient, scope: str | None) -> str:
        allowed = set(row.scopes.split())
        asked = set(scope.split()) if scope else allowed
        if not asked <= allowed:
            raise InvalidScope(f"scopes {sorted(asked - allowed)} are not granted to this client")
        return " ".join(sorted(asked))

    def _issue(self, client_id: str, kind: str, granted: str) -> AccessToken:
        now = self._clock()
        claims = {
            "iss": self._issuer,
            "aud": self._issuer,
            "sub": client_id,
            "client_id": client_id,
            "kind": kind,
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
        date. `alg: none`, HS/RS confusion and unknown key ids are refused before any signature check.
        A token verified before from these exact bytes is only re-checked for its dates and its key
        (provision.token_memo)."""
        known = self._verified.get(token)
        if known is not None and known.in_date(time.time()) and self._token_keys.publishes(ACCESS, known.kid):
            return known.claims
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError as exc:
            raise AccessTokenInvalid(f"not a JWT: {exc}") from None
        if header.get("alg") != "ES256":
            raise AccessTokenInvalid(f"algorithm {header.get('alg')!r} is not accepted; ES256 only")
        kid = str(header.get("kid"))
        key = self._token_keys.verifying_key(ACCESS, kid)
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
        verified = AccessClaims(
            client_id=str(claims["sub"]),
            kind=str(claims.get("kind", "")),
            scopes=frozenset(str(claims["scope"]).split()),
            expires_at=datetime.fromtimestamp(int(claims["exp"]), tz=self._clock().tzinfo),
        )
        # The library checked exp, nbf and iat against the wall clock: a hit re-checks the same bounds.
        not_before = max(int(claims["nbf"]), int(claims["iat"]))
        self._verified.put(token, Verified(verified, kid, not_before, int(claims["exp"])))
        return verified
