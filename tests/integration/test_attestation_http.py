"""Attestation over HTTP with real swtpm trucks: a truck enrolls, boots (simulated, measured into its TPM
with an event log), attests with the agent and gets a result token that pyjwt verifies against the JWKS.
Each negative changes one thing the truck sends (or the authority's view of it) and is refused for its
own reason, audited; failures of evidence the truck's TPM signed quarantine it."""

from __future__ import annotations

import base64
import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy import create_engine, text

from agent.attest import attest
from agent.boot import MeasuredBoot, TruckBoot, measure_boot, truck_boot
from agent.client import EnrollmentClient, EnrollmentRefused
from agent.enroll import identity_csr
from agent.request_auth import as_truck
from agent.state import AgentState
from agent.tpm import TruckTpm
from attest.eventlog import Event, EventType, encode_event, parse_event_log
from tests.support.audit import audit_rows
from tests.support.csr import make_csr
from tests.support.enrolling import Operator, boot_and_enroll
from tests.support.releases import ReleaseSigner
from tests.support.service import RunningService
from tests.support.swtpm import ManufacturerCa, running_tpms

pytestmark = pytest.mark.integration
MODEL = "hauler-9"  # the model Operator.truck registers, and truck_boot's default


@dataclass
class Truck:
    id: str
    tpm: TruckTpm
    state: AgentState
    boot: MeasuredBoot
    client: EnrollmentClient
    url: str


def db(service: RunningService) -> str:
    return f"sqlite:///{service.data_dir / 'weighstation.db'}"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def golden(enrolling: RunningService) -> str:
    """The release team's signed manifest of the default boot, registered by the operator."""
    with enrolling.client() as client:
        return Operator(enrolling, client).golden_release()


Fleet = Callable[..., Truck]


@pytest.fixture
def fleet(
    enrolling: RunningService, manufacturer: ManufacturerCa, tmp_path: Path, golden: str
) -> Iterator[Fleet]:
    """Makes enrolled trucks, each on its own swtpm: booted with `boot` (default firmware) before
    enrolling, so the first quote covers it, and signing their truck calls with their identity key.
    `reboot_into`: after enrolling, the truck reboots (TPM reset) into that boot instead, e.g. firmware
    no release approves, which enrollment would refuse."""
    with ExitStack() as stack:
        operator = Operator(enrolling, stack.enter_context(enrolling.client()))
        client = stack.enter_context(EnrollmentClient(enrolling.url))
        count = itertools.count()

        def make(boot: TruckBoot | None = None, *, reboot_into: TruckBoot | None = None) -> Truck:
            i = next(count)
            (running,) = stack.enter_context(
                running_tpms(tmp_path / f"tpms-{i}", manufacturer, 1, "ecc", distinct=True)
            )
            truck = operator.truck()
            enrolled = boot_and_enroll(
                stack, running.tcti, client, operator.token(truck), truck, tmp_path / f"state-{i}", boot
            )
            tpm, state, measured = enrolled.tpm, enrolled.state, enrolled.measured
            if reboot_into is not None:
                running.power_cycle()
                measured = measure_boot(tpm, reboot_into)
            return Truck(truck, tpm, state, measured, as_truck(client, tpm, state), enrolling.url)

        yield make


def refused(call: Any, status: int, code: str) -> None:
    with pytest.raises(EnrollmentRefused) as caught:
        call()
    assert (caught.value.status, caught.value.code) == (status, code), caught.value.detail


def status_of(service: RunningService, truck: str) -> dict[str, Any]:
    with service.client() as client:
        response = client.get(f"/v1/trucks/{truck}/attestation", headers=service.admin())
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def raw_attest(truck: Truck, **changes: Any) -> httpx.Response:
    """One attestation by hand, so a test can change exactly one field of what the truck sends."""
    nonce = truck.client.attestation_nonce(truck.id)
    quote_info, signature = truck.tpm.quote(truck.state.ak, nonce.extra_data, "sha256", nonce.pcrs)
    values = truck.tpm.pcr_read("sha256", nonce.pcrs)
    body: dict[str, Any] = {
        "nonce_id": nonce.id,
        "quote": b64(quote_info),
        "signature": b64(signature),
        "pcr_values": {str(p): b64(v) for p, v in values.items()},
        "event_log": b64(truck.boot.log),
    }
    body.update(changes)
    path = f"/v1/trucks/{truck.id}/attestations"
    with httpx.Client(base_url=truck.url) as client:
        return client.post(path, json=body, headers=truck.client.truck_authorization("POST", path))


