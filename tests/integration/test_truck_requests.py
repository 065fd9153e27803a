"""Truck request authentication with real swtpm trucks enrolled by the real agent against the running
service: the agent's request JWT (signed in the TPM by the identity key, x5c = its certificate) verifies
with a TruckRequests on the service's own database and CA hierarchy; each negative changes one thing of
that good vector and is refused for its own reason."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote

import httpx
import jwt
import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from litestar import Litestar, Request, post
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.testing import TestClient
from litestar.types import ASGIApp, Receive, Scope, Send
from sqlalchemy import Engine

from agent.client import EnrollmentClient
from agent.request_auth import TruckRequestSigner, as_truck, truck_request_signer
from agent.state import AgentState
from agent.tpm import TruckTpm
from api.services import authority_config
from api.settings import load_settings
from api.truck_auth import authenticate_truck
from provision.authority import utcnow
from provision.db import make_engine
from provision.errors import TruckRequestInvalid
from provision.hierarchy import CaHierarchy
from provision.keys import open_key_backend
from provision.truck_requests import LEEWAY, TruckRequester, TruckRequests
from tests.support.enrolling import Operator, boot_and_enroll
from tests.support.service import RunningService, free_port
from tests.support.swtpm import ManufacturerCa, running_tpms

pytestmark = pytest.mark.integration
TRUST_DOMAIN = "fleet.test"  # what tests.support.service runs the service with


@dataclass
class Truck:
    id: str
    tpm: TruckTpm
    state: AgentState
    chain: list[x509.Certificate]

    @property
    def key(self) -> ec.EllipticCurvePrivateKey:
        return self.tpm.identity_signer(self.state.identity)

    @property
    def leaf(self) -> x509.Certificate:
        return self.chain[0]


@dataclass
class World:
    service: RunningService
    engine: Engine
    cas: CaHierarchy
    trucks: dict[str, Truck]

    def verifier(self, clock: Callable[[], datetime] = utcnow) -> TruckRequests:
        return TruckRequests(
            self.engine,
            self.cas.authorities,
            trust_domain=TRUST_DOMAIN,
            audience=self.service.url,
            clock=clock,
        )

    def url(self, truck: Truck) -> str:
        return f"{self.service.url}/v1/trucks/{truck.id}/attestation-nonces"


@pytest.fixture(scope="module")
def world(
    enrolling: RunningService, manufacturer: ManufacturerCa, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    """Three trucks on their own swtpm, enrolled by the agent: a (the good vector), b (another truck),
    c (revoked by one test). The verifier reads the service's SQLite database and CA hierarchy."""
    base = tmp_path_factory.mktemp("truck-requests")
    settings = load_settings(
        {"WEIGHSTATION_DATA_DIR": str(enrolling.data_dir), "WEIGHSTATION_TRUST_DOMAIN": TRUST_DOMAIN}
    )
    with ExitStack() as stack:
        operator = Operator(enrolling, stack.enter_context(enrolling.client()))
        operator.golden_release()
        client = stack.enter_context(EnrollmentClient(enrolling.url))
        tpms = stack.enter_context(running_tpms(base / "tpms", manufacturer, 3, "ecc", distinct=True))
        trucks: dict[str, Truck] = {}
        for name, running in zip("abc", tpms, strict=True):
            truck = operator.truck()
            # Enrollment asks for a first quote of a booted truck, appraised against the golden release.
            enrolled = boot_and_enroll(
                stack, running.tcti, client, operator.token(truck), truck, base / f"state-{name}"
            )
            tpm, state = enrolled.tpm, enrolled.state
            assert state.certificate_pem is not None
            chain = x509.load_pem_x509_certificates(state.certificate_pem)
            trucks[name] = Truck(truck, tpm, state, chain)
        engine = make_engine(f"sqlite:///{enrolling.data_dir / 'weighstation.db'}")
        stack.callback(engine.dispose)
        keys = open_key_backend(
            data_dir=enrolling.data_dir, passphrase="", vault_addr="", vault_token="", vault_mount="transit"
        )
        stack.callback(keys.close)
        cas = CaHierarchy(engine, keys, authority_config(settings), clock=utcnow, serials=lambda: 1)
        yield World(enrolling, engine, cas, trucks)


