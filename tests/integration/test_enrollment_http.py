"""Enrollment over HTTP against the real service, with real swtpm trucks.

The operator registers a fleet and a truck, the golden release of the default boot, and mints a token;
the truck's TPM answers the credential challenge, certifies its identity key, and quotes its (booted)
PCRs over the challenge's quote nonce; the authority issues a truck certificate that `openssl verify`
accepts, and the first quote is the truck's first attestation. Each refusal is a problem+json with its
stable code, is audited, and leaves nothing behind: no certificate, no binding, no attestation, and the
token is spent only when a challenge was issued.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from sqlalchemy import create_engine, text

from agent.boot import measure_boot, truck_boot
from agent.tpm import KeySpec, TruckTpm, public_key
from tests.support.audit import audit_rows, count_rows
from tests.support.enrolling import Operator, TruckSide, b64, new_id, new_vin, unb64
from tests.support.service import RunningService, running_service
from tests.support.swtpm import ManufacturerCa, RunningTpm, running_tpms

pytestmark = pytest.mark.integration
PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def enrolling(
    tmp_path_factory: pytest.TempPathFactory, manufacturer: ManufacturerCa
) -> Iterator[RunningService]:
    """A service of this module's own (its audit and log rows are counted), the manufacturer's root and
    intermediate pinned; it asks for a first quote at every enrollment, as by default."""
    env = {
        "WEIGHSTATION_TPM_MANUFACTURER_ROOTS": str(manufacturer.root_pem),
        "WEIGHSTATION_TPM_MANUFACTURER_INTERMEDIATES": str(manufacturer.intermediate_pem),
    }
    with running_service(tmp_path_factory.mktemp("enroll") / "data", env) as running:
        yield running


@pytest.fixture(scope="module")
def golden(enrolling: RunningService) -> str:
    """The signed release of the default boot of the model Operator.truck registers."""
    with enrolling.client() as client:
        return Operator(enrolling, client).golden_release()


@pytest.fixture
def operator(enrolling: RunningService, golden: str) -> Iterator[Operator]:
    with enrolling.client() as client:
        yield Operator(enrolling, client)


@pytest.fixture
def fresh_tpms(tmp_path: Path, manufacturer: ManufacturerCa) -> Iterator[list[RunningTpm]]:
    """Two TPMs with EKs of their own (a completed enrollment binds its EK for good)."""
    with running_tpms(tmp_path / "fresh", manufacturer, 2, "ecc", distinct=True) as running:
        yield running


def db(service: RunningService) -> str:
    return f"sqlite:///{service.data_dir / 'weighstation.db'}"


def sql(service: RunningService, statement: str, **params: object) -> None:
    engine = create_engine(db(service))
    try:
        with engine.begin() as conn:
            conn.execute(text(statement), params)
    finally:
        engine.dispose()


def refused(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    assert body["detail"]
    return body


def assert_audited(service: RunningService, action: str, code: str, target: str | None) -> None:
    rows = [r for r in audit_rows(db(service), action) if r["code"] == code]
    assert rows, f"no audit row for {action} {code}"
    assert rows[-1]["outcome"] == "refused"
    if target is not None:
        assert rows[-1]["target"] == target


def assert_nothing_issued(operator: Operator, truck: str) -> None:
    state = operator.truck_state(truck)
    assert state["state"] == "registered"
    assert state["certificate_serial"] is None and state["ek_sha256"] is None
    attestation = operator.get(f"/v1/trucks/{truck}/attestation")
    assert attestation.status_code == 200, attestation.text
    assert attestation.json()["status"] is None  # no first attestation either


def openssl_verify(workdir: Path, bundle: bytes, leaf: str, chain: str) -> None:
    certs = x509.load_pem_x509_certificates(bundle)
    roots = [c for c in certs if c.issuer == c.subject]
    (workdir / "root.pem").write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in roots))
    (workdir / "chain.pem").write_text(chain)
    (workdir / "leaf.pem").write_text(leaf)
    result = subprocess.run(
        ["openssl", "verify", "-CAfile", "root.pem", "-untrusted", "chain.pem", "leaf.pem"],
        cwd=workdir,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0 and "leaf.pem: OK" in result.stdout, result.stdout + result.stderr


# -- the path that works ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["ecc", "rsa"])
def test_truck_enrolls_and_gets_a_verifiable_identity(
    kind: str, operator: Operator, tmp_path: Path, manufacturer: ManufacturerCa
) -> None:
    with (
        running_tpms(
            tmp_path / "tpms", manufacturer, 1, "ecc" if kind == "ecc" else "rsa", distinct=True
        ) as (running,),
        TruckTpm.open(running.tcti) as tpm,
    ):
        fleet = operator.fleet()
        truck = operator.truck(fleet)
        side = TruckSide(tpm, "ecc" if kind == "ecc" else "rsa")
        started = side.start(operator.client, operator.token(truck), truck=truck)
        assert started.status_code == 201, started.text
        challenge = started.json()
        assert challenge["truck"] == truck and len(unb64(challenge["certify_nonce"])) == 32
        identity = tpm.create_identity_key(side.kind)
        activated = side.activate(operator.client, challenge, side.answer(challenge, identity=identity))
        assert activated.status_code == 201, activated.text
        enrolled = activated.json()

    spiffe = f"spiffe://fleet.test/fleet/{fleet}/truck/{truck}"
    assert enrolled["spiffe_id"] == spiffe and enrolled["fleet"] == fleet
    leaf = x509.load_pem_x509_certificate(enrolled["certificate_pem"].encode())
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [spiffe]
    # The certificate is on the TPM-resident identity key, not on anything the CSR could have swapped in.
    assert leaf.public_key() == public_key(identity.public)
    bundle = operator.client.get("/v1/ca/bundle").content
    openssl_verify(tmp_path, bundle, enrolled["certificate_pem"], enrolled["chain_pem"])

    state = operator.truck_state(truck)
    assert state["state"] == "enrolled" and state["certificate_serial"] == enrolled["serial"]
    assert state["ek_sha256"] and state["ak_name"]
    actions = {(r["action"], r["target"]) for r in audit_rows(db(operator.service)) if r["outcome"] == "ok"}
    assert {("enrollment.start", truck), ("enrollment.activate", truck)} <= actions


def test_intermediates_may_come_from_the_request(operator: Operator, tpm: RunningTpm, tmp_path: Path) -> None:
    """A service that pins only the root still builds the chain from the intermediates the truck sends."""
    manufacturer_dir = Path(tpm.state.ca.dir)
    env = {"WEIGHSTATION_TPM_MANUFACTURER_ROOTS": str(manufacturer_dir / "root.pem")}
    with running_service(tmp_path / "root-only", env) as service, service.client() as client:
        root_only = Operator(service, client)
        truck = root_only.truck()
        intermediate = x509.load_pem_x509_certificate((manufacturer_dir / "intermediate.pem").read_bytes())
        with TruckTpm.open(tpm.tcti) as handle:
            side = TruckSide(handle, "ecc")
            without = side.start(client, root_only.token(truck))
            refused(without, 403, "ek-chain-untrusted")
            der = intermediate.public_bytes(serialization.Encoding.DER)
            started = side.start(client, root_only.token(truck), ek_intermediates=[b64(der)])
            assert started.status_code == 201, started.text


# -- the EK ------------------------------------------------------------------------------------------


def test_ek_from_an_untrusted_manufacturer_is_refused(operator: Operator, rogue_tpm: RunningTpm) -> None:
    truck = operator.truck()
    token = operator.token(truck)
    with TruckTpm.open(rogue_tpm.tcti) as tpm:
        side = TruckSide(tpm, "ecc")
        refused(side.start(operator.client, token), 403, "ek-chain-untrusted")
    assert_audited(operator.service, "enrollment.start", "ek-chain-untrusted", truck)
    assert_nothing_issued(operator, truck)


def test_ek_public_that_is_not_the_certified_key_is_refused(
    operator: Operator, fresh_tpms: list[RunningTpm]
) -> None:
    truck = operator.truck()
    with TruckTpm.open(fresh_tpms[0].tcti) as tpm, TruckTpm.open(fresh_tpms[1].tcti) as other:
        side = TruckSide(tpm, "ecc")
        response = side.start(operator.client, operator.token(truck), ek_public=b64(other.ek_public("ecc")))
    refused(response, 403, "ek-key-mismatch")
    assert_audited(operator.service, "enrollment.start", "ek-key-mismatch", truck)


def test_expired_ek_certificate_is_refused(
    operator: Operator, tpm: RunningTpm, manufacturer: ManufacturerCa
) -> None:
    """The same EK, certified by the trusted manufacturer, but by a certificate that has run out."""
    key = serialization.load_pem_private_key(manufacturer.intermediate_key.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey)
    issuer = x509.load_pem_x509_certificate(manufacturer.intermediate_pem.read_bytes())
    with TruckTpm.open(tpm.tcti) as handle:
        genuine = x509.load_der_x509_certificate(handle.ek_certificate("ecc"))
        now = datetime.now(UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(genuine.subject)
            .issuer_name(issuer.subject)
            .public_key(genuine.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=400))
            .not_valid_after(now - timedelta(days=1))
        )
        for extension in genuine.extensions:
            builder = builder.add_extension(extension.value, critical=extension.critical)
        expired = builder.sign(key, hashes.SHA256())
        truck = operator.truck()
        side = TruckSide(handle, "ecc")
        der = expired.public_bytes(serialization.Encoding.DER)
        response = side.start(operator.client, operator.token(truck), ek_certificate=b64(der))
    refused(response, 403, "ek-certificate-expired")
    assert_audited(operator.service, "enrollment.start", "ek-certificate-expired", truck)


# -- the AK and the identity key: real TPM keys with the wrong attributes ---------------------------

_RESTRICTED = 0x00010000  # TPMA_OBJECT.restricted


def _with_restricted(public: bytes) -> bytes:
    """Set restricted in a TPMT_PUBLIC (objectAttributes follow type and nameAlg): the TPM will not
    make a restricted sign+decrypt key, so this is how such an AK reaches the authority."""
    edited = bytearray(public)
    edited[4:8] = (int.from_bytes(public[4:8], "big") | _RESTRICTED).to_bytes(4, "big")
    return bytes(edited)


@pytest.mark.parametrize(
    ("spec", "edit", "code"),
    [
        (KeySpec(restricted=False), False, "ak-not-restricted"),
        (KeySpec(restricted=False, decrypt=True, scheme_pinned=False), False, "ak-not-restricted"),
        (KeySpec(restricted=False, decrypt=True, scheme_pinned=False), True, "ak-can-decrypt"),
        (KeySpec(algorithm="rsa-1024"), False, "ak-weak-key"),
        (KeySpec(name_alg="sha1"), False, "ak-weak-name-alg"),
        (KeySpec(fixed_tpm=False, fixed_parent=False), False, "ak-not-fixed-tpm"),
    ],
    ids=[
        "not-restricted",
        "sign-and-decrypt",
        "restricted-and-decrypt",
        "rsa-1024",
        "sha1-name",
        "not-fixed-tpm",
    ],
)
def test_unfit_attestation_keys_are_refused(
    operator: Operator, tpm: RunningTpm, spec: KeySpec, edit: bool, code: str
) -> None:
    truck = operator.truck()
    with TruckTpm.open(tpm.tcti) as handle:
        side = TruckSide(handle, "ecc")
        public = handle.create_key("ecc", spec).public
        response = side.start(
            operator.client,
            operator.token(truck),
            ak_public=b64(_with_restricted(public) if edit else public),
        )
    refused(response, 422, code)
    assert_audited(operator.service, "enrollment.start", code, truck)
    assert count_rows(db(operator.service), "enrollment_challenges") == len(
        [r for r in audit_rows(db(operator.service), "enrollment.start") if r["outcome"] == "ok"]
    )


def test_identity_key_that_can_leave_the_tpm_is_refused(operator: Operator, tpm: RunningTpm) -> None:
    truck = operator.truck()
    with TruckTpm.open(tpm.tcti) as handle:
        side = TruckSide(handle, "ecc")
        challenge = side.start(operator.client, operator.token(truck)).json()
        movable = handle.create_key(
            "ecc", replace(KeySpec.identity_key(), fixed_tpm=False, fixed_parent=False)
        )
        refused(
            side.activate(operator.client, challenge, side.answer(challenge, identity=movable)),
            422,
            "identity-key-not-fixed-tpm",
        )
    assert_audited(operator.service, "enrollment.activate", "identity-key-not-fixed-tpm", truck)
    assert_nothing_issued(operator, truck)


# -- malformed TPM structures ------------------------------------------------------------------------


@pytest.mark.parametrize(("field", "mutate"), [("ak_public", "truncate"), ("ek_public", "trail")])
def test_truncated_or_trailing_tpm_structures_are_refused_at_start(
    operator: Operator, tpm: RunningTpm, field: str, mutate: str
) -> None:
    truck = operator.truck()
    with TruckTpm.open(tpm.tcti) as handle:
        side = TruckSide(handle, "ecc")
        good = unb64(side.start_body()[field])
        bad = good[:-3] if mutate == "truncate" else good + b"\x00"
        response = side.start(operator.client, operator.token(truck), **{field: b64(bad)})
    refused(response, 422, "malformed-tpm-structure")
    assert_audited(operator.service, "enrollment.start", "malformed-tpm-structure", truck)


@pytest.mark.parametrize(("field", "mutate"), [("certify_info", "trail"), ("certify_signature", "truncate")])
def test_truncated_or_trailing_tpm_structures_are_refused_at_activation(
    operator: Operator, tpm: RunningTpm, field: str, mutate: str
) -> None:
    truck = operator.truck()
    with TruckTpm.open(tpm.tcti) as handle:
        side = TruckSide(handle, "ecc")
        challenge = side.start(operator.client, operator.token(truck)).json()
        body = side.answer(challenge)
        good = unb64(body[field])
        body[field] = b64(good[:-2] if mutate == "truncate" else good + b"\xff")
        refused(side.activate(operator.client, challenge, body), 422, "malformed-tpm-structure")
    assert_audited(operator.service, "enrollment.activate", "malformed-tpm-structure", truck)
    assert_nothing_issued(operator, truck)


# -- the credential challenge ------------------------------------------------------------------------


def test_wrong_activation_secret_is_refused_and_spends_the_challenge(
    operator: Operator, tpm: RunningTpm
) -> None:
    truck = operator.truck()
    with TruckTpm.open(tpm.tcti) as handle:
        side = TruckSide(handle, "ecc")
        challenge = side.start(operator.client, operator.token(truck)).json()
        body = side.answer(challenge)
        wrong = bytearray(unb64(body["secret"]))
        wrong[0] ^= 1
        refused(
            side.activate(operator.client, challenge, {**body, "secret": b64(bytes(wrong))}),
            403,
            "activation-secret-mismatch",
        )
        # The right answer afterwards is too late: a challenge is answered once.
        refused(side.activate(operator.client, challenge, body), 409, "enrollment-challenge-used")
    assert_audited(operator.service, "enrollment.activate", "activation-secret-mismatch", truck)
    assert_nothing_issued(operator, truck)


def test_activation_cannot_be_replayed(operator: Operator, fresh_tpms: list[RunningTpm]) -> None:
    truck = operator.truck()
    with TruckTpm.open(fresh_tpms[0].tcti) as handle:
        side = TruckSide(handle, "ecc")
        challenge = side.start(operator.client, operator.token(truck)).json()
        body = side.answer(challenge)
        assert side.activate(operator.client, challenge, body).status_code == 201
        refused(side.activate(operator.client, challenge, body), 409, "enrollment-challenge-used")
    assert_audited(operator.service, "enrollment.activate", "enrollment-challenge-used", None)
    assert count_rows(db(operator.service), "truck_enrollments") >= 1


def test_expired_challenge_is_refused(operator: Operator, tpm: RunningTpm) -> None:
    truck = operator.truck()
    with TruckTpm.open(tpm.tcti) as handle:
        side = TruckSide(handle, "ecc")
        challenge = side.start(operator.client, operator.token(truck)).json()
        body = side.answer(challenge)
        sql(
            operator.service,
            "UPDATE enrollment_challenges SET expires_at = :past WHERE id = :id",
            past=datetime.now(UTC) - timedelta(seconds=1),
            id=challenge["enrollment_id"],
        )
        refused(side.activate(operator.client, challenge, body), 410, "enrollment-challenge-expired")
    assert_audited(operator.service, "enrollment.activate", "enrollment-challenge-expired", None)
    assert_nothing_issued(operator, truck)


def test_unknown_enrollment_is_404(operator: Operator) -> None:
    body = {"secret": b64(b"x" * 32), "identity_public": b64(b"x"), "certify_info": b64(b"x")}
    body |= {"certify_signature": b64(b"x"), "csr": "-----BEGIN CERTIFICATE REQUEST-----"}
    refused(operator.client.post("/v1/enrollments/nope/activate", json=body), 404, "unknown-enrollment")


# -- the identity key's Certify ----------------------------------------------------------------------


def test_certify_signed_by_another_ak_is_refused(operator: Operator, tpm: RunningTpm) -> None:
    truck = operator.truck()
    with TruckTpm.open(tpm.tcti) as handle:
        side = TruckSide(handle, "ecc")
        challenge = side.start(operator.client, operator.token(truck)).json()
        other_ak = handle.create_attestation_key("ecc")
        body = side.answer(challenge, certify_with=other_ak)
        refused(side.activate(operator.client, challenge, body), 403, "bad-attest-signature")
    assert_audited(operator.service, "enrollment.activate", "bad-attest-signature", truck)
    assert_nothing_issued(operator, truck)


def test_csr_on_another_key_than_the_certified_one_is_refused(operator: Operator, tpm: RunningTpm) -> None:
    truck = operator.truck()
    with TruckTpm.open(tpm.tcti) as handle:
        side = TruckSide(handle, "ecc")
        challenge = side.start(operator.client, operator.token(truck)).json()
        body = side.answer(challenge, csr_key=ec.generate_private_key(ec.SECP256R1()))
        refused(side.activate(operator.client, challenge, body), 403, "csr-key-mismatch")
    assert_audited(operator.service, "enrollment.activate", "csr-key-mismatch", truck)
    assert_nothing_issued(operator, truck)


def test_certify_over_another_nonce_is_refused(operator: Operator, tpm: RunningTpm) -> None:
    truck = operator.truck()
    with TruckTpm.open(tpm.tcti) as handle:
        side = TruckSide(handle, "ecc")
        challenge = side.start(operator.client, operator.token(truck)).json()
        stale = {**challenge, "certify_nonce": b64(bytes(32))}
        body = side.answer(stale)
        refused(side.activate(operator.client, challenge, body), 403, "qualifying-data-mismatch")
    assert_nothing_issued(operator, truck)


# -- the enrollment token ----------------------------------------------------------------------------


def test_token_is_single_use(operator: Operator, tpm: RunningTpm) -> None:
    truck = operator.truck()
    token = operator.token(truck)
    with TruckTpm.open(tpm.tcti) as handle:
        side = TruckSide(handle, "ecc")
        assert side.start(operator.client, token).status_code == 201
        response = side.start(operator.client, token)
    body = refused(response, 401, "enrollment-token-used")
    assert response.headers["www-authenticate"] == "Bearer"
    assert body["status"] == 401
    assert_audited(operator.service, "enrollment.start", "enrollment-token-used", truck)


def test_expired_token_is_refused(operator: Operator, tpm: RunningTpm) -> None:
    truck = operator.truck()
    token = operator.token(truck)
    jti = jwt.decode(token, options={"verify_signature": False})["jti"]
    sql(
        operator.service,
        "UPDATE enrollment_tokens SET expires_at = :past WHERE jti = :jti",
        past=datetime.now(UTC),
        jti=jti,
    )
    with TruckTpm.open(tpm.tcti) as handle:
        refused(TruckSide(handle, "ecc").start(operator.client, token), 401, "enrollment-token-expired")
    assert_audited(operator.service, "enrollment.start", "enrollment-token-expired", truck)


def test_token_past_its_exp_claim_is_refused(operator: Operator, tpm: RunningTpm) -> None:
    """A token signed with the authority's own key whose exp has passed (the key is in the data dir)."""
    truck = operator.truck()
    key = (operator.service.data_dir / "secrets" / "enrollment-token-key").read_bytes()
    claims = jwt.decode(operator.token(truck), key, algorithms=["HS256"], options={"verify_aud": False})
    claims["exp"] = int(datetime.now(UTC).timestamp()) - 5
    stale = jwt.encode(claims, key, algorithm="HS256")
    with TruckTpm.open(tpm.tcti) as handle:
        refused(TruckSide(handle, "ecc").start(operator.client, stale), 401, "enrollment-token-expired")