# -- the path that works ---------------------------------------------------------------------------


def test_booted_truck_attests_and_the_token_verifies_against_the_jwks(
    enrolling: RunningService, fleet: Fleet, golden: str
) -> None:
    truck = fleet()
    result = attest(truck.tpm, truck.client, truck.state, event_log=truck.boot.log)
    assert result.status == "affirming" and result.release == "2026.11.1"
    with enrolling.client() as client:
        jwks = client.get("/v1/jwks").json()
    header = jwt.get_unverified_header(result.token)
    key = next(jwt.PyJWK(k) for k in jwks["keys"] if k["kid"] == header["kid"])
    claims = jwt.decode(result.token, key.key, algorithms=["ES256"], issuer=enrolling.url)
    assert claims["submods"]["truck"]["ear.status"] == "affirming"
    assert claims["weighstation"]["release"] == {"id": golden, "version": "2026.11.1"}
    assert claims["sub"].endswith(f"/truck/{truck.id}") and claims["exp"] > claims["iat"]
    status = status_of(enrolling, truck.id)
    assert status["status"] == "affirming" and status["attested_until"] and not status["quarantined"]
    assert status["release_id"] == golden


def test_tender_bound_quote(fleet: Fleet) -> None:
    truck = fleet()
    result = attest(
        truck.tpm, truck.client, truck.state, event_log=truck.boot.log, purpose="dispatch", tender="T-42"
    )
    claims = jwt.decode(result.token, options={"verify_signature": False})
    assert claims["weighstation"]["tender"] == "T-42" and claims["weighstation"]["purpose"] == "dispatch"


def test_unknown_firmware_is_a_warning_not_a_pass(enrolling: RunningService, fleet: Fleet) -> None:
    # Enrolled on the approved release, then rebooted into a perception build nobody reviewed.
    truck = fleet(reboot_into=truck_boot(overrides={"perception": b"perception stack, unreviewed build"}))
    result = attest(truck.tpm, truck.client, truck.state, event_log=truck.boot.log)
    assert result.status == "warning" and result.release is None
    status = status_of(enrolling, truck.id)
    assert status["status"] == "warning" and status["release_id"] is None and not status["quarantined"]


# -- nonces ----------------------------------------------------------------------------------------


def test_nonce_is_single_use(fleet: Fleet) -> None:
    truck = fleet()
    nonce = truck.client.attestation_nonce(truck.id)
    quote_info, signature = truck.tpm.quote(truck.state.ak, nonce.extra_data, "sha256", nonce.pcrs)
    values = truck.tpm.pcr_read("sha256", nonce.pcrs)

    def send() -> object:
        return truck.client.attest(
            truck.id,
            nonce.id,
            quote_info=quote_info,
            signature=signature,
            pcr_values=values,
            event_log=truck.boot.log,
        )

    send()
    refused(send, 409, "attestation-nonce-used")


def _nonce_count(service: RunningService, truck: str) -> int:
    engine = create_engine(db(service))
    with engine.connect() as conn:
        count = conn.execute(
            text("SELECT count(*) FROM attestation_nonces WHERE truck_id = :t"), {"t": truck}
        ).scalar_one()
    engine.dispose()
    return int(count)


def test_one_request_jwt_sent_at_once_many_times_issues_one_nonce(
    enrolling: RunningService, fleet: Fleet
) -> None:
    """The guard only reads the jti; the nonce and the jti commit in one transaction, whose insert of
    the jti lets exactly one of the concurrent presentations through (on any replica)."""
    truck = fleet()
    path = f"/v1/trucks/{truck.id}/attestation-nonces"
    headers = truck.client.truck_authorization("POST", path)
    before = _nonce_count(enrolling, truck.id)
    barrier = threading.Barrier(6)

    def send(_: int) -> httpx.Response:
        with httpx.Client(base_url=truck.url, timeout=30) as client:
            barrier.wait()
            return client.post(path, json={"purpose": "attest"}, headers=headers)

    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(send, range(6)))
    codes = sorted(a.status_code for a in answers)
    assert codes == [201, 401, 401, 401, 401, 401], [a.text for a in answers]
    for answer in answers:
        if answer.status_code == 401:
            assert answer.json()["code"] == "invalid-token" and "already used" in answer.json()["detail"]
    assert _nonce_count(enrolling, truck.id) == before + 1


