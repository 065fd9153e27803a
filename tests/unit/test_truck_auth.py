"""api.truck_auth: which truck credential a request carries and whether a forwarded client certificate
is believed (TCP peer in WEIGHSTATION_TRUSTED_PROXIES, no X-Forwarded-For), before any certificate check.

The certificate and JWT checks themselves run against real enrolled swtpm trucks in
tests/integration/test_truck_requests.py; here a recording stand-in for TruckRequests shows what
authenticate_truck hands it, and that it is never reached for a header it must not believe."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from litestar import Litestar
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException

from api.settings import Settings, SettingsError, load_settings
from api.truck_auth import (
    authenticate_truck,
    forwarded_certificate,
    peer_is_trusted,
    spend_unspent,
    truck_request_jwt,
    unspent_jti,
)
from provision.errors import TruckRequestInvalid
from provision.single_use import PendingJti
from provision.truck_requests import TruckRequester

PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
NETWORKS = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8"))


def requester(truck: str, jti: str | None) -> TruckRequester:
    return TruckRequester(
        truck_id=truck,
        fleet_id="north",
        spiffe_id=f"spiffe://fleet.test/fleet/north/truck/{truck}",
        certificate_serial="ab",
        jti=jti,
        expires_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


@dataclass
class Recorder:
    """Stands in for TruckRequests: records each call and answers with `answer` (or raises it)."""

    certificate_truck: str = "t-1"
    token_truck: str = "t-1"
    refuse: str | None = None
    refuse_spend: str | None = None
    calls: list[tuple[str, Any]] = field(default_factory=list)
    spends: list[bool] = field(default_factory=list)  # verify's `spend` argument, per call

    def verify(self, token: str, *, method: str, url: str, spend: bool = True) -> TruckRequester:
        self.calls.append(("verify", (token, method, url)))
        self.spends.append(spend)
        if self.refuse:
            raise TruckRequestInvalid(self.refuse)
        found = requester(self.token_truck, "j-1")
        if spend:
            return found
        pending = PendingJti("truck-request", "j-1", self.token_truck, found.expires_at)
        return replace(found, unspent=pending)

    def spend(self, pending: PendingJti) -> None:
        self.calls.append(("spent", pending.jti))
        if self.refuse_spend:
            raise TruckRequestInvalid(self.refuse_spend)

    def verify_client_certificate(self, pem_chain: str) -> TruckRequester:
        self.calls.append(("certificate", pem_chain))
        if self.refuse:
            raise TruckRequestInvalid(self.refuse)
        return requester(self.certificate_truck, None)


def token(typ: str = "truck-request+jwt") -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return jwt.encode({"iss": "t-1"}, key, algorithm="ES256", headers={"typ": typ})


def connection(
    recorder: Recorder,
    headers: dict[str, str],
    *,
    peer: str = "10.1.2.3",
    settings: Settings | None = None,
    operation: str | None = None,
) -> ASGIConnection[Any, Any, Any, Any]:
    app = Litestar(route_handlers=[])
    app.state.services = SimpleNamespace(
        settings=settings or load_settings({"WEIGHSTATION_TRUSTED_PROXIES": "10.0.0.0/8, fd00::/8"}),
        truck_requests=recorder,
    )
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/trucks/t-1/attestations",
        "raw_path": b"/v1/trucks/t-1/attestations",
        "query_string": b"x=1",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": (peer, 40000),
        "app": app,
        "litestar_app": app,
        "state": {},
    }
    if operation is not None:
        scope["route_handler"] = SimpleNamespace(operation_id=operation)
    return ASGIConnection(scope)  # type: ignore[arg-type]


def refused(conn: ASGIConnection[Any, Any, Any, Any], says: str) -> None:
    with pytest.raises(NotAuthorizedException) as caught:
        authenticate_truck(conn)
    assert says in str(caught.value.detail), caught.value.detail


# -- CIDR trust ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("peer", "trusted"),
    [
        ("10.1.2.3", True),
        ("11.0.0.1", False),
        ("fd12::1", True),
        ("fe80::1", False),
        ("::ffff:10.9.9.9", True),  # an IPv4 proxy seen on a dual-stack socket
        ("::ffff:192.0.2.1", False),
        ("testclient", False),
        ("", False),
        (None, False),
    ],
)
def test_peer_trust(peer: str | None, trusted: bool) -> None:
    assert peer_is_trusted(peer, NETWORKS) is trusted


def test_no_trusted_networks_trust_nobody() -> None:
    assert not peer_is_trusted("127.0.0.1", ())


def test_trusted_proxies_setting() -> None:
    settings = load_settings({"WEIGHSTATION_TRUSTED_PROXIES": "10.0.0.0/8, 192.0.2.7 ,::1"})
    assert settings.trusted_proxy_networks == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("192.0.2.7/32"),
        ipaddress.ip_network("::1/128"),
    )
    assert load_settings({}).trusted_proxy_networks == ()
    assert load_settings({}).client_cert_header == "X-Forwarded-Client-Cert"


@pytest.mark.parametrize("value", ["10.0.0.1/8", "10.0.0.0/33", "proxy.example", "10.0.0.0/8;"])
def test_trusted_proxies_typo_stops_the_start(value: str) -> None:
    with pytest.raises(SettingsError, match="WEIGHSTATION_TRUSTED_PROXIES"):
        load_settings({"WEIGHSTATION_TRUSTED_PROXIES": value})


def test_client_cert_header_must_be_a_header_name() -> None:
    with pytest.raises(SettingsError, match="WEIGHSTATION_CLIENT_CERT_HEADER"):
        load_settings({"WEIGHSTATION_CLIENT_CERT_HEADER": "X-Cert: evil"})


# -- header parsing ------------------------------------------------------------------------------


def test_nginx_escaped_certificate_is_decoded() -> None:
    # $ssl_client_escaped_cert: the PEM with reserved characters (newlines, '+', '/', '=') escaped.
    assert forwarded_certificate(quote(PEM, safe="")) == PEM
    assert forwarded_certificate(" " + quote(PEM, safe="") + " ") == PEM


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("MIIB", "not a URL-escaped PEM"),
        (quote("-----BEGIN PRIVATE KEY-----\n", safe=""), "not a URL-escaped PEM"),
        ("%ff%fe", "can't decode"),
        ("A" * 20000, "longer than"),
    ],
)
def test_bad_certificate_header(value: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        forwarded_certificate(value)


def test_truck_request_jwt_is_picked_by_its_typ() -> None:
    truck = token()
    assert truck_request_jwt(f"Bearer {truck}") == truck
    assert truck_request_jwt(f"bearer  {truck} ") == truck
    assert truck_request_jwt(f"Bearer {token('at+jwt')}") is None  # an OAuth2 access token
    assert truck_request_jwt(f"Bearer {token('JWT')}") is None
    assert truck_request_jwt(f"Basic {truck}") is None
    assert truck_request_jwt("Bearer not-a-jwt") is None
    assert truck_request_jwt("") is None


# -- authenticate_truck --------------------------------------------------------------------------


def test_no_truck_credential_is_none() -> None:
    recorder = Recorder()
    assert authenticate_truck(connection(recorder, {})) is None
    assert authenticate_truck(connection(recorder, {"Authorization": f"Bearer {token('at+jwt')}"})) is None
    assert recorder.calls == []


def test_request_jwt_is_verified_for_this_call() -> None:
    recorder = Recorder()
    truck = token()
    found = authenticate_truck(connection(recorder, {"Authorization": f"Bearer {truck}"}))
    assert found is not None and found.truck_id == "t-1" and found.jti == "j-1"
    # htu is compared with our public URL plus the path as sent; the query is not part of it.
    assert recorder.calls == [("verify", (truck, "POST", "http://127.0.0.1:8443/v1/trucks/t-1/attestations"))]
    assert recorder.spends == [True]
    assert unspent_jti(connection(recorder, {})) is None


def test_attestation_operations_leave_the_jti_to_the_use_case() -> None:
    """On the nonce and attestation routes the guard verifies without spending and hands the jti on;
    spend_unspent (a refusal's path) spends it once, in its own transaction, and tolerates a replay."""
    recorder = Recorder()
    conn = connection(recorder, {"Authorization": f"Bearer {token()}"}, operation="attestTruck")
    found = authenticate_truck(conn)
    assert found is not None and recorder.spends == [False]
    pending = unspent_jti(conn)
    assert pending is not None and pending.jti == "j-1" and pending.subject == "t-1"
    spend_unspent(conn)
    spend_unspent(conn)  # nothing left to spend the second time
    assert [c for c in recorder.calls if c[0] == "spent"] == [("spent", "j-1")]
    assert unspent_jti(conn) is None
    recorder.refuse_spend = "already used"
    conn = connection(recorder, {"Authorization": f"Bearer {token()}"}, operation="issueAttestationNonce")
    authenticate_truck(conn)
    spend_unspent(conn)  # spent meanwhile (the use case, a racing replay): not an error here
    assert recorder.calls[-1] == ("spent", "j-1")


def test_other_operations_spend_in_the_guard() -> None:
    recorder = Recorder()
    conn = connection(recorder, {"Authorization": f"Bearer {token()}"}, operation="renewTruckCertificate")
    authenticate_truck(conn)
    assert recorder.spends == [True] and unspent_jti(conn) is None


def test_refused_request_jwt_is_401_with_the_reason() -> None:
    recorder = Recorder(refuse="the request JWT has expired (exp)")
    refused(connection(recorder, {"Authorization": f"Bearer {token()}"}), "has expired (exp)")


def test_certificate_header_from_a_trusted_proxy() -> None:
    recorder = Recorder()
    found = authenticate_truck(connection(recorder, {"X-Forwarded-Client-Cert": quote(PEM, safe="")}))
    assert found is not None and found.truck_id == "t-1" and found.jti is None
    assert recorder.calls == [("certificate", PEM)]


def test_certificate_header_from_an_untrusted_address_is_refused_unchecked() -> None:
    recorder = Recorder()
    conn = connection(recorder, {"X-Forwarded-Client-Cert": quote(PEM, safe="")}, peer="192.0.2.1")
    refused(conn, "a client-certificate header from an untrusted address (192.0.2.1)")
    assert recorder.calls == []


def test_certificate_header_with_no_trusted_proxies_configured() -> None:
    recorder = Recorder()
    conn = connection(recorder, {"X-Forwarded-Client-Cert": quote(PEM, safe="")}, settings=load_settings({}))
    refused(conn, "untrusted address (10.1.2.3)")
    assert recorder.calls == []


def test_certificate_header_with_x_forwarded_for_is_refused() -> None:
    """uvicorn rewrites the peer from X-Forwarded-For for peers it trusts: the address is not the TCP
    peer's any more, so it cannot vouch for the proxy."""
    recorder = Recorder()
    headers = {"X-Forwarded-Client-Cert": quote(PEM, safe=""), "X-Forwarded-For": "10.0.0.9"}
    refused(connection(recorder, headers), "X-Forwarded-For")
    assert recorder.calls == []


def test_configured_header_name_is_the_one_read() -> None:
    recorder = Recorder()
    settings = load_settings(
        {"WEIGHSTATION_TRUSTED_PROXIES": "10.0.0.0/8", "WEIGHSTATION_CLIENT_CERT_HEADER": "X-SSL-Client-Cert"}
    )
    header = {"X-Forwarded-Client-Cert": quote(PEM, safe="")}
    assert authenticate_truck(connection(recorder, header, settings=settings)) is None
    found = authenticate_truck(
        connection(recorder, {"X-SSL-Client-Cert": quote(PEM, safe="")}, settings=settings)
    )
    assert found is not None and recorder.calls == [("certificate", PEM)]


def test_malformed_certificate_header_is_refused() -> None:
    recorder = Recorder()
    refused(connection(recorder, {"X-Forwarded-Client-Cert": "MIIB"}), "not a URL-escaped PEM")
    assert recorder.calls == []


def test_certificate_refused_by_the_checks_is_401() -> None:
    recorder = Recorder(refuse="certificate ab is revoked (keyCompromise)")
    refused(connection(recorder, {"X-Forwarded-Client-Cert": quote(PEM, safe="")}), "is revoked")


def test_certificate_and_jwt_of_different_trucks_are_refused() -> None:
    recorder = Recorder(certificate_truck="t-1", token_truck="t-2")
    headers = {"X-Forwarded-Client-Cert": quote(PEM, safe=""), "Authorization": f"Bearer {token()}"}
    refused(connection(recorder, headers), "name different trucks")


def test_certificate_and_jwt_of_the_same_truck() -> None:
    recorder = Recorder()
    headers = {"X-Forwarded-Client-Cert": quote(PEM, safe=""), "Authorization": f"Bearer {token()}"}
    found = authenticate_truck(connection(recorder, headers))
    assert found is not None and found.jti == "j-1"
    assert [name for name, _ in recorder.calls] == ["certificate", "verify"]