@pytest.mark.parametrize("forgery", ["other-key", "alg-none", "garbage", "missing"])
def test_forged_tokens_are_refused(operator: Operator, tpm: RunningTpm, forgery: str) -> None:
    truck = operator.truck()
    claims = jwt.decode(operator.token(truck), options={"verify_signature": False})
    token = {
        "other-key": jwt.encode(claims, "k" * 64, algorithm="HS256"),
        "alg-none": jwt.encode(claims, "", algorithm="none"),
        "garbage": "not.a.jwt",
        "missing": "",
    }[forgery]
    with TruckTpm.open(tpm.tcti) as handle:
        refused(TruckSide(handle, "ecc").start(operator.client, token), 401, "enrollment-token-invalid")
    assert_nothing_issued(operator, truck)


def test_token_for_another_truck_is_refused(operator: Operator, tpm: RunningTpm) -> None:
    mine, other = operator.truck(), operator.truck()
    token = operator.token(other)
    with TruckTpm.open(tpm.tcti) as handle:
        response = TruckSide(handle, "ecc").start(operator.client, token, truck=mine)
    refused(response, 403, "enrollment-token-wrong-truck")
    assert_audited(operator.service, "enrollment.start", "enrollment-token-wrong-truck", other)
    # The refused attempt did not spend the token.
    assert operator.truck_state(other)["state"] == "registered"