def test_requests_refused_before_the_use_case_still_spend_their_jti(fleet: Fleet) -> None:
    """A request JWT left unspent by the guard is spent when the request is refused anyway: by Cedar
    (another truck's route), by the body's validation, or by the use case."""
    truck, other = fleet(), fleet()
    with httpx.Client(base_url=truck.url) as client:

        def twice(path: str, body: dict[str, Any]) -> tuple[httpx.Response, httpx.Response]:
            headers = truck.client.truck_authorization("POST", path)
            return client.post(path, json=body, headers=headers), client.post(
                path, json=body, headers=headers
            )

        forbidden, again = twice(f"/v1/trucks/{other.id}/attestation-nonces", {"purpose": "attest"})
        assert (forbidden.status_code, forbidden.json()["code"]) == (403, "forbidden")
        assert again.status_code == 401 and "already used" in again.json()["detail"], again.text
        malformed, again = twice(f"/v1/trucks/{truck.id}/attestation-nonces", {"purpose": 7})
        assert malformed.status_code == 400, malformed.text
        assert again.status_code == 401 and "already used" in again.json()["detail"], again.text
        unknown, again = twice(
            f"/v1/trucks/{truck.id}/attestations",
            {
                "nonce_id": "no-such-nonce",
                "quote": b64(b"q"),
                "signature": b64(b"s"),
                "pcr_values": {"0": b64(bytes(32))},
                "event_log": b64(truck.boot.log),
            },
        )
        assert (unknown.status_code, unknown.json()["code"]) == (404, "unknown-attestation-nonce"), (
            unknown.text
        )
        assert again.status_code == 401 and "already used" in again.json()["detail"], again.text


def test_one_nonce_answered_at_once_many_times_yields_one_result(fleet: Fleet) -> None:
    """Both attempts verify; the conditional claim written with the result lets only one commit."""
    truck = fleet()
    nonce = truck.client.attestation_nonce(truck.id)
    quote_info, signature = truck.tpm.quote(truck.state.ak, nonce.extra_data, "sha256", nonce.pcrs)
    values = truck.tpm.pcr_read("sha256", nonce.pcrs)
    path = f"/v1/trucks/{truck.id}/attestations"
    body = {
        "nonce_id": nonce.id,
        "quote": b64(quote_info),
        "signature": b64(signature),
        "pcr_values": {str(p): b64(v) for p, v in values.items()},
        "event_log": b64(truck.boot.log),
    }
    signed = [truck.client.truck_authorization("POST", path) for _ in range(4)]
    barrier = threading.Barrier(len(signed))

    def send(headers: dict[str, str]) -> httpx.Response:
        with httpx.Client(base_url=truck.url, timeout=30) as client:
            barrier.wait()
            return client.post(path, json=body, headers=headers)

    with ThreadPoolExecutor(len(signed)) as pool:
        answers = list(pool.map(send, signed))
    outcomes = sorted((a.status_code, a.json().get("code", "")) for a in answers)
    assert outcomes == [(201, "")] + [(409, "attestation-nonce-used")] * 3, [a.text for a in answers]


def test_a_refused_attestation_spends_its_nonce(fleet: Fleet) -> None:
    """The claim is written with the result, so a refused attempt marks the nonce used on its own: its
    evidence was seen, and the nonce is not answered twice."""
    truck = fleet()
    nonce = truck.client.attestation_nonce(truck.id)
    quote_info, signature = truck.tpm.quote(truck.state.ak, nonce.extra_data, "sha256", nonce.pcrs)
    values = truck.tpm.pcr_read("sha256", nonce.pcrs)

    def send(sig: bytes) -> object:
        return truck.client.attest(
            truck.id,
            nonce.id,
            quote_info=quote_info,
            signature=sig,
            pcr_values=values,
            event_log=truck.boot.log,
        )

    forged = bytearray(signature)
    forged[-1] ^= 1
    with pytest.raises(EnrollmentRefused) as caught:
        send(bytes(forged))
    assert (caught.value.status, caught.value.code) == (403, "bad-attest-signature"), caught.value.detail
    refused(lambda: send(signature), 409, "attestation-nonce-used")


