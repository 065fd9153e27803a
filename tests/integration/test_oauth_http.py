"""OAuth2 client credentials against the running service: the operator registers clients; a client gets
an ES256 access token (client_secret_basic or client_secret_post) that pyjwt verifies with the JWKS and
the RFC 8414 metadata; bad credentials, grants and scopes get RFC 6749 errors and are audited; the
verifier refuses every token it did not issue for this purpose."""

from __future__ import annotations

import json
from typing import Any

import httpx
import jwt
import pytest

from tests.support.audit import audit_rows
from tests.support.enrolling import Operator
from tests.support.service import RunningService

pytestmark = pytest.mark.integration


def db(service: RunningService) -> str:
    return f"sqlite:///{service.data_dir / 'weighstation.db'}"


def register(operator: Operator, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "Acme Brokerage",
        "kind": "broker",
        "organisation": "acme",
        "fleets": [operator.fleet()],
        "scopes": ["decisions", "attestation:read"],
    }
    body.update(changes)
    response = operator.post("/v1/clients", body)
    assert response.status_code == 201, response.text
    assert response.headers["cache-control"] == "no-store"
    registered: dict[str, Any] = response.json()
    return registered


def token(client: httpx.Client, data: dict[str, str], auth: tuple[str, str] | None = None) -> httpx.Response:
    if auth is None:
        return client.post("/v1/oauth/token", data=data)
    return client.post("/v1/oauth/token", data=data, auth=httpx.BasicAuth(*auth))


def test_client_gets_a_token_that_verifies_with_the_published_keys(service: RunningService) -> None:
    with service.client() as client:
        operator = Operator(service, client)
        broker = register(operator)
        poster = register(operator, token_endpoint_auth_method="client_secret_post")
        listed = json.dumps(operator.get("/v1/clients").json())
        assert broker["client_secret"] not in listed and poster["client_secret"] not in listed
        metadata = client.get("/.well-known/oauth-authorization-server").json()
        assert metadata["issuer"] == service.url and metadata["grant_types_supported"] == [
            "client_credentials"
        ]
        basic = token(
            client, {"grant_type": "client_credentials"}, (broker["client_id"], broker["client_secret"])
        )
        post = token(
            client,
            {
                "grant_type": "client_credentials",
                "client_id": poster["client_id"],
                "client_secret": poster["client_secret"],
                "scope": "decisions",
            },
        )
        jwks = client.get(metadata["jwks_uri"].removeprefix(service.url)).json()
    assert basic.status_code == 200 and post.status_code == 200, basic.text + post.text
    assert basic.json()["token_type"] == "Bearer" and basic.json()["scope"] == "attestation:read decisions"
    assert post.json()["scope"] == "decisions"
    access = post.json()["access_token"]
    header = jwt.get_unverified_header(access)
    assert header["alg"] == "ES256" and header["typ"] == "at+jwt"
    key = jwt.PyJWK(next(k for k in jwks["keys"] if k["kid"] == header["kid"])).key
    claims = jwt.decode(access, key, algorithms=["ES256"], audience=service.url, issuer=service.url)
    assert claims["sub"] == poster["client_id"] and claims["kind"] == "broker"
    assert claims["exp"] - claims["iat"] == 300
    assert metadata["token_endpoint_auth_methods_supported"] == [
        "client_secret_basic",
        "client_secret_post",
        "private_key_jwt",
    ]


@pytest.mark.parametrize(
    ("case", "status", "error"),
    [
        ("wrong-secret", 401, "invalid_client"),
        ("unknown-client", 401, "invalid_client"),
        ("no-credentials", 401, "invalid_client"),
        ("password-grant", 400, "unsupported_grant_type"),
        ("scope-not-granted", 400, "invalid_scope"),
    ],
)
def test_token_endpoint_refusals(service: RunningService, case: str, status: int, error: str) -> None:
    with service.client() as client:
        broker = register(Operator(service, client))
        data = {"grant_type": "client_credentials"}
        auth: tuple[str, str] | None = (broker["client_id"], broker["client_secret"])
        if case == "wrong-secret":
            auth = (broker["client_id"], broker["client_secret"] + "x")
        elif case == "unknown-client":
            auth = ("nobody", broker["client_secret"])
        elif case == "no-credentials":
            auth = None
        elif case == "password-grant":
            data["grant_type"] = "password"
        else:
            data["scope"] = "decisions ca:rotate"
        response = token(client, data, auth)
    assert response.status_code == status and response.json()["error"] == error, response.text
    assert response.headers["cache-control"] == "no-store"
    codes = {r["code"] for r in audit_rows(db(service)) if r["outcome"] == "refused"}
    assert error.replace("_", "-") in codes or (error == "invalid_client" and "invalid-client" in codes)


def test_registration_refuses_unknown_fleets_and_kinds(service: RunningService) -> None:
    with service.client() as client:
        operator = Operator(service, client)
        unknown = operator.post(
            "/v1/clients", {"name": "x", "kind": "broker", "organisation": "o", "fleets": ["nope"]}
        )
        assert (unknown.status_code, unknown.json()["code"]) == (404, "unknown-fleet")
        bad_kind = operator.post("/v1/clients", {"name": "x", "kind": "root", "organisation": "o"})
        assert bad_kind.status_code == 400
        assert (
            client.post("/v1/clients", json={"name": "x", "kind": "broker", "organisation": "o"}).status_code
            == 401
        )