def test_pinned_ek_must_match(operator: Operator, tpm: RunningTpm) -> None:
    truck = operator.truck(ek_sha256="ab" * 32)
    with TruckTpm.open(tpm.tcti) as handle:
        refused(
            TruckSide(handle, "ecc").start(operator.client, operator.token(truck)),
            403,
            "ek-not-registered-for-truck",
        )
    assert_audited(operator.service, "enrollment.start", "ek-not-registered-for-truck", truck)


# -- the binding -------------------------------------------------------------------------------------


def test_tpm_of_one_truck_cannot_enroll_another(operator: Operator, fresh_tpms: list[RunningTpm]) -> None:
    first, second = operator.truck(), operator.truck()
    with TruckTpm.open(fresh_tpms[0].tcti) as handle:
        TruckSide(handle, "ecc").enroll(operator.client, operator.token(first))
        response = TruckSide(handle, "ecc").start(operator.client, operator.token(second))
    refused(response, 403, "ek-bound-to-other-truck")
    assert_nothing_issued(operator, second)


def test_new_tpm_needs_an_approved_hardware_swap(operator: Operator, fresh_tpms: list[RunningTpm]) -> None:
    truck = operator.truck()
    with TruckTpm.open(fresh_tpms[0].tcti) as old, TruckTpm.open(fresh_tpms[1].tcti) as new:
        first = TruckSide(old, "ecc").enroll(operator.client, operator.token(truck))
        bound = operator.truck_state(truck)["ek_sha256"]
        # Re-enrolling on the same TPM (new AK and identity key) is fine.
        again = TruckSide(old, "ecc").enroll(operator.client, operator.token(truck))
        assert again["serial"] != first["serial"]
        # Another TPM is refused until the operator approves the swap ...
        refused(
            TruckSide(new, "ecc").start(operator.client, operator.token(truck)),
            409,
            "hardware-swap-not-approved",
        )
        assert operator.truck_state(truck)["ek_sha256"] == bound
        approval = operator.post(f"/v1/trucks/{truck}/hardware-swaps", {"reason": "TPM board replaced"})
        assert approval.status_code == 201, approval.text
        # ... and the approval is used once.
        swapped = TruckSide(new, "ecc").enroll(operator.client, operator.token(truck))
        assert swapped["spiffe_id"] == first["spiffe_id"]
        refused(
            TruckSide(old, "ecc").start(operator.client, operator.token(truck)),
            409,
            "hardware-swap-not-approved",
        )
    state = operator.truck_state(truck)
    assert state["ek_sha256"] != bound and state["certificate_serial"] == swapped["serial"]
    # The old TPM's certificates are revoked by the swap, and the CRL says so; the new one is valid.
    for serial in (first["serial"], again["serial"]):
        old_cert = operator.client.get(f"/v1/certificates/{serial}").json()
        assert (old_cert["status"], old_cert["revocation_reason"]) == ("revoked", "superseded")
    assert operator.client.get(f"/v1/certificates/{swapped['serial']}").json()["status"] == "valid"
    crl = x509.load_der_x509_crl(operator.client.get("/v1/ca/crl").content)
    listed = {format(entry.serial_number, "x") for entry in crl}
    assert {first["serial"], again["serial"]} <= listed and swapped["serial"] not in listed
    approvals = audit_rows(db(operator.service), "truck.hardware-swap.approve")
    assert approvals[-1]["target"] == truck and "TPM board replaced" in str(approvals[-1]["detail"])
    activation = audit_rows(db(operator.service), "enrollment.activate")[-1]
    assert activation["target"] == truck and "hardware_swap" in str(activation["detail"])