def test_expired_nonce(enrolling: RunningService, fleet: Fleet) -> None:
    truck = fleet()
    nonce = truck.client.attestation_nonce(truck.id)
    engine = create_engine(db(enrolling))
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE attestation_nonces SET expires_at = :t WHERE id = :id"),
            {"t": datetime.now(UTC) - timedelta(seconds=1), "id": nonce.id},
        )
    engine.dispose()
    quote_info, signature = truck.tpm.quote(truck.state.ak, nonce.extra_data, "sha256", nonce.pcrs)
    values = truck.tpm.pcr_read("sha256", nonce.pcrs)
    refused(
        lambda: truck.client.attest(
            truck.id,
            nonce.id,
            quote_info=quote_info,
            signature=signature,
            pcr_values=values,
            event_log=truck.boot.log,
        ),
        410,
        "attestation-nonce-expired",
    )


def test_nonce_of_another_truck(fleet: Fleet) -> None:
    mine, other = fleet(), fleet()
    nonce = other.client.attestation_nonce(other.id)
    quote_info, signature = mine.tpm.quote(mine.state.ak, nonce.extra_data, "sha256", nonce.pcrs)
    values = mine.tpm.pcr_read("sha256", nonce.pcrs)
    refused(
        lambda: mine.client.attest(
            mine.id,
            nonce.id,
            quote_info=quote_info,
            signature=signature,
            pcr_values=values,
            event_log=mine.boot.log,
        ),
        403,
        "attestation-nonce-wrong-truck",
    )


# -- the quote -------------------------------------------------------------------------------------


def test_quote_by_the_ak_of_another_truck(enrolling: RunningService, fleet: Fleet) -> None:
    mine, other = fleet(), fleet()
    nonce = mine.client.attestation_nonce(mine.id)
    quote_info, signature = other.tpm.quote(other.state.ak, nonce.extra_data, "sha256", nonce.pcrs)
    values = other.tpm.pcr_read("sha256", nonce.pcrs)
    refused(
        lambda: mine.client.attest(
            mine.id,
            nonce.id,
            quote_info=quote_info,
            signature=signature,
            pcr_values=values,
            event_log=other.boot.log,
        ),
        403,
        "bad-attest-signature",
    )
    # Anyone can send a bad signature: it says nothing about the truck, which is not quarantined.
    assert not status_of(enrolling, mine.id)["quarantined"]


def test_selection_differing_from_the_request_quarantines(enrolling: RunningService, fleet: Fleet) -> None:
    truck = fleet()
    nonce = truck.client.attestation_nonce(truck.id)
    fewer = nonce.pcrs[:-1]
    quote_info, signature = truck.tpm.quote(truck.state.ak, nonce.extra_data, "sha256", fewer)
    values = truck.tpm.pcr_read("sha256", fewer)
    refused(
        lambda: truck.client.attest(
            truck.id,
            nonce.id,
            quote_info=quote_info,
            signature=signature,
            pcr_values=values,
            event_log=truck.boot.log,
        ),
        403,
        "pcr-selection-mismatch",
    )
    status = status_of(enrolling, truck.id)
    assert status["quarantined"] and status["quarantine_reason"].startswith("pcr-selection-mismatch")
    assert status["attested_until"] is None
    rows = audit_rows(db(enrolling), "truck.quarantine")
    assert rows[-1]["target"] == truck.id and rows[-1]["code"] == "pcr-selection-mismatch"
    # A passing attestation does not lift it (the default setting); the operator does, audited.
    result = attest(truck.tpm, truck.client, truck.state, event_log=truck.boot.log)
    assert result.status == "affirming" and status_of(enrolling, truck.id)["quarantined"]
    with enrolling.client() as client:
        lifted = client.post(
            f"/v1/trucks/{truck.id}/quarantine/lift",
            json={"reason": "agent bug fixed"},
            headers=enrolling.admin(),
        )
    assert lifted.status_code == 200 and not lifted.json()["quarantined"]


@pytest.mark.parametrize(
    ("change", "code"),
    [("extra", "pcr-values-mismatch"), ("missing", "pcr-values-mismatch"), ("wrong", "pcr-digest-mismatch")],
)
def test_supplied_pcr_values_must_be_the_quoted_ones(fleet: Fleet, change: str, code: str) -> None:
    truck = fleet()
    nonce = truck.client.attestation_nonce(truck.id)
    quote_info, signature = truck.tpm.quote(truck.state.ak, nonce.extra_data, "sha256", nonce.pcrs)
    values = dict(truck.tpm.pcr_read("sha256", nonce.pcrs))
    if change == "extra":
        values[16] = bytes(32)
    elif change == "missing":
        del values[15]
    else:
        values[15] = bytes(32)
    status = 422 if code == "pcr-values-mismatch" else 403
    refused(
        lambda: truck.client.attest(
            truck.id,
            nonce.id,
            quote_info=quote_info,
            signature=signature,
            pcr_values=values,
            event_log=truck.boot.log,
        ),
        status,
        code,
    )