# -- building request JWTs -----------------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def agent_token(world: World, truck: Truck, *, clock: Callable[[], datetime] | None = None) -> str:
    """The good vector: what the agent sends for a POST to the truck's nonce endpoint."""
    signer = truck_request_signer(truck.tpm, truck.state, audience=world.service.url)
    if clock is not None:
        signer = TruckRequestSigner(
            truck.key, truck.state.certificate_pem or b"", audience=world.service.url, clock=clock
        )
    return signer("POST", world.url(truck) + "?ignored=query")


def parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    return jwt.get_unverified_header(token), jwt.decode(token, options={"verify_signature": False})


def resign(
    token: str,
    key: ec.EllipticCurvePrivateKey,
    *,
    header: dict[str, Any] | None = None,
    claims: dict[str, Any] | None = None,
    drop: tuple[str, ...] = (),
    drop_claims: tuple[str, ...] = (),
) -> str:
    """The token with some header fields or claims changed (or header fields dropped), signed again
    with `key` (ES256) so only that change differs from the good vector."""
    old_header, old_claims = parts(token)
    new_header = {k: v for k, v in {**old_header, **(header or {})}.items() if k not in drop}
    new_claims = {k: v for k, v in {**old_claims, **(claims or {})}.items() if k not in drop_claims}
    encoded = (b64url(json.dumps(part).encode()) for part in (new_header, new_claims))
    signing_input = ".".join(encoded)
    der = key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    return f"{signing_input}.{b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def x5c(*certificates: x509.Certificate) -> list[str]:
    return [base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode() for c in certificates]


def refused(
    world: World,
    token: str,
    reason: str,
    *,
    truck: Truck | None = None,
    verifier: TruckRequests | None = None,
) -> None:
    truck = truck or world.trucks["a"]
    with pytest.raises(TruckRequestInvalid) as caught:
        (verifier or world.verifier()).verify(token, method="POST", url=world.url(truck))
    assert caught.value.code == "invalid-truck-request"
    assert reason in caught.value.reason, caught.value.reason


def now_s() -> int:
    return int(datetime.now(UTC).timestamp())


# -- the path that works -------------------------------------------------------------------------


def test_agent_request_jwt_verifies(world: World) -> None:
    truck = world.trucks["a"]
    token = agent_token(world, truck)
    header, claims = parts(token)
    assert header["typ"] == "truck-request+jwt" and header["alg"] == "ES256"
    # Leaf and issuing CA; the self-signed root stays out.
    assert header["x5c"] == x5c(truck.chain[0], truck.chain[1])
    assert claims["htu"] == world.url(truck) and claims["htm"] == "POST" and claims["iss"] == truck.id
    assert claims["exp"] - claims["iat"] <= 120
    requester = world.verifier().verify(token, method="post", url=world.url(truck) + "?x=1")
    assert isinstance(requester, TruckRequester)
    assert requester.truck_id == truck.id and requester.jti == claims["jti"]
    assert requester.spiffe_id.endswith(f"/truck/{truck.id}") and requester.fleet_id in requester.spiffe_id
    assert requester.certificate_serial == format(truck.leaf.serial_number, "x")


def test_agent_client_sends_a_fresh_jwt_per_truck_call(world: World) -> None:
    """The agent's client attaches a new request JWT to each truck call (the nonce call here)."""
    truck = world.trucks["a"]
    with EnrollmentClient(world.service.url) as plain:
        client = as_truck(plain, truck.tpm, truck.state)
        first = client.truck_authorization("POST", f"/v1/trucks/{truck.id}/attestation-nonces")
        second = client.truck_authorization("POST", f"/v1/trucks/{truck.id}/attestation-nonces")
        nonce = client.attestation_nonce(truck.id)
    assert nonce.truck == truck.id
    tokens = [h["Authorization"].removeprefix("Bearer ") for h in (first, second)]
    assert tokens[0] != tokens[1]
    verifier = world.verifier()
    for token in tokens:
        assert verifier.verify(token, method="POST", url=world.url(truck)).truck_id == truck.id