# -- operator calls ----------------------------------------------------------------------------------


def test_operator_calls_need_the_operator(enrolling: RunningService) -> None:
    with enrolling.client() as client:
        refused(client.post("/v1/fleets", json={"id": "f", "name": "F"}), 401, "unauthorized")
        refused(client.post("/v1/trucks/x/enrollment-tokens", json={}), 401, "unauthorized")


def test_registration_refusals(operator: Operator) -> None:
    fleet = operator.fleet()
    refused(operator.post("/v1/fleets", {"id": fleet, "name": "again"}), 409, "fleet-exists")
    truck = operator.truck(fleet)
    vin = operator.truck_state(truck)["vin"]
    refused(
        operator.post(f"/v1/fleets/{fleet}/trucks", {"id": "t-other", "vin": vin, "model": "m"}),
        409,
        "truck-exists",
    )
    refused(
        operator.post("/v1/fleets/nope/trucks", {"id": "t-x", "vin": "1HGBH41JXMN109186", "model": "m"}),
        404,
        "unknown-fleet",
    )
    refused(
        operator.post(f"/v1/fleets/{fleet}/trucks", {"id": "t-y", "vin": "IOQ", "model": "m"}),
        400,
        "invalid-request",
    )
    refused(operator.post("/v1/trucks/nope/enrollment-tokens", {}), 404, "unknown-truck")
    listed = operator.get(f"/v1/fleets/{fleet}/trucks").json()
    assert [t["id"] for t in listed] == [truck]