def test_certify_passed_off_as_a_quote(fleet: Fleet) -> None:
    truck = fleet()
    nonce = truck.client.attestation_nonce(truck.id)
    identity = truck.tpm.create_identity_key("ecc")
    certify_info, signature = truck.tpm.certify(identity, truck.state.ak, nonce.extra_data)
    values = truck.tpm.pcr_read("sha256", nonce.pcrs)
    refused(
        lambda: truck.client.attest(
            truck.id,
            nonce.id,
            quote_info=certify_info,
            signature=signature,
            pcr_values=values,
            event_log=truck.boot.log,
        ),
        422,
        "wrong-attest-type",
    )


def test_clock_going_backwards(fleet: Fleet) -> None:
    truck = fleet()
    first = truck.client.attestation_nonce(truck.id)
    older = truck.tpm.quote(truck.state.ak, first.extra_data, "sha256", first.pcrs)
    second = truck.client.attestation_nonce(truck.id)
    newer = truck.tpm.quote(truck.state.ak, second.extra_data, "sha256", second.pcrs)
    values = truck.tpm.pcr_read("sha256", first.pcrs)
    truck.client.attest(
        truck.id,
        second.id,
        quote_info=newer[0],
        signature=newer[1],
        pcr_values=values,
        event_log=truck.boot.log,
    )
    refused(
        lambda: truck.client.attest(
            truck.id,
            first.id,
            quote_info=older[0],
            signature=older[1],
            pcr_values=values,
            event_log=truck.boot.log,
        ),
        403,
        "clock-went-backwards",
    )


# -- the event log ---------------------------------------------------------------------------------


def _records(log: bytes) -> tuple[bytes, list[tuple[Event, bytes]]]:
    """The log as (Spec ID header, [(event, its record bytes)]), to cut or reorder whole records."""
    parsed = parse_event_log(log)
    ends = [e.offset for e in parsed.events[1:]] + [len(log)]
    records = [(e, log[e.offset : end]) for e, end in zip(parsed.events, ends, strict=True)]
    return log[: parsed.events[0].offset], records


def _without_pcr(log: bytes, pcr: int) -> bytes:
    header, records = _records(log)
    return header + b"".join(record for event, record in records if event.pcr != pcr)


@pytest.mark.parametrize(
    ("variant", "code"),
    [
        ("truncated", "malformed-event-log"),
        ("trailing", "malformed-event-log"),
        ("no-pcr-15", "pcr-without-events"),
    ],
)
def test_bad_event_logs_quarantine(enrolling: RunningService, fleet: Fleet, variant: str, code: str) -> None:
    truck = fleet()
    log = truck.boot.log
    bad = {"truncated": log[:-7], "trailing": log + b"\x00\x01", "no-pcr-15": _without_pcr(log, 15)}[variant]
    response = raw_attest(truck, event_log=b64(bad))
    assert response.status_code == 422, response.text
    assert response.json()["code"] == code
    status = status_of(enrolling, truck.id)
    assert status["quarantined"] and status["quarantine_reason"].startswith(code)


def test_reordered_event_log_does_not_replay(fleet: Fleet) -> None:
    truck = fleet()
    header, records = _records(truck.boot.log)
    # Two measured events of PCR 4 swapped: the same digests in another order give another value.
    first, second = [i for i, (e, _) in enumerate(records) if e.pcr == 4 and e.extended][:2]
    records[first], records[second] = records[second], records[first]
    swapped = header + b"".join(record for _, record in records)
    response = raw_attest(truck, event_log=b64(swapped))
    assert (response.status_code, response.json()["code"]) == (403, "event-log-replay-mismatch")


# -- releases --------------------------------------------------------------------------------------


