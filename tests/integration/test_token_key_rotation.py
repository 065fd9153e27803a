"""Access-token key rotation with overlap, on two replicas sharing one database (SQLite, PostgreSQL) and
a controlled clock:
the new key signs at once on both; a token signed before the rotation verifies during the overlap
(access-token TTL + clock skew) and is refused as signed by an unknown key after it; the JWKS serves the
old key exactly as long. Then the same over HTTP (`POST /v1/oauth/keys/rotate`) against a service with
a 4 s access-token TTL and 1 s of skew, so the overlap ends within the test."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import httpx
import jwt
import pytest
from sqlalchemy import Engine

from pki.filekeys import FileKeyBackend
from pki.jws import sign_compact
from provision.audit import Actor
from provision.clients import ACCESS, Clients
from provision.db import make_engine
from provision.errors import AccessTokenInvalid
from provision.migrate import upgrade_to_head
from provision.tables import TokenKey
from provision.token_keys import RESULTS, TokenKeys
from tests.support.audit import audit_rows
from tests.support.enrolling import Operator
from tests.support.postgres import scratch_database
from tests.support.service import RunningService, running_service

ISSUER = "https://ws.fleet.test"
TTL = timedelta(minutes=5)
SKEW = timedelta(seconds=30)


@dataclass
class Clock:
    now: datetime

    def __call__(self) -> datetime:
        return self.now


@dataclass(frozen=True)
class Replicas:
    engine: Engine
    clock: Clock
    a: Clients
    b: Clients
    keys_b: TokenKeys
    client_id: str
    secret: str
    url: str


@pytest.fixture(params=["sqlite", "postgresql"])
def replicas(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Replicas]:
    with ExitStack() as stack:
        if request.param == "postgresql":
            url = stack.enter_context(scratch_database())
        else:
            url = f"sqlite:///{tmp_path / 'ws.db'}"
        yield from _replicas(url, tmp_path)


def _replicas(url: str, tmp_path: Path) -> Iterator[Replicas]:
    engine = make_engine(url)
    upgrade_to_head(engine)
    # Real time at the start: pyjwt checks exp against the real clock, the key set against ours.
    clock = Clock(datetime.now(UTC))

    def replica() -> tuple[Clients, TokenKeys]:
        keys = TokenKeys(engine, FileKeyBackend(tmp_path / "keys", b"pass"), clock=clock)
        keys.ensure(Actor("system"), ACCESS)
        keys.ensure(Actor("system"), RESULTS)
        return Clients(engine, keys, issuer=ISSUER, token_ttl=TTL, clock=clock, clock_skew=SKEW), keys

    a, _ = replica()
    b, keys_b = replica()
    registered = a.register(
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
    yield Replicas(engine, clock, a, b, keys_b, registered.client.client_id, registered.secret, url)
    engine.dispose()


def kid_of(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


def access_kids(keys: TokenKeys) -> set[str]:
    return set(keys.verifying_keys(ACCESS))


def jwks_kids(keys: TokenKeys) -> set[str]:
    return {k["kid"] for k in keys.jwks()["keys"]}


def test_old_tokens_verify_during_the_overlap_and_not_after(replicas: Replicas) -> None:
    r = replicas
    before = r.a.token(r.client_id, r.secret, None).token
    old_kid = kid_of(before)
    results_kid = r.keys_b.active(RESULTS)[0]
    assert jwks_kids(r.keys_b) == {old_kid, results_kid}

    rotated = r.a.rotate_access_key(Actor("operator"))
    assert rotated.retired == (old_kid,) and rotated.kid != old_kid
    assert rotated.published_until == r.clock.now + TTL + SKEW
    # Replica b signs with the new key at once and verifies both.
    after = r.b.token(r.client_id, r.secret, None).token
    assert kid_of(after) == rotated.kid
    assert r.b.verify(before).client_id == r.client_id and r.a.verify(after).client_id == r.client_id
    assert jwks_kids(r.keys_b) == {old_kid, rotated.kid, results_kid}

    # The last instant of the overlap: still verifies.
    r.clock.now = rotated.published_until - timedelta(seconds=1)
    assert old_kid in access_kids(r.keys_b) and old_kid in jwks_kids(r.keys_b)

    # After it: unpublished and refused, though the token's own exp (real time) has not passed.
    r.clock.now = rotated.published_until
    assert jwks_kids(r.keys_b) == {rotated.kid, results_kid}
    with pytest.raises(AccessTokenInvalid, match="unknown key id"):
        r.b.verify(before)
    with pytest.raises(AccessTokenInvalid, match="unknown key id"):
        r.a.verify(before)

    rows = audit_rows(r.url, "token-key.rotate")
    assert [row["target"] for row in rows] == [rotated.kid] and rows[0]["actor"] == "operator"


def test_verifying_keys_are_reused_for_a_second_and_a_new_kid_is_looked_up_at_once(
    replicas: Replicas, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = replicas
    # Real time stands still for this test: only a kid the rows do not hold may make b read again.
    monkeypatch.setattr("provision.token_keys.time", SimpleNamespace(monotonic=lambda: 1000.0))
    first = r.b.token(r.client_id, r.secret, None).token
    r.b.verify(first)
    reads: list[bool] = []
    original = TokenKeys._key_rows

    def counting(self: TokenKeys, *, fresh: bool) -> list[TokenKey]:
        held = self._rows
        rows = original(self, fresh=fresh)
        reads.append(self._rows is not held)  # True: the database was read
        return rows

    monkeypatch.setattr(TokenKeys, "_key_rows", counting)
    for _ in range(5):
        r.b.verify(first)
    assert reads == [False] * 5  # served from the rows read a moment ago
    rotated = r.a.rotate_access_key(Actor("operator"))  # on the other replica
    after = r.a.token(r.client_id, r.secret, None).token
    assert kid_of(after) == rotated.kid
    reads.clear()
    assert r.b.verify(after).client_id == r.client_id
    assert reads == [False, True]  # the unknown kid made b read again at once
    r.clock.now += timedelta(seconds=2)  # a second of the authority's clock: read again
    reads.clear()
    r.b.verify(after)
    assert reads == [True]


def test_a_token_forged_with_the_retired_key_after_the_overlap_is_refused(replicas: Replicas) -> None:
    r = replicas
    old_kid, old_signer = r.keys_b.active(ACCESS)
    rotated = r.b.rotate_access_key(Actor("operator"))
    r.clock.now = rotated.published_until + timedelta(minutes=1)
    now = int(r.clock.now.timestamp())
    claims = {
        "iss": ISSUER,
        "aud": ISSUER,
        "sub": r.client_id,
        "kind": "broker",
        "scope": "decisions",
        "jti": "x",
        "iat": now,
        "nbf": now,
        "exp": now + 60,
    }
    with pytest.raises(AccessTokenInvalid, match="unknown key id"):
        r.a.verify(sign_compact(old_signer, claims, kid=old_kid, typ="at+jwt"))


def test_rotating_twice_keeps_both_previous_keys_for_their_own_overlap(replicas: Replicas) -> None:
    r = replicas
    first_kid = r.keys_b.active(ACCESS)[0]
    second = r.a.rotate_access_key(Actor("operator"))
    r.clock.now += timedelta(minutes=2)
    third = r.b.rotate_access_key(Actor("operator"))
    assert third.retired == (second.kid,)
    assert access_kids(r.keys_b) == {first_kid, second.kid, third.kid}
    r.clock.now = second.published_until
    assert access_kids(r.keys_b) == {second.kid, third.kid}
    r.clock.now = third.published_until
    assert access_kids(r.keys_b) == {third.kid}


@pytest.fixture(scope="module")
def short_ttl_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    env = {"WEIGHSTATION_ACCESS_TOKEN_TTL": "4s", "WEIGHSTATION_CLOCK_SKEW": "1s"}
    with running_service(tmp_path_factory.mktemp("rotation") / "data", env) as running:
        yield running


@pytest.mark.integration
def test_rotation_over_http(short_ttl_service: RunningService) -> None:
    service = short_ttl_service
    with service.client() as client:
        operator = Operator(service, client)
        fleet = operator.fleet()
        truck = operator.truck(fleet)
        registered = operator.post(
            "/v1/clients",
            {"name": "b", "kind": "broker", "organisation": "o", "fleets": [fleet], "scopes": ["decisions"]},
        ).json()
        auth = (registered["client_id"], registered["client_secret"])

        def token() -> str:
            response = client.post("/v1/oauth/token", data={"grant_type": "client_credentials"}, auth=auth)
            assert response.status_code == 200, response.text
            return str(response.json()["access_token"])

        def decide(access: str) -> httpx.Response:
            return client.post(
                "/v1/decisions",
                json={"action": "dispatch", "truck": truck},
                headers={"Authorization": f"Bearer {access}"},
            )

        def published() -> set[str]:
            return {k["kid"] for k in client.get("/v1/jwks").json()["keys"]}

        before = token()
        old_kid = kid_of(before)
        assert old_kid in published()
        assert client.post("/v1/oauth/keys/rotate").status_code == 401
        headers = {**service.admin(), "Idempotency-Key": "rotate-1"}
        rotated = client.post("/v1/oauth/keys/rotate", headers=headers)
        replayed = client.post(
            "/v1/oauth/keys/rotate", headers={**service.admin(), "Idempotency-Key": "rotate-1"}
        )
        assert rotated.status_code == 201, rotated.text
        body = rotated.json()
        assert body["purpose"] == "access-token" and body["retired"] == [old_kid]
        assert replayed.headers.get("idempotent-replayed") == "true" and replayed.json() == body
        assert {old_kid, body["kid"]} <= published()
        after = token()
        assert kid_of(after) == body["kid"]
        during = decide(before)
        assert during.status_code == 200, during.text
        assert decide(after).status_code == 200

        # published_until = rotation + 4 s TTL + 1 s skew: wait it out (bounded), then the old key is gone.
        until = datetime.fromisoformat(body["published_until"])
        wait = (until - datetime.now(UTC)).total_seconds() + 0.5
        assert 0 < wait <= 6
        time.sleep(wait)
        assert old_kid not in published() and body["kid"] in published()
        refused = decide(before)
    assert refused.status_code == 401 and "unknown key id" in refused.text