# -- the first quote ---------------------------------------------------------------------------------


def scalar(service: RunningService, statement: str, **params: object) -> object:
    engine = create_engine(db(service))
    try:
        with engine.connect() as conn:
            return conn.execute(text(statement), params).scalar()
    finally:
        engine.dispose()


def test_first_quote_is_the_trucks_first_attestation(
    operator: Operator, golden: str, fresh_tpms: list[RunningTpm]
) -> None:
    truck = operator.truck()
    with TruckTpm.open(fresh_tpms[0].tcti) as handle:
        side = TruckSide(handle, "ecc")
        challenge = side.start(operator.client, operator.token(truck)).json()
        assert len(unb64(challenge["quote_nonce"])) == 32
        assert unb64(challenge["quote_nonce"]) != unb64(challenge["certify_nonce"])
        assert (challenge["quote_bank"], challenge["quote_pcrs"]) == ("sha256", list(range(16)))
        activated = side.activate(operator.client, challenge, side.answer(challenge))
        assert activated.status_code == 201, activated.text
    status = operator.get(f"/v1/trucks/{truck}/attestation").json()
    assert status["status"] == "affirming" and status["release_id"] == golden
    assert status["attested_until"] and not status["quarantined"]
    (row,) = [r for r in audit_rows(db(operator.service), "enrollment.activate") if r["target"] == truck]
    assert row["outcome"] == "ok"
    # The quote nonce is spent with its challenge, and answered only there (purpose "enroll").
    nonce = challenge["enrollment_id"]
    assert (
        scalar(operator.service, "SELECT purpose FROM attestation_nonces WHERE id = :id", id=nonce)
        == "enroll"
    )
    assert scalar(operator.service, "SELECT consumed_at FROM attestation_nonces WHERE id = :id", id=nonce)
    assert (
        scalar(operator.service, "SELECT count(*) FROM attestation_results WHERE nonce_id = :id", id=nonce)
        == 1
    )