def test_revoked_release_quarantines_at_the_next_attestation(enrolling: RunningService, fleet: Fleet) -> None:
    # A release of its own, so revoking it leaves the module's golden release alone.
    boot = truck_boot(release="2026.10.0")
    signer = ReleaseSigner()
    with enrolling.client() as client:
        operator = Operator(enrolling, client)
        key = operator.post(
            "/v1/release-keys", {"name": "old team", "public_key_pem": signer.public_pem}
        ).json()["id"]
        manifest = signer.manifest(MODEL, "2026.10.0", boot.expected_pcrs())
        release = operator.post("/v1/releases", {"key_id": key, "manifest": manifest}).json()["id"]
        truck = fleet(boot)
        assert attest(truck.tpm, truck.client, truck.state, event_log=truck.boot.log).release == "2026.10.0"
        revoked = operator.post(f"/v1/releases/{release}/revoke", {"reason": "bootloader CVE"})
        assert revoked.status_code == 200
    refused(
        lambda: attest(truck.tpm, truck.client, truck.state, event_log=truck.boot.log), 403, "release-revoked"
    )
    status = status_of(enrolling, truck.id)
    assert status["quarantined"] and "revoked release 2026.10.0" in status["quarantine_reason"]
    assert status["attested_until"] is None


def test_a_revoked_release_key_bites_at_the_next_attestation(enrolling: RunningService, fleet: Fleet) -> None:
    """The releases a truck is appraised against, and whether they or their signing key are revoked,
    are read on every attestation: nothing cached answers for them."""
    boot = truck_boot(release="2026.09.0")
    signer = ReleaseSigner()
    with enrolling.client() as client:
        operator = Operator(enrolling, client)
        key = operator.post(
            "/v1/release-keys", {"name": "departed team", "public_key_pem": signer.public_pem}
        ).json()["id"]
        manifest = signer.manifest(MODEL, "2026.09.0", boot.expected_pcrs())
        operator.post("/v1/releases", {"key_id": key, "manifest": manifest})
    truck = fleet(boot)
    assert attest(truck.tpm, truck.client, truck.state, event_log=truck.boot.log).release == "2026.09.0"
    engine = create_engine(db(enrolling))
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE release_keys SET revoked_at = :t WHERE id = :id"),
            {"t": datetime.now(UTC), "id": key},
        )
    engine.dispose()
    refused(
        lambda: attest(truck.tpm, truck.client, truck.state, event_log=truck.boot.log), 403, "release-revoked"
    )
    assert status_of(enrolling, truck.id)["quarantined"]


# -- attested renewal ------------------------------------------------------------------------------


def test_renewal_needs_a_recent_affirming_attestation_and_the_enrolled_key(
    enrolling: RunningService, fleet: Fleet
) -> None:
    truck = fleet()
    csr = identity_csr(truck.tpm, truck.state, truck.id)
    attest(truck.tpm, truck.client, truck.state, event_log=truck.boot.log, purpose="renew")
    # Another key, even after a good attestation: a new key needs a new enrollment.
    _, foreign = make_csr(uris=[f"spiffe://fleet.test/fleet/x/truck/{truck.id}"])
    refused(lambda: truck.client.renew(truck.id, foreign), 403, "renewal-key-mismatch")
    renewed = truck.client.renew(truck.id, csr)
    assert renewed.spiffe_id.endswith(f"/truck/{truck.id}")
    assert status_of(enrolling, truck.id)["status"] == "affirming"
    rows = audit_rows(db(enrolling), "truck.renew")
    assert rows[-1]["outcome"] == "ok" and rows[-1]["target"] == truck.id


def test_renewal_after_a_warning_needs_an_affirming_attestation(fleet: Fleet) -> None:
    # The enrollment's first quote affirmed; the last attestation, after a reboot into firmware no
    # release approves, is only a warning: no renewal on it.
    truck = fleet(reboot_into=truck_boot(overrides={"kernel": b"kernel, local build"}))
    assert attest(truck.tpm, truck.client, truck.state, event_log=truck.boot.log).status == "warning"
    csr = identity_csr(truck.tpm, truck.state, truck.id)
    refused(lambda: truck.client.renew(truck.id, csr), 403, "attestation-required")


def test_quarantined_truck_cannot_renew(fleet: Fleet) -> None:
    truck = fleet()
    attest(truck.tpm, truck.client, truck.state, event_log=truck.boot.log)
    raw_attest(truck, event_log=b64(truck.boot.log + b"\x00"))  # trailing garbage: quarantined
    csr = identity_csr(truck.tpm, truck.state, truck.id)
    # The route's Cedar guard refuses first, naming the safety policy; the use case would say
    # `truck-quarantined`.
    with pytest.raises(EnrollmentRefused) as caught:
        truck.client.renew(truck.id, csr)
    assert (caught.value.status, caught.value.code) == (403, "forbidden")
    assert "forbid-renewal-quarantined" in caught.value.detail


