"""The truck's HTTP client for the two enrollment calls (start → challenge, activate → certificate).

Synchronous httpx, standard base64 for binary fields, RFC 9457 problem+json errors turned into
`EnrollmentRefused`. Each call carries a fresh `Idempotency-Key`; only a transport failure (the
request may or may not have reached the server) is retried, with the same key, so the server
replays the first answer instead of acting twice. A 4xx/5xx answer is never retried.
"""

from __future__ import annotations

import base64
import binascii
import copy
import secrets
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx

PROBLEM_MEDIA_TYPE = "application/problem+json"
_USER_AGENT = "weighstation-agent/0.1"


class EnrollmentError(Exception):
    """Enrollment did not complete; subclasses say why."""


class EnrollmentRefused(EnrollmentError):
    """The server answered with an error: its status, stable code (problem+json `code`, or
    "http-<status>" when the body is not a problem) and detail."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail


class ServerUnreachable(EnrollmentError):
    """No answer from the server, after the retries (connection refused, TLS failure, timeout, ...)."""


class BadServerResponse(EnrollmentError):
    """A success status whose body does not follow the wire contract."""


@dataclass(frozen=True)
class Challenge:
    """The start call's answer: the credential sealed to the EK for the AK's name, and the nonce the
    identity key's Certify must carry."""

    enrollment_id: str
    truck: str
    credential_blob: bytes  # TPM2B_ID_OBJECT contents
    encrypted_secret: bytes  # TPM2B_ENCRYPTED_SECRET contents
    certify_nonce: bytes
    expires_at: datetime
    # The first quote the authority asks for (extraData, bank, PCRs); None when it asks for none.
    quote_nonce: bytes | None = None
    quote_bank: str | None = None
    quote_pcrs: tuple[int, ...] = ()


@dataclass(frozen=True)
class FirstQuote:
    """The first quote, sent with the activation: by the AK being enrolled, over the quote nonce."""

    quote_info: bytes
    signature: bytes
    pcr_values: Mapping[int, bytes]
    event_log: bytes


@dataclass(frozen=True)
class Enrollment:
    """The activate call's answer: the truck's identity certificate and its chain (issuing CA, root)."""

    truck: str
    fleet: str
    spiffe_id: str
    serial: str
    not_after: datetime
    certificate_pem: str
    chain_pem: str


@dataclass(frozen=True)
class AttestationNonce:
    id: str
    truck: str
    nonce: bytes
    extra_data: bytes  # what the quote's extraData must be
    bank: str
    pcrs: tuple[int, ...]
    expires_at: datetime


@dataclass(frozen=True)
class AttestationResult:
    id: str
    truck: str
    status: str
    release: str | None  # the release version, or None when no golden release matched
    reasons: tuple[str, ...]
    expires_at: datetime
    token: str


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _field(body: Mapping[str, Any], key: str) -> Any:
    if key not in body:
        raise BadServerResponse(f"response has no {key!r}")
    return body[key]


def _str(body: Mapping[str, Any], key: str) -> str:
    value = _field(body, key)
    if not isinstance(value, str):
        raise BadServerResponse(f"response field {key!r} is not a string")
    return value


def _bytes(body: Mapping[str, Any], key: str) -> bytes:
    try:
        return base64.b64decode(_str(body, key), validate=True)
    except binascii.Error as exc:
        raise BadServerResponse(f"response field {key!r} is not base64: {exc}") from None


def _time(body: Mapping[str, Any], key: str) -> datetime:
    try:
        value = datetime.fromisoformat(_str(body, key))
    except ValueError as exc:
        raise BadServerResponse(f"response field {key!r} is not an RFC 3339 time: {exc}") from None
    if value.tzinfo is None:
        raise BadServerResponse(f"response field {key!r} has no UTC offset")
    return value


def _quote_request(answer: Mapping[str, Any]) -> dict[str, Any]:
    """The challenge's first-quote fields (absent or null: no quote asked for)."""
    if answer.get("quote_nonce") is None:
        return {}
    pcrs = _field(answer, "quote_pcrs")
    if not isinstance(pcrs, list) or not pcrs or not all(isinstance(p, int) for p in pcrs):
        raise BadServerResponse("challenge: quote_pcrs is not a non-empty list of integers")
    return {
        "quote_nonce": _bytes(answer, "quote_nonce"),
        "quote_bank": _str(answer, "quote_bank"),
        "quote_pcrs": tuple(pcrs),
    }