def refused_first_quote(
    operator: Operator,
    side: TruckSide,
    truck: str,
    change: Callable[[dict[str, Any]], dict[str, Any]],
    status: int,
    code: str,
) -> None:
    """Activate with the good answer changed by `change(challenge)`: refused with `code`, audited, nothing
    issued or attested, and the challenge spent (the good answer afterwards is too late)."""
    challenge = side.start(operator.client, operator.token(truck)).json()
    good = side.answer(challenge)
    refused(side.activate(operator.client, challenge, {**good, **change(challenge)}), status, code)
    refused(side.activate(operator.client, challenge, good), 409, "enrollment-challenge-used")
    assert_audited(operator.service, "enrollment.activate", code, truck)
    assert_nothing_issued(operator, truck)


def test_first_quote_over_another_nonce_is_refused(operator: Operator, tpm: RunningTpm) -> None:
    truck = operator.truck()
    with TruckTpm.open(tpm.tcti) as handle:
        side = TruckSide(handle, "ecc")
        # The Certify nonce is a nonce this authority issued too, but not the one the quote must carry.
        refused_first_quote(
            operator,
            side,
            truck,
            lambda challenge: side.first_quote(challenge, nonce=unb64(challenge["certify_nonce"])),
            403,
            "qualifying-data-mismatch",
        )