# -- one field of the signed quote or of the log, rewritten ----------------------------------------


def test_quote_with_a_wrong_magic(fleet: Fleet) -> None:
    truck = fleet()
    nonce = truck.client.attestation_nonce(truck.id)
    quote_info, signature = truck.tpm.quote(truck.state.ak, nonce.extra_data, "sha256", nonce.pcrs)
    values = truck.tpm.pcr_read("sha256", nonce.pcrs)
    forged = b"\xff\x54\x43\x48" + quote_info[4:]  # TPM_GENERATED_VALUE is 0xff544347
    refused(
        lambda: truck.client.attest(
            truck.id,
            nonce.id,
            quote_info=forged,
            signature=signature,
            pcr_values=values,
            event_log=truck.boot.log,
        ),
        422,
        "not-tpm-generated",
    )


def test_event_type_rewritten_in_the_log(enrolling: RunningService, fleet: Fleet) -> None:
    """A separator relabelled EV_NO_ACTION (which is never extended) would hide a measurement: the
    parser refuses an EV_NO_ACTION with a non-zero digest; event types never drive the replay."""
    truck = fleet()
    header, records = _records(truck.boot.log)
    index, (event, _) = next((i, r) for i, r in enumerate(records) if r[0].type == EventType.EV_SEPARATOR)
    records[index] = (event, encode_event(event.pcr, EventType.EV_NO_ACTION, event.digests, event.data))
    response = raw_attest(truck, event_log=b64(header + b"".join(r for _, r in records)))
    assert (response.status_code, response.json()["code"]) == (422, "malformed-event-log")
    rows = [r for r in audit_rows(db(enrolling), "attestation.verify") if r["target"] == truck.id]
    assert rows[-1]["outcome"] == "refused" and rows[-1]["code"] == "malformed-event-log"


# -- the decision API: brokers ask before dispatch -------------------------------------------------


def logged_events(service: RunningService, truck: str, *, want: set[str]) -> list[dict[str, Any]]:
    """The log's entries about `truck`, read over the public API once the sequencer has logged `want`."""
    deadline = time.monotonic() + 15
    with service.client() as client:
        while True:
            size = int(client.get("/v1/log/checkpoint").text.splitlines()[1])
            entries = [client.get(f"/v1/log/entries/{i}").json() for i in range(size)]
            documents = [json.loads(base64.b64decode(e["entry"])) for e in entries]
            mine = [d for d in documents if d.get("truck") == truck]
            if want <= {d["kind"] for d in mine} or time.monotonic() > deadline:
                return mine
            time.sleep(0.2)


def _broker(service: RunningService, fleets: list[str], scopes: tuple[str, ...] = ("decisions",)) -> str:
    """Register a broker contracting with `fleets` and return its access token."""
    with service.client() as client:
        registered = client.post(
            "/v1/clients",
            json={
                "name": "broker",
                "kind": "broker",
                "organisation": "acme",
                "fleets": fleets,
                "scopes": list(scopes),
            },
            headers=service.admin(),
        ).json()
        issued = client.post(
            "/v1/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=httpx.BasicAuth(registered["client_id"], registered["client_secret"]),
        )
    assert issued.status_code == 200, issued.text
    access: str = issued.json()["access_token"]
    return access


def _decide(service: RunningService, access: str, path: str, body: dict[str, Any]) -> httpx.Response:
    with service.client() as client:
        return client.post(path, json=body, headers={"Authorization": f"Bearer {access}"})


