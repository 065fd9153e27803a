"""The agent's enrollment client against httpx.MockTransport: what goes on the wire (paths, bearer
token, base64 fields, Idempotency-Key), retries after transport errors only, and problem+json errors
turned into EnrollmentRefused."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from agent.client import (
    BadServerResponse,
    Challenge,
    Enrollment,
    EnrollmentClient,
    EnrollmentRefused,
    ServerUnreachable,
)

Handler = Callable[[httpx.Request], httpx.Response]

CHALLENGE = {
    "enrollment_id": "enr/01",  # a '/' must be escaped in the activate path
    "truck": "truck-7",
    "credential_blob": base64.b64encode(b"\x00\x20blob").decode(),
    "encrypted_secret": base64.b64encode(b"sealed-secret").decode(),
    "certify_nonce": base64.b64encode(bytes(range(32))).decode(),
    "expires_at": "2030-01-02T03:04:05Z",
}
ENROLLED = {
    "truck": "truck-7",
    "fleet": "west",
    "spiffe_id": "spiffe://fleet.test/fleet/west/truck/truck-7",
    "serial": "1f2e",
    "not_after": "2030-01-03T03:04:05.123456Z",
    "certificate_pem": "-----BEGIN CERTIFICATE-----\n",
    "chain_pem": "-----BEGIN CERTIFICATE-----\n",
}


class Recorder:
    """A MockTransport handler that records requests and answers from a script of responses/errors."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def body(self, index: int = -1) -> Any:
        return json.loads(self.requests[index].content)


def client_for(handler: Handler, base_url: str = "https://ws.test:8443") -> EnrollmentClient:
    return EnrollmentClient(base_url, transport=httpx.MockTransport(handler), retry_delay=0)


def problem(status: int, code: str, detail: str) -> httpx.Response:
    body = {"type": f"urn:weighstation:problem:{code}", "title": code, "status": status, "code": code}
    if detail:
        body["detail"] = detail
    return httpx.Response(status, json=body, headers={"content-type": "application/problem+json"})


def start(client: EnrollmentClient, **kwargs: Any) -> Challenge:
    return client.start(
        "tok-123", ek_certificate=b"\x30\x82der", ek_public=b"\x00\x23ek", ak_public=b"\x00\x23ak", **kwargs
    )


def activate(client: EnrollmentClient, enrollment_id: str = "enr/01") -> Enrollment:
    return client.activate(
        enrollment_id,
        secret=b"\xff" * 32,
        identity_public=b"\x00\x23id",
        certify_info=b"\xffTCG",
        certify_signature=b"\x00\x18sig",
        csr_pem="-----BEGIN CERTIFICATE REQUEST-----\n",
    )


# -- request shape ---------------------------------------------------------------------------------


def test_start_posts_the_token_and_base64_fields_and_decodes_the_challenge() -> None:
    recorder = Recorder(httpx.Response(201, json=CHALLENGE))
    with client_for(recorder) as client:
        challenge = start(client, truck="truck-7", ek_intermediates=[b"int-1", b"int-2"])

    (request,) = recorder.requests
    assert request.method == "POST"
    assert str(request.url) == "https://ws.test:8443/v1/enrollments"
    assert request.headers["authorization"] == "Bearer tok-123"
    assert request.headers["content-type"] == "application/json"
    assert recorder.body() == {
        "truck": "truck-7",
        "ek_certificate": base64.b64encode(b"\x30\x82der").decode(),
        "ek_public": base64.b64encode(b"\x00\x23ek").decode(),
        "ak_public": base64.b64encode(b"\x00\x23ak").decode(),
        "ek_intermediates": [base64.b64encode(b"int-1").decode(), base64.b64encode(b"int-2").decode()],
    }
    assert challenge == Challenge(
        enrollment_id="enr/01",
        truck="truck-7",
        credential_blob=b"\x00\x20blob",
        encrypted_secret=b"sealed-secret",
        certify_nonce=bytes(range(32)),
        expires_at=datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC),
    )


def test_start_leaves_out_optional_fields_it_was_not_given() -> None:
    recorder = Recorder(httpx.Response(201, json=CHALLENGE))
    with client_for(recorder) as client:
        start(client)
    assert set(recorder.body()) == {"ek_certificate", "ek_public", "ak_public"}


def test_activate_posts_to_the_escaped_enrollment_path_without_a_token() -> None:
    recorder = Recorder(httpx.Response(201, json=ENROLLED))
    with client_for(recorder, "https://ws.test/prefix/") as client:
        enrolled = activate(client)

    (request,) = recorder.requests
    assert request.url.raw_path == b"/prefix/v1/enrollments/enr%2F01/activate"
    assert "authorization" not in request.headers
    assert recorder.body() == {
        "secret": base64.b64encode(b"\xff" * 32).decode(),
        "identity_public": base64.b64encode(b"\x00\x23id").decode(),
        "certify_info": base64.b64encode(b"\xffTCG").decode(),
        "certify_signature": base64.b64encode(b"\x00\x18sig").decode(),
        "csr": "-----BEGIN CERTIFICATE REQUEST-----\n",
    }
    assert enrolled.spiffe_id == "spiffe://fleet.test/fleet/west/truck/truck-7"
    assert enrolled.not_after == datetime(2030, 1, 3, 3, 4, 5, 123456, tzinfo=UTC)
    assert (enrolled.truck, enrolled.fleet, enrolled.serial) == ("truck-7", "west", "1f2e")