def test_first_quote_of_firmware_no_release_has_is_refused(
    operator: Operator, fresh_tpms: list[RunningTpm]
) -> None:
    # A truck that booted another kernel: its quote and log are genuine, its PCRs match no release.
    modified = truck_boot(overrides={"kernel": b"a kernel nobody released"})
    truck = operator.truck()
    with TruckTpm.open(fresh_tpms[0].tcti) as handle:
        log = measure_boot(handle, modified).log
        side = TruckSide(handle, "ecc")
        refused_first_quote(
            operator, side, truck, lambda _: {"event_log": b64(log)}, 403, "firmware-not-approved"
        )


def test_first_quote_with_a_pcr_value_changed_is_refused(operator: Operator, tpm: RunningTpm) -> None:
    truck = operator.truck()
    with TruckTpm.open(tpm.tcti) as handle:
        side = TruckSide(handle, "ecc")

        def change(challenge: dict[str, Any]) -> dict[str, Any]:
            values = side.first_quote(challenge)["pcr_values"]
            return {"pcr_values": {**values, "4": b64(bytes(32))}}

        refused_first_quote(operator, side, truck, change, 403, "pcr-digest-mismatch")


def test_activation_without_the_first_quote_is_refused(operator: Operator, tpm: RunningTpm) -> None:
    truck = operator.truck()
    with TruckTpm.open(tpm.tcti) as handle:
        side = TruckSide(handle, "ecc")
        challenge = side.start(operator.client, operator.token(truck)).json()
        body = side.answer(challenge)
        for field in ("quote", "quote_signature", "pcr_values", "event_log"):
            del body[field]
        refused(side.activate(operator.client, challenge, body), 422, "first-quote-required")
        refused(
            side.activate(operator.client, challenge, side.answer(challenge)),
            409,
            "enrollment-challenge-used",
        )
    assert_audited(operator.service, "enrollment.activate", "first-quote-required", truck)
    assert_nothing_issued(operator, truck)