def test_brokers_dispatch_only_attested_trucks_of_their_fleets(
    enrolling: RunningService, fleet: Fleet
) -> None:
    # `unreviewed` enrolled on the approved release, then rebooted into a build no release approves.
    truck, unreviewed = (
        fleet(),
        fleet(reboot_into=truck_boot(overrides={"planning": b"planner, local build"})),
    )
    with enrolling.client() as client:
        fleets = sorted(Operator(enrolling, client).truck_state(t.id)["fleet"] for t in (truck, unreviewed))
    attest(truck.tpm, truck.client, truck.state, event_log=truck.boot.log)
    attest(unreviewed.tpm, unreviewed.client, unreviewed.state, event_log=unreviewed.boot.log)
    contracted = _broker(enrolling, fleets)
    stranger = _broker(enrolling, [])

    allowed = _decide(enrolling, contracted, "/v1/decisions", {"action": "dispatch", "truck": truck.id})
    assert allowed.status_code == 200, allowed.text
    body = allowed.json()
    assert body["decision"] == "allow" and body["reasons"] == ["contracted-dispatch-attested-truck"]
    assert (
        body["evaluated"]["attestation_status"] == "affirming"
        and body["evaluated"]["certificate_status"] == "valid"
    )

    denied = _decide(enrolling, stranger, "/v1/decisions", {"action": "dispatch", "truck": truck.id}).json()
    assert denied["decision"] == "deny" and denied["reasons"] == []  # no contract: default deny

    hazmat = {"action": "tender.accept", "truck": truck.id, "tender": {"id": "T-9", "hazmat": True}}
    assert (
        "forbid-gate-hazmat-uncertified"
        in _decide(enrolling, contracted, "/v1/decisions", hazmat).json()["reasons"]
    )

    batch = _decide(
        enrolling,
        contracted,
        "/v1/decisions/batch",
        {"action": "dispatch", "trucks": [truck.id, unreviewed.id]},
    )
    decided = batch.json()
    assert [d["decision"] for d in decided] == ["allow", "deny"]
    assert "forbid-gate-not-affirming" in decided[1]["reasons"]  # its last attestation: a warning

    raw_attest(truck, event_log=b64(truck.boot.log + b"\x00"))  # its own evidence quarantines it
    after = _decide(enrolling, contracted, "/v1/decisions", {"action": "dispatch", "truck": truck.id}).json()
    assert after["decision"] == "deny" and "forbid-gate-quarantined" in after["reasons"]

    rows = [r for r in audit_rows(db(enrolling), "decision.dispatch") if r["target"] == truck.id]
    assert (
        len(rows) >= 3
        and '"allowed": true' in str(rows[0]["detail"])
        and '"allowed": false' in str(rows[-1]["detail"])
    )


def test_decisions_need_a_token_with_the_decisions_scope(enrolling: RunningService, fleet: Fleet) -> None:
    truck = fleet()
    body = {"action": "dispatch", "truck": truck.id}
    with enrolling.client() as client:
        anonymous = client.post("/v1/decisions", json=body)
        forged = client.post("/v1/decisions", json=body, headers={"Authorization": "Bearer e30.e30."})
    assert anonymous.status_code == 401 and forged.status_code == 401
    narrow = _broker(enrolling, [], scopes=("attestation:read",))
    assert _decide(enrolling, narrow, "/v1/decisions", body).status_code == 403


def test_operator_uploads_policies_and_an_invalid_set_changes_nothing(
    enrolling: RunningService, fleet: Fleet
) -> None:
    truck = fleet()
    with enrolling.client() as client:
        operator = Operator(enrolling, client)
        shipped = operator.get("/v1/policies").json()
        assert shipped["uploaded_by"] is None and "contracted-dispatch-attested-truck" in shipped["text"]
        fleet_id = operator.truck_state(truck.id)["fleet"]

        broken = (
            shipped["text"]
            + '\n@id("bad") permit (principal, action, resource) when { resource.no_such_attr };\n'
        )
        refused_upload = operator.post("/v1/policies", {"text": broken})
        assert (refused_upload.status_code, refused_upload.json()["code"]) == (422, "policy-set-invalid")
        assert operator.get("/v1/policies").json()["version"] == shipped["version"]

        grounded = (
            f'\n@id("forbid-grounded-truck")\nforbid (principal, action, resource == Truck::"{truck.id}");\n'
        )
        uploaded = operator.post("/v1/policies", {"text": shipped["text"] + grounded})
        assert uploaded.status_code == 201, uploaded.text
        assert uploaded.json()["version"] != shipped["version"]
        assert operator.get("/v1/policies").json()["version"] == uploaded.json()["version"]
    broker = _broker(enrolling, [fleet_id])
    decided = _decide(enrolling, broker, "/v1/decisions", {"action": "dispatch", "truck": truck.id}).json()
    assert decided["decision"] == "deny" and "forbid-grounded-truck" in decided["reasons"]
    assert decided["policy_version"] == uploaded.json()["version"]
    rows = audit_rows(db(enrolling))
    assert any(r["action"] == "policy.upload" and r["outcome"] == "ok" for r in rows)
    assert any(r["code"] == "policy-set-invalid" and r["outcome"] == "refused" for r in rows)
    # Put the shipped set back for the other tests of this module.
    with enrolling.client() as client:
        assert Operator(enrolling, client).post("/v1/policies", {"text": shipped["text"]}).status_code == 201