def _enrollment(answer: Mapping[str, Any]) -> Enrollment:
    return Enrollment(
        truck=_str(answer, "truck"),
        fleet=_str(answer, "fleet"),
        spiffe_id=_str(answer, "spiffe_id"),
        serial=_str(answer, "serial"),
        not_after=_time(answer, "not_after"),
        certificate_pem=_str(answer, "certificate_pem"),
        chain_pem=_str(answer, "chain_pem"),
    )


def _refusal(response: httpx.Response) -> EnrollmentRefused:
    status = response.status_code
    fallback = EnrollmentRefused(status, f"http-{status}", response.reason_phrase or "error")
    media_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != PROBLEM_MEDIA_TYPE:
        return fallback
    try:
        problem = response.json()
    except ValueError:
        return fallback
    if not isinstance(problem, dict) or not isinstance(problem.get("code"), str) or not problem["code"]:
        return fallback
    detail = problem.get("detail")
    if not isinstance(detail, str) or not detail:
        title = problem.get("title")
        detail = title if isinstance(title, str) and title else fallback.detail
    return EnrollmentRefused(status, problem["code"], detail)


class EnrollmentClient:
    """The enrollment calls against one server. Use as a context manager, or call `close()`.

    verify: a CA bundle file to trust for the server's TLS certificate, or True for the system store.
    retries: how many times a call is repeated after a transport error (same Idempotency-Key).
    """

    def __init__(
        self,
        base_url: str,
        *,
        verify: Path | str | bool = True,
        timeout: float = 30.0,
        retries: int = 2,
        retry_delay: float = 0.5,
        transport: httpx.BaseTransport | None = None,
        truck_auth: Callable[[str, str], str] | None = None,
    ) -> None:
        if httpx.URL(base_url).scheme not in ("http", "https"):
            raise ValueError(f"server URL must be http(s)://..., not {base_url!r}")
        tls: ssl.SSLContext | bool
        # httpx wants an SSLContext for a custom bundle (a path for `verify` is deprecated there).
        tls = verify if isinstance(verify, bool) else ssl.create_default_context(cafile=str(verify))
        self._retries = retries
        self._retry_delay = retry_delay
        self.server_url = base_url.rstrip("/")
        # (method, url) -> a fresh truck request JWT (agent.request_auth); None: truck calls go unsigned.
        self._truck_auth = truck_auth
        self._http = httpx.Client(
            base_url=base_url,
            verify=tls,
            timeout=timeout,
            transport=transport,
            headers={"User-Agent": _USER_AGENT, "Accept": f"application/json, {PROBLEM_MEDIA_TYPE}"},
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> EnrollmentClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def for_truck(self, truck_auth: Callable[[str, str], str]) -> EnrollmentClient:
        """This client (same connection pool: close the original) signing its truck calls with
        `truck_auth`, e.g. agent.request_auth.TruckRequestSigner."""
        authenticated = copy.copy(self)
        authenticated._truck_auth = truck_auth
        return authenticated

    def truck_authorization(self, method: str, path: str) -> dict[str, str]:
        """The Authorization header of a truck call to `path`: a request JWT minted now (single use, so
        call this once per attempt); empty when the client has no truck credential."""
        if self._truck_auth is None:
            return {}
        return {"Authorization": f"Bearer {self._truck_auth(method.upper(), self.server_url + path)}"}

    def _post(
        self,
        path: str,
        body: dict[str, Any],
        headers: dict[str, str] | None = None,
        *,
        as_truck: bool = False,
    ) -> dict[str, Any]:
        """POST JSON; the decoded 2xx body, or EnrollmentRefused / ServerUnreachable / BadServerResponse.
        `as_truck`: authenticated with a fresh truck request JWT on every attempt."""
        headers = {**(headers or {}), "Idempotency-Key": secrets.token_urlsafe(24)}
        attempt = 0
        while True:
            try:
                signed = {**headers, **self.truck_authorization("POST", path)} if as_truck else headers
                response = self._http.post(path, json=body, headers=signed)
                break
            except httpx.TransportError as exc:
                if attempt >= self._retries:
                    raise ServerUnreachable(f"POST {path}: {exc}") from exc
                attempt += 1
                time.sleep(self._retry_delay * attempt)
        if not response.is_success:
            raise _refusal(response)
        try:
            decoded = response.json()
        except ValueError as exc:
            raise BadServerResponse(f"POST {path}: response is not JSON: {exc}") from None
        if not isinstance(decoded, dict):
            raise BadServerResponse(f"POST {path}: response is not a JSON object")
        return decoded

    def start(
        self,
        token: str,
        *,
        ek_certificate: bytes,
        ek_public: bytes,
        ak_public: bytes,
        truck: str | None = None,
        ek_intermediates: Sequence[bytes] = (),
    ) -> Challenge:
        """POST /v1/enrollments with the enrollment token: EK certificate and public area, AK public area."""
        body: dict[str, Any] = {
            "ek_certificate": _b64(ek_certificate),
            "ek_public": _b64(ek_public),
            "ak_public": _b64(ak_public),
        }
        if truck is not None:
            body["truck"] = truck
        if ek_intermediates:
            body["ek_intermediates"] = [_b64(der) for der in ek_intermediates]
        answer = self._post("/v1/enrollments", body, {"Authorization": f"Bearer {token}"})
        return Challenge(
            enrollment_id=_str(answer, "enrollment_id"),
            truck=_str(answer, "truck"),
            credential_blob=_bytes(answer, "credential_blob"),
            encrypted_secret=_bytes(answer, "encrypted_secret"),
            certify_nonce=_bytes(answer, "certify_nonce"),
            expires_at=_time(answer, "expires_at"),
            **_quote_request(answer),
        )

    def activate(
        self,
        enrollment_id: str,
        *,
        secret: bytes,
        identity_public: bytes,
        certify_info: bytes,
        certify_signature: bytes,
        csr_pem: str,
        first_quote: FirstQuote | None = None,
    ) -> Enrollment:
        """POST /v1/enrollments/{id}/activate: the activated secret, the identity key's Certify, the CSR
        and, where the challenge asked for one, the first quote."""
        body: dict[str, Any] = {
            "secret": _b64(secret),
            "identity_public": _b64(identity_public),
            "certify_info": _b64(certify_info),
            "certify_signature": _b64(certify_signature),
            "csr": csr_pem,
        }
        if first_quote is not None:
            body |= {
                "quote": _b64(first_quote.quote_info),
                "quote_signature": _b64(first_quote.signature),
                "pcr_values": {str(p): _b64(v) for p, v in sorted(first_quote.pcr_values.items())},
                "event_log": _b64(first_quote.event_log),
            }
        return _enrollment(self._post(f"/v1/enrollments/{quote(enrollment_id, safe='')}/activate", body))

    def attestation_nonce(
        self, truck: str, *, purpose: str = "attest", tender: str | None = None
    ) -> AttestationNonce:
        """POST /v1/trucks/{truck}/attestation-nonces: a nonce and the PCR selection to quote."""
        body: dict[str, Any] = {"purpose": purpose}
        if tender is not None:
            body["tender"] = tender
        answer = self._post(f"/v1/trucks/{quote(truck, safe='')}/attestation-nonces", body, as_truck=True)
        pcrs = _field(answer, "pcrs")
        if not isinstance(pcrs, list) or not all(isinstance(p, int) for p in pcrs):
            raise BadServerResponse("attestation nonce: pcrs is not a list of integers")
        return AttestationNonce(
            id=_str(answer, "id"),
            truck=_str(answer, "truck"),
            nonce=_bytes(answer, "nonce"),
            extra_data=_bytes(answer, "extra_data"),
            bank=_str(answer, "bank"),
            pcrs=tuple(pcrs),
            expires_at=_time(answer, "expires_at"),
        )

    def attest(
        self,
        truck: str,
        nonce_id: str,
        *,
        quote_info: bytes,
        signature: bytes,
        pcr_values: Mapping[int, bytes],
        event_log: bytes,
    ) -> AttestationResult:
        """POST /v1/trucks/{truck}/attestations: the quote, its signature, the PCR values, the event log."""
        body = {
            "nonce_id": nonce_id,
            "quote": _b64(quote_info),
            "signature": _b64(signature),
            "pcr_values": {str(pcr): _b64(value) for pcr, value in sorted(pcr_values.items())},
            "event_log": _b64(event_log),
        }
        answer = self._post(f"/v1/trucks/{quote(truck, safe='')}/attestations", body, as_truck=True)
        release = _field(answer, "release")
        reasons = _field(answer, "reasons")
        if not isinstance(reasons, list):
            raise BadServerResponse("attestation result: reasons is not a list")
        return AttestationResult(
            id=_str(answer, "id"),
            truck=_str(answer, "truck"),
            status=_str(answer, "status"),
            release=_str(release, "version") if isinstance(release, dict) else None,
            reasons=tuple(str(r) for r in reasons),
            expires_at=_time(answer, "expires_at"),
            token=_str(answer, "token"),
        )

    def renew(self, truck: str, csr_pem: str) -> Enrollment:
        """POST /v1/trucks/{truck}/renewals: a CSR by the TPM identity key, after an affirming attestation."""
        path = f"/v1/trucks/{quote(truck, safe='')}/renewals"
        return _enrollment(self._post(path, {"csr": csr_pem}, as_truck=True))

    # -- evidence: the transparency log and truck statements ------------------------------------------

    def _get(self, path: str, *, as_truck: bool = False) -> httpx.Response:
        """GET; the 2xx response, or EnrollmentRefused / ServerUnreachable (transport errors retried).
        `as_truck`: authenticated with a fresh truck request JWT on every attempt."""
        attempt = 0
        while True:
            try:
                headers = self.truck_authorization("GET", path) if as_truck else None
                response = self._http.get(path, headers=headers)
                break
            except httpx.TransportError as exc:
                if attempt >= self._retries:
                    raise ServerUnreachable(f"GET {path}: {exc}") from exc
                attempt += 1
                time.sleep(self._retry_delay * attempt)
        if not response.is_success:
            raise _refusal(response)
        return response

    def _get_json(self, path: str, *, as_truck: bool = False) -> dict[str, Any]:
        try:
            decoded = self._get(path, as_truck=as_truck).json()
        except ValueError as exc:
            raise BadServerResponse(f"GET {path}: response is not JSON: {exc}") from None
        if not isinstance(decoded, dict):
            raise BadServerResponse(f"GET {path}: response is not a JSON object")
        return decoded

    def log_key(self) -> str:
        """GET /v1/log/key: the log's signed-note verifier key."""
        return self._get("/v1/log/key").text.strip()

    def log_checkpoint(self) -> bytes:
        """GET /v1/log/checkpoint: the latest signed checkpoint (a signed note)."""
        return self._get("/v1/log/checkpoint").content

    def submit_statement(
        self,
        truck: str,
        statement: bytes,
        signature: bytes,
        chain_pem: str,
        *,
        evidence_certificate_pem: str | None = None,
    ) -> dict[str, Any]:
        """POST /v1/trucks/{truck}/statements: the statement's bytes, its signature, the certificate chain
        (and the evidence-signing certificate for the same key, if any: the server then keeps what its
        Sigstore bundle needs). The body has a receipt, or status "pending" and a receipt_url to poll."""
        body = {
            "statement": _b64(statement),
            "signature": _b64(signature),
            "certificate_chain_pem": chain_pem,
        }
        if evidence_certificate_pem is not None:
            body["evidence_certificate_pem"] = evidence_certificate_pem
        return self._post(f"/v1/trucks/{quote(truck, safe='')}/statements", body, as_truck=True)

    def evidence_certificate(
        self, truck: str, csr_pem: str, *, ttl_seconds: int | None = None
    ) -> dict[str, Any]:
        """POST /v1/trucks/{truck}/evidence-certificates: a CSR by the TPM identity key → an
        evidence-signing certificate (certificate_pem, chain_pem, spiffe_id, serial, validity)."""
        body: dict[str, Any] = {"csr": csr_pem}
        if ttl_seconds is not None:
            body["ttl_seconds"] = ttl_seconds
        return self._post(f"/v1/trucks/{quote(truck, safe='')}/evidence-certificates", body, as_truck=True)

    def statement(self, truck: str, sequence: int) -> dict[str, Any]:
        """GET /v1/trucks/{truck}/statements/{sequence}: the statement, with its receipt once sequenced."""
        return self._get_json(f"/v1/trucks/{quote(truck, safe='')}/statements/{sequence}", as_truck=True)