def test_partial_first_quote_is_refused(operator: Operator, tpm: RunningTpm) -> None:
    truck = operator.truck()
    with TruckTpm.open(tpm.tcti) as handle:
        side = TruckSide(handle, "ecc")
        challenge = side.start(operator.client, operator.token(truck)).json()
        body = side.answer(challenge)
        del body["event_log"]
        refused(side.activate(operator.client, challenge, body), 422, "first-quote-required")
    assert_nothing_issued(operator, truck)


def test_model_without_a_release_is_refused(operator: Operator, tpm: RunningTpm) -> None:
    truck = new_id("truck")
    created = operator.post(
        f"/v1/fleets/{operator.fleet()}/trucks", {"id": truck, "vin": new_vin(), "model": "hauler-2"}
    )
    assert created.status_code == 201, created.text
    with TruckTpm.open(tpm.tcti) as handle:
        side = TruckSide(handle, "ecc")
        refused_first_quote(operator, side, truck, lambda _: {}, 409, "no-golden-release")


def test_first_quote_of_a_revoked_release_is_refused(
    operator: Operator, fresh_tpms: list[RunningTpm]
) -> None:
    recalled = truck_boot(overrides={"planning": b"a planner recalled after release"})
    release = operator.golden_release("2026.10.9", recalled)
    revoked = operator.post(f"/v1/releases/{release}/revoke", {"reason": "planner recall"})
    assert revoked.status_code == 200, revoked.text
    truck = operator.truck()
    with TruckTpm.open(fresh_tpms[0].tcti) as handle:
        log = measure_boot(handle, recalled).log
        side = TruckSide(handle, "ecc")
        refused_first_quote(operator, side, truck, lambda _: {"event_log": b64(log)}, 403, "release-revoked")


def test_model_without_a_release_enrolls_where_the_operator_allows_it(
    tmp_path: Path, manufacturer: ManufacturerCa, fresh_tpms: list[RunningTpm]
) -> None:
    env = {
        "WEIGHSTATION_TPM_MANUFACTURER_ROOTS": str(manufacturer.root_pem),
        "WEIGHSTATION_TPM_MANUFACTURER_INTERMEDIATES": str(manufacturer.intermediate_pem),
        "WEIGHSTATION_ENROLLMENT_REQUIRE_RELEASE": "false",
    }
    with running_service(tmp_path / "lenient", env) as service, service.client() as client:
        lenient = Operator(service, client)
        truck = lenient.truck()  # no release of its model is registered on this service
        with TruckTpm.open(fresh_tpms[0].tcti) as handle:
            TruckSide(handle, "ecc").enroll(client, lenient.token(truck))
        status = lenient.get(f"/v1/trucks/{truck}/attestation").json()
    # Enrolled, and attested as what it is: a verified quote of firmware no release vouches for.
    assert status["status"] == "warning" and status["release_id"] is None
    assert "no golden release of this model matches the quoted PCRs" in status["reasons"]
