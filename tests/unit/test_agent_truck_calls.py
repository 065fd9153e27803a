"""Every truck call of the agent's client carries a request JWT minted for that exact call (method and
URL), a fresh one per attempt; the public reads (log key, checkpoint) and the enrollment carry none."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from agent.client import EnrollmentClient

BASE = "https://ws.test:8443"
CERTIFICATE = {
    "truck": "t-1",
    "fleet": "f",
    "spiffe_id": "spiffe://fleet.test/fleet/f/truck/t-1",
    "serial": "0a",
    "not_after": "2030-01-03T03:04:05Z",
    "certificate_pem": "-----BEGIN CERTIFICATE-----\n",
    "chain_pem": "-----BEGIN CERTIFICATE-----\n",
}
NONCE = {
    "id": "n-1",
    "truck": "t-1",
    "nonce": "AAAA",
    "extra_data": "AAAA",
    "bank": "sha256",
    "pcrs": [0, 1],
    "expires_at": "2030-01-03T03:04:05Z",
}
RESULT: dict[str, Any] = {
    "id": "r-1",
    "truck": "t-1",
    "status": "affirming",
    "release": None,
    "reasons": [],
    "expires_at": "2030-01-03T03:04:05Z",
    "token": "e30.e30.",
}


class Signer:
    """Stands in for the TPM signer: records what it was asked to sign, answers a distinct token."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self._count = itertools.count(1)

    def __call__(self, method: str, url: str) -> str:
        self.calls.append((method, url))
        return f"jwt-{next(self._count)}"


def answering(
    body: dict[str, Any], seen: list[httpx.Request], *, fail_first: bool = False
) -> httpx.MockTransport:
    failed = [not fail_first]

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if not failed[0]:
            failed[0] = True
            raise httpx.ConnectError("connection reset", request=request)
        return httpx.Response(200, json=body)

    return httpx.MockTransport(handler)


CALLS: list[tuple[str, str, str, dict[str, Any], Callable[[EnrollmentClient], object]]] = [
    ("nonce", "POST", "/v1/trucks/t-1/attestation-nonces", NONCE, lambda c: c.attestation_nonce("t-1")),
    (
        "attest",
        "POST",
        "/v1/trucks/t-1/attestations",
        RESULT,
        lambda c: c.attest(
            "t-1", "n-1", quote_info=b"q", signature=b"s", pcr_values={0: b"v"}, event_log=b"l"
        ),
    ),
    ("renew", "POST", "/v1/trucks/t-1/renewals", CERTIFICATE, lambda c: c.renew("t-1", "csr")),
    (
        "statement",
        "POST",
        "/v1/trucks/t-1/statements",
        {"status": "pending"},
        lambda c: c.submit_statement("t-1", b"st", b"sig", "chain"),
    ),
    (
        "statement-read",
        "GET",
        "/v1/trucks/t-1/statements/3",
        {"status": "sequenced"},
        lambda c: c.statement("t-1", 3),
    ),
    (
        "evidence-cert",
        "POST",
        "/v1/trucks/t-1/evidence-certificates",
        CERTIFICATE,
        lambda c: c.evidence_certificate("t-1", "csr"),
    ),
]


@pytest.mark.parametrize(("name", "method", "path", "body", "call"), CALLS, ids=[c[0] for c in CALLS])
def test_each_truck_call_is_signed_for_itself_afresh_on_every_attempt(
    name: str, method: str, path: str, body: dict[str, Any], call: Callable[[EnrollmentClient], object]
) -> None:
    signer, seen = Signer(), list[httpx.Request]()
    transport = answering(body, seen, fail_first=True)
    with EnrollmentClient(BASE, transport=transport, retry_delay=0, truck_auth=signer) as client:
        call(client)
    assert [r.method for r in seen] == [method, method]
    assert signer.calls == [(method, BASE + path)] * 2
    assert [r.headers["authorization"] for r in seen] == ["Bearer jwt-1", "Bearer jwt-2"]


@pytest.mark.parametrize(("name", "method", "path", "body", "call"), CALLS, ids=[c[0] for c in CALLS])
def test_without_a_truck_credential_nothing_is_signed(
    name: str, method: str, path: str, body: dict[str, Any], call: Callable[[EnrollmentClient], object]
) -> None:
    seen: list[httpx.Request] = []
    with EnrollmentClient(BASE, transport=answering(body, seen), retry_delay=0) as client:
        call(client)
    assert "authorization" not in seen[0].headers


def test_public_reads_carry_no_truck_credential() -> None:
    signer, seen = Signer(), list[httpx.Request]()

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, text="key+01234567+AAAA\n")

    transport = httpx.MockTransport(handler)
    with EnrollmentClient(BASE, transport=transport, retry_delay=0, truck_auth=signer) as client:
        client.log_key()
        client.log_checkpoint()
    assert signer.calls == [] and all("authorization" not in r.headers for r in seen)
    assert json.dumps([r.url.path for r in seen]) == json.dumps(["/v1/log/key", "/v1/log/checkpoint"])