def test_client_certificate_verifies(world: World) -> None:
    truck = world.trucks["a"]
    pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in truck.chain[:2]).decode()
    requester = world.verifier().verify_client_certificate(pem)
    assert requester.truck_id == truck.id and requester.jti is None
    assert requester.expires_at == truck.leaf.not_valid_after_utc


def test_certificate_of_a_rotated_out_ca_still_verifies(world: World) -> None:
    truck = world.trucks["b"]
    with world.service.client() as client:
        rotated = client.post("/v1/ca/rotate", headers=world.service.admin())
    assert rotated.status_code in (200, 201), rotated.text
    verifier = world.verifier()
    world.cas._reload()  # the test's hierarchy cache is 5 s; the service's own reloads likewise
    issuer = next(ca for ca in world.cas.authorities() if ca.certificate.subject == truck.leaf.issuer)
    assert issuer.status == "retired"
    assert (
        verifier.verify(agent_token(world, truck), method="POST", url=world.url(truck)).truck_id == truck.id
    )


# -- the header ----------------------------------------------------------------------------------


def test_garbage(world: World) -> None:
    refused(world, "garbage", "not a compact JWT")
    refused(world, "a.b.c", "not a JWT")


def test_alg_none(world: World) -> None:
    header, claims = parts(agent_token(world, world.trucks["a"]))
    token = f"{b64url(json.dumps({**header, 'alg': 'none'}).encode())}.{b64url(json.dumps(claims).encode())}."
    refused(world, token, "alg 'none' is not accepted")


def test_hs256_keyed_with_the_certificates_public_key(world: World) -> None:
    truck = world.trucks["a"]
    header, claims = parts(agent_token(world, truck))
    public_pem = truck.leaf.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signing_input = (
        f"{b64url(json.dumps({**header, 'alg': 'HS256'}).encode())}.{b64url(json.dumps(claims).encode())}"
    )
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    refused(world, f"{signing_input}.{b64url(mac)}", "alg 'HS256' is not accepted")


def test_es384_header_on_a_p256_key(world: World) -> None:
    truck = world.trucks["a"]
    refused(
        world,
        resign(agent_token(world, truck), truck.key, header={"alg": "ES384"}),
        "alg ES384 does not match",
    )


def test_wrong_typ(world: World) -> None:
    truck = world.trucks["a"]
    refused(world, resign(agent_token(world, truck), truck.key, header={"typ": "JWT"}), "typ 'JWT' is not")


def test_no_x5c(world: World) -> None:
    truck = world.trucks["a"]
    refused(world, resign(agent_token(world, truck), truck.key, drop=("x5c",)), "no x5c header")


def test_jwk_header_is_refused(world: World) -> None:
    truck = world.trucks["a"]
    token = resign(agent_token(world, truck), truck.key, header={"jwk": {"kty": "EC"}})
    refused(world, token, "the 'jwk' header is not accepted")


def test_x5c_carries_a_foreign_ca(world: World) -> None:
    truck = world.trucks["a"]
    foreign = _rogue_ca(truck)[0]
    token = resign(agent_token(world, truck), truck.key, header={"x5c": x5c(truck.leaf, foreign)})
    refused(world, token, "not a CA of this authority")


# -- the certificate -----------------------------------------------------------------------------