def test_every_call_gets_its_own_idempotency_key() -> None:
    recorder = Recorder(httpx.Response(201, json=CHALLENGE), httpx.Response(201, json=CHALLENGE))
    with client_for(recorder) as client:
        start(client)
        start(client)
    keys = [r.headers["idempotency-key"] for r in recorder.requests]
    assert len(set(keys)) == 2
    for key in keys:
        assert 1 <= len(key) <= 128
        assert key.isascii() and key.isprintable() and " " not in key


# -- retries ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        httpx.ConnectError("connection refused"),
        httpx.ReadTimeout("no answer"),
        httpx.RemoteProtocolError("server disconnected"),
    ],
)
def test_a_transport_error_is_retried_with_the_same_idempotency_key(error: Exception) -> None:
    recorder = Recorder(error, httpx.Response(201, json=ENROLLED))
    with client_for(recorder) as client:
        enrolled = activate(client)
    assert enrolled.serial == "1f2e"
    first, second = recorder.requests
    assert first.headers["idempotency-key"] == second.headers["idempotency-key"]
    assert first.content == second.content
    assert first.url == second.url


def test_retries_stop_after_two_and_raise_server_unreachable() -> None:
    recorder = Recorder(*(httpx.ConnectError("connection refused") for _ in range(3)))
    with client_for(recorder) as client, pytest.raises(ServerUnreachable, match="connection refused"):
        start(client)
    assert len(recorder.requests) == 3
    assert len({r.headers["idempotency-key"] for r in recorder.requests}) == 1


@pytest.mark.parametrize("status", [400, 401, 409, 422, 500, 503])
def test_an_error_status_is_never_retried(status: int) -> None:
    recorder = Recorder(problem(status, "some-code", "no"), httpx.Response(201, json=CHALLENGE))
    with client_for(recorder) as client, pytest.raises(EnrollmentRefused):
        start(client)
    assert len(recorder.requests) == 1


# -- errors ----------------------------------------------------------------------------------------


def test_problem_json_becomes_enrollment_refused_with_its_code_and_detail() -> None:
    recorder = Recorder(problem(403, "enrollment-token-invalid", "the token was already used"))
    with client_for(recorder) as client, pytest.raises(EnrollmentRefused) as caught:
        start(client)
    assert (caught.value.status, caught.value.code, caught.value.detail) == (
        403,
        "enrollment-token-invalid",
        "the token was already used",
    )
    assert str(caught.value) == "403 enrollment-token-invalid: the token was already used"


def test_problem_without_detail_falls_back_to_its_title() -> None:
    recorder = Recorder(problem(410, "enrollment-expired", ""))
    with client_for(recorder) as client, pytest.raises(EnrollmentRefused) as caught:
        activate(client)
    assert (caught.value.status, caught.value.code, caught.value.detail) == (
        410,
        "enrollment-expired",
        "enrollment-expired",
    )


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(502, text="<html>bad gateway</html>", headers={"content-type": "text/html"}),
        httpx.Response(502, json={"code": "upstream"}),  # JSON, but not a problem document
        httpx.Response(502, content=b"{", headers={"content-type": "application/problem+json"}),
        httpx.Response(502, json=["x"], headers={"content-type": "application/problem+json"}),
    ],
)
def test_other_error_bodies_become_http_status_codes(response: httpx.Response) -> None:
    with client_for(Recorder(response)) as client, pytest.raises(EnrollmentRefused) as caught:
        start(client)
    assert (caught.value.status, caught.value.code, caught.value.detail) == (502, "http-502", "Bad Gateway")


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"certify_nonce": "not base64!"}, "certify_nonce"),
        ({"credential_blob": 12}, "credential_blob"),
        ({"expires_at": "tomorrow"}, "expires_at"),
        ({"expires_at": "2030-01-02T03:04:05"}, "expires_at"),  # no offset: ambiguous
        ({"enrollment_id": None}, "enrollment_id"),
    ],
)
def test_a_challenge_off_the_contract_is_a_bad_server_response(change: dict[str, Any], match: str) -> None:
    recorder = Recorder(httpx.Response(201, json={**CHALLENGE, **change}))
    with client_for(recorder) as client, pytest.raises(BadServerResponse, match=match):
        start(client)


def test_a_missing_field_or_a_non_object_is_a_bad_server_response() -> None:
    enrolled = {k: v for k, v in ENROLLED.items() if k != "chain_pem"}
    recorder = Recorder(httpx.Response(201, json=enrolled), httpx.Response(201, json=[ENROLLED]))
    with client_for(recorder) as client:
        with pytest.raises(BadServerResponse, match="chain_pem"):
            activate(client)
        with pytest.raises(BadServerResponse, match="JSON object"):
            activate(client)


def test_only_http_urls_are_accepted() -> None:
    with pytest.raises(ValueError, match="http"):
        EnrollmentClient("ws.test:8443")