def _rogue_ca(truck: Truck) -> tuple[x509.Certificate, x509.Certificate]:
    """A CA with the same name as our issuing CA (but its own key) and a leaf it issued for the truck's
    own TPM identity key and SPIFFE ID: only the issuer's signature differs from the real certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    issuing = truck.chain[1]
    now = datetime.now(UTC)
    ca = (
        x509.CertificateBuilder()
        .subject_name(issuing.subject)
        .issuer_name(issuing.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    leaf = (
        x509.CertificateBuilder()
        .subject_name(truck.leaf.subject)
        .issuer_name(issuing.subject)
        .public_key(truck.leaf.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(
            truck.leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value, critical=False
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return ca, leaf


def test_leaf_from_another_ca(world: World) -> None:
    truck = world.trucks["a"]
    _, leaf = _rogue_ca(truck)
    token = resign(agent_token(world, truck), truck.key, header={"x5c": x5c(leaf)})
    refused(world, token, "not issued by a CA of this authority")


def test_expired_certificate(world: World) -> None:
    truck = world.trucks["a"]
    later = truck.leaf.not_valid_after_utc + timedelta(minutes=1)
    token = agent_token(world, truck, clock=lambda: later)
    refused(world, token, "the certificate expired", verifier=world.verifier(clock=lambda: later))


def test_revoked_certificate(world: World) -> None:
    truck = world.trucks["c"]
    serial = format(truck.leaf.serial_number, "x")
    assert world.verifier().verify(agent_token(world, truck), method="POST", url=world.url(truck))
    with world.service.client() as client:
        revoked = client.post(
            f"/v1/certificates/{serial}/revoke",
            json={"reason": "key_compromise"},
            headers=world.service.admin(),
        )
    assert revoked.status_code == 200, revoked.text
    refused(world, agent_token(world, truck), f"certificate {serial} is revoked", truck=truck)
    pem = truck.leaf.public_bytes(serialization.Encoding.PEM).decode()
    with pytest.raises(TruckRequestInvalid, match="is revoked"):
        world.verifier().verify_client_certificate(pem)


def test_certificate_of_another_truck(world: World) -> None:
    """Truck b signs with its own key and certificate but claims to be truck a (iss)."""
    mine, other = world.trucks["a"], world.trucks["b"]
    token = resign(agent_token(world, other), other.key, claims={"iss": mine.id})
    refused(
        world, token, f"iss {mine.id!r} is not the truck the certificate names ({other.id!r})", truck=other
    )


def test_key_is_not_the_enrolled_identity_key(world: World) -> None:
    """A truck certificate the operator issued for truck a's SPIFFE ID on a software key: valid, ours,
    not revoked, names the truck, but the key is not the TPM identity key the truck enrolled."""
    truck = world.trucks["a"]
    software = ec.generate_private_key(ec.SECP256R1())
    spiffe = truck.leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    uri = spiffe.get_values_for_type(x509.UniformResourceIdentifier)[0]
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, truck.id)]))
        .sign(software, hashes.SHA256())
    )
    with world.service.client() as client:
        issued = client.post(
            "/v1/certificates",
            json={
                "profile": "truck",
                "csr": csr.public_bytes(serialization.Encoding.PEM).decode(),
                "uri_sans": [uri],
            },
            headers=world.service.admin(),
        )
    assert issued.status_code == 201, issued.text
    certificate = x509.load_pem_x509_certificate(issued.json()["certificate_pem"].encode())
    token = resign(agent_token(world, truck), software, header={"x5c": x5c(certificate)})
    refused(world, token, f"not the identity key truck {truck.id} enrolled last")


def test_signature_by_another_key(world: World) -> None:
    truck = world.trucks["a"]
    token = resign(agent_token(world, truck), ec.generate_private_key(ec.SECP256R1()))
    refused(world, token, "the signature does not verify")


def test_signature_by_another_trucks_tpm(world: World) -> None:
    truck = world.trucks["a"]
    token = resign(agent_token(world, truck), world.trucks["b"].key)
    refused(world, token, "the signature does not verify")


# -- the claims ----------------------------------------------------------------------------------


def test_wrong_aud(world: World) -> None:
    truck = world.trucks["a"]
    token = resign(agent_token(world, truck), truck.key, claims={"aud": "https://other.example"})
    refused(world, token, "aud is not this service")


def test_wrong_sub(world: World) -> None:
    truck = world.trucks["a"]
    token = resign(
        agent_token(world, truck), truck.key, claims={"sub": f"spiffe://{TRUST_DOMAIN}/fleet/x/truck/y"}
    )
    refused(world, token, "sub is not the certificate's SPIFFE ID")


def test_htm_mismatch(world: World) -> None:
    truck = world.trucks["a"]
    refused(world, resign(agent_token(world, truck), truck.key, claims={"htm": "GET"}), "htm 'GET' is not")


def test_htu_mismatch(world: World) -> None:
    truck = world.trucks["a"]
    other = f"{world.service.url}/v1/trucks/{truck.id}/attestations"
    refused(
        world,
        resign(agent_token(world, truck), truck.key, claims={"htu": other}),
        "is not this request's URL",
    )


def test_expired_jwt(world: World) -> None:
    truck = world.trucks["a"]
    token = resign(agent_token(world, truck), truck.key, claims={"iat": now_s() - 300, "exp": now_s() - 240})
    refused(world, token, "has expired")


def test_too_long_lived(world: World) -> None:
    truck = world.trucks["a"]
    token = resign(agent_token(world, truck), truck.key, claims={"exp": now_s() + 600})
    refused(world, token, "exceeds 120 s")


def test_iat_in_the_future(world: World) -> None:
    truck = world.trucks["a"]
    token = resign(agent_token(world, truck), truck.key, claims={"iat": now_s() + 300, "exp": now_s() + 360})
    refused(world, token, "iat is in the future")


def test_missing_jti(world: World) -> None:
    truck = world.trucks["a"]
    token = resign(agent_token(world, truck), truck.key, drop_claims=("jti",))
    refused(world, token, "lacks the 'jti' claim")


def test_replayed_jti(world: World) -> None:
    truck = world.trucks["a"]
    token = agent_token(world, truck)
    verifier = world.verifier()
    verifier.verify(token, method="POST", url=world.url(truck))
    refused(world, token, "already used")


def test_a_jti_left_to_the_use_case(world: World) -> None:
    """spend=False verifies everything, refuses a jti already spent, and hands this one on unspent."""
    truck = world.trucks["a"]
    token = agent_token(world, truck)
    verifier = world.verifier()
    first = verifier.verify(token, method="POST", url=world.url(truck), spend=False)
    again = verifier.verify(token, method="POST", url=world.url(truck), spend=False)
    assert first.unspent is not None and first.unspent == again.unspent
    assert first.unspent.jti == first.jti and first.unspent.subject == truck.id
    assert first.unspent.expires_at == first.expires_at + LEEWAY
    verifier.spend(first.unspent)
    with pytest.raises(TruckRequestInvalid, match="already used"):
        verifier.verify(token, method="POST", url=world.url(truck), spend=False)
    with pytest.raises(TruckRequestInvalid, match="already used"):
        verifier.spend(first.unspent)


# -- through a Litestar guard over HTTP ----------------------------------------------------------

PUBLIC = "http://testserver.local"  # Litestar's test client; the public URL the truck addresses


def guarded_app(
    world: World, *, peer: str | None = None, public: str = PUBLIC, proxies: str = "10.0.0.0/8"
) -> Litestar:
    """A route whose guard asks api.truck_auth, with the real verifier on the service's database. With
    `peer`, the TCP peer address is that (as if a proxy at that address had connected)."""
    settings = load_settings(
        {
            "WEIGHSTATION_PUBLIC_URL": public,
            "WEIGHSTATION_TRUST_DOMAIN": TRUST_DOMAIN,
            "WEIGHSTATION_TRUSTED_PROXIES": proxies,
        }
    )
    verifier = TruckRequests(
        world.engine, world.cas.authorities, trust_domain=TRUST_DOMAIN, audience=public, clock=utcnow
    )

    def guard(connection: ASGIConnection[Any, Any, Any, Any], _handler: BaseRouteHandler) -> None:
        requester = authenticate_truck(connection)
        connection.state.truck = requester.truck_id if requester else None

    @post("/v1/trucks/{truck_id:str}/attestation-nonces", guards=[guard], status_code=200)
    async def nonce(request: Request[Any, Any, Any]) -> dict[str, str | None]:
        return {"truck": request.state.truck}

    def at_peer(app: ASGIApp) -> ASGIApp:
        async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
            if peer is not None:
                scope["client"] = (peer, 40000)
            await app(scope, receive, send)

        return middleware

    app = Litestar([nonce], middleware=[at_peer])
    app.state.services = SimpleNamespace(settings=settings, truck_requests=verifier)
    return app


def test_request_jwt_through_a_guard(world: World) -> None:
    truck = world.trucks["a"]
    path = f"/v1/trucks/{truck.id}/attestation-nonces"
    signer = truck_request_signer(truck.tpm, truck.state, audience=PUBLIC)
    with TestClient(guarded_app(world), base_url=PUBLIC) as client:
        good = {"Authorization": f"Bearer {signer('POST', PUBLIC + path)}"}
        assert client.post(path + "?tender=T-1", headers=good).json() == {"truck": truck.id}
        replay = client.post(path, headers=good)
        assert replay.status_code == 401 and "already used" in replay.json()["detail"]
        elsewhere = {"Authorization": f"Bearer {signer('POST', PUBLIC + path)}"}
        moved = client.post(f"/v1/trucks/{world.trucks['b'].id}/attestation-nonces", headers=elsewhere)
        assert moved.status_code == 401 and "is not this request's URL" in moved.json()["detail"]
        assert client.post(path).json() == {"truck": None}


def test_forwarded_client_certificate_through_a_guard(world: World) -> None:
    truck = world.trucks["a"]
    path = f"/v1/trucks/{truck.id}/attestation-nonces"
    # What nginx puts in the header: $ssl_client_escaped_cert, the leaf PEM URL-escaped.
    header = {"X-Forwarded-Client-Cert": quote(truck.leaf.public_bytes(serialization.Encoding.PEM).decode())}
    with TestClient(guarded_app(world, peer="10.0.0.5"), base_url=PUBLIC) as client:
        assert client.post(path, headers=header).json() == {"truck": truck.id}
    with TestClient(guarded_app(world, peer="192.0.2.9"), base_url=PUBLIC) as client:
        untrusted = client.post(path, headers=header)
    assert untrusted.status_code == 401
    assert "client-certificate header from an untrusted address (192.0.2.9)" in untrusted.json()["detail"]


# -- mTLS through a real nginx -------------------------------------------------------------------

# The server block the README documents, with this test's paths and ports.
NGINX_SERVER = """
map $ssl_client_verify $weighstation_client_cert {
    SUCCESS $ssl_client_escaped_cert;
    default "";
}
server {
    listen 127.0.0.1:%(port)d ssl;
    ssl_certificate     %(dir)s/server.pem;
    ssl_certificate_key %(dir)s/server.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_client_certificate %(dir)s/ca-bundle.pem;
    ssl_verify_client optional;
    ssl_verify_depth 2;
    client_max_body_size 64k;
    location / {
        proxy_pass http://127.0.0.1:%(upstream)d;
        proxy_set_header Host $host;
        proxy_set_header X-Forwarded-Client-Cert $weighstation_client_cert;
        proxy_set_header X-Forwarded-For "";
    }
}
"""


def _wait_for_port(port: int, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"exited with {process.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


@contextmanager
def uvicorn_serving(app: Litestar) -> Iterator[int]:
    """The app under uvicorn with its defaults (proxy headers on), as `weighstation serve` runs it."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        _wait_for_port(port)
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextmanager
def nginx_in_front(workdir: Path, port: int, upstream: int, bundle: bytes) -> Iterator[int]:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    assert Path(nginx).exists(), "the proxy tests need nginx (Debian: nginx-light)"
    workdir.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "proxy.test")])
    now = datetime.now(UTC)
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .sign(key, hashes.SHA256())
    )
    (workdir / "server.pem").write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    (workdir / "server.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    (workdir / "ca-bundle.pem").write_bytes(bundle)
    server = NGINX_SERVER % {"port": port, "dir": workdir, "upstream": upstream}
    (workdir / "nginx.conf").write_text(
        f"pid {workdir}/nginx.pid;\nerror_log {workdir}/error.log;\nevents {{}}\n"
        f"http {{\naccess_log off;\nclient_body_temp_path {workdir}/body;\n"
        f"proxy_temp_path {workdir}/proxy;\n{server}\n}}\n"
    )
    command = [nginx, "-c", str(workdir / "nginx.conf"), "-p", str(workdir), "-g", "daemon off;"]
    checked = subprocess.run([*command[:5], "-t"], capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stderr
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_port(port, process)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


def _tls(cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    """TLS to the test proxy (a throwaway self-signed server certificate), with a client certificate."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if cert is not None:
        context.load_cert_chain(cert, key)
    return context


def _bundle(world: World) -> bytes:
    with world.service.client() as client:
        response = client.get("/v1/ca/bundle")
    assert response.status_code == 200
    return response.content


def _operator_certificate(world: World, truck: Truck, workdir: Path) -> tuple[Path, Path]:
    """A truck-profile certificate from our CA for the truck's SPIFFE ID, on a software key (not the
    TPM identity key): nginx accepts it, the service must not."""
    key = ec.generate_private_key(ec.SECP256R1())
    uri = truck.leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(key, hashes.SHA256())
    with world.service.client() as client:
        issued = client.post(
            "/v1/certificates",
            json={
                "profile": "truck",
                "csr": csr.public_bytes(serialization.Encoding.PEM).decode(),
                "uri_sans": uri.get_values_for_type(x509.UniformResourceIdentifier),
            },
            headers=world.service.admin(),
        )
    assert issued.status_code == 201, issued.text
    cert_path, key_path = workdir / "software.pem", workdir / "software.key"
    cert_path.write_text(issued.json()["certificate_pem"] + issued.json()["chain_pem"])
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


def test_request_jwt_and_certificate_header_through_nginx(world: World, tmp_path: Path) -> None:
    """Request JWTs pass the proxy; a client's own certificate header never reaches the service; a
    certificate nginx verified is forwarded and checked again (here ours, but not on the TPM key)."""
    truck = world.trucks["a"]
    path = f"/v1/trucks/{truck.id}/attestation-nonces"
    port = free_port()
    public = f"https://127.0.0.1:{port}"
    software_cert, software_key = _operator_certificate(world, truck, tmp_path)
    with ExitStack() as stack:
        upstream = stack.enter_context(
            uvicorn_serving(guarded_app(world, public=public, proxies="127.0.0.1/32"))
        )
        stack.enter_context(nginx_in_front(tmp_path / "nginx", port, upstream, _bundle(world)))
        signer = truck_request_signer(truck.tpm, truck.state, audience=public)
        with httpx.Client(base_url=public, verify=_tls()) as client:
            signed = client.post(path, headers={"Authorization": f"Bearer {signer('POST', public + path)}"})
            assert signed.status_code == 200 and signed.json() == {"truck": truck.id}, signed.text
            leaf_pem = truck.leaf.public_bytes(serialization.Encoding.PEM).decode()
            spoofed = client.post(path, headers={"X-Forwarded-Client-Cert": quote(leaf_pem)})
            assert spoofed.json() == {"truck": None}  # nginx replaced the client's header with nothing
        with httpx.Client(base_url=public, verify=_tls(software_cert, software_key)) as client:
            forwarded = client.post(path)
        assert forwarded.status_code == 401
        assert f"not the identity key truck {truck.id} enrolled last" in forwarded.json()["detail"]


def test_the_service_checks_the_request_jwt(world: World) -> None:
    """Through the running service's own guard: the agent's JWT is accepted once, its replay refused."""
    truck = world.trucks["a"]
    path = f"/v1/trucks/{truck.id}/attestation-nonces"
    headers = {"Authorization": f"Bearer {agent_token(world, truck)}"}
    with world.service.client() as client:
        first = client.post(path, json={"purpose": "attest"}, headers=headers)
        again = client.post(path, json={"purpose": "attest"}, headers=headers)
    assert first.status_code == 201, first.text
    assert again.status_code == 401 and "already used" in again.json()["detail"], again.text
