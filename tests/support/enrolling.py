"""Both sides of enrollment over HTTP for tests: the operator (fleets, trucks, tokens, the golden release
of the default boot) and a truck driving its real swtpm step by step, so a negative test can change
exactly one thing it sends. Where the challenge asks for a first quote, the truck boots its TPM (the
default measured boot, once per TPM) and quotes over the challenge's quote nonce."""

from __future__ import annotations

import base64
import secrets
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from agent.boot import MeasuredBoot, TruckBoot, measure_boot, truck_boot
from agent.client import EnrollmentClient
from agent.enroll import enroll
from agent.state import AgentState, EkKind, KeyBlob
from agent.tpm import PcrBank, TruckTpm
from tests.support.releases import ReleaseSigner
from tests.support.service import RunningService, ws

_VIN_ALPHABET = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"
MODEL = "hauler-9"  # the model Operator.truck registers, and truck_boot's default


def booted(tpm: TruckTpm) -> bytes:
    """The event log of the default measured boot of `tpm`, booting it first if its PCRs are still
    unextended (the boot is deterministic, so its log is the same whoever measured it)."""
    boot = truck_boot()
    if tpm.pcr_read("sha256", [0])[0] == bytes(32):
        return measure_boot(tpm, boot).log
    return boot.event_log(("sha256",))


@dataclass(frozen=True)
class EnrolledTpm:
    tpm: TruckTpm
    state: AgentState
    measured: MeasuredBoot  # the boot its PCRs hold, with its event log


def boot_and_enroll(
    stack: ExitStack,
    tcti: str,
    client: EnrollmentClient,
    token: str,
    truck: str,
    state_dir: Path,
    boot: TruckBoot | None = None,
) -> EnrolledTpm:
    """Open the truck's swtpm (closed with `stack`), boot it (the golden default unless `boot` is given)
    and enroll it with an ECC EK, the enrollment's first quote covering that boot."""
    tpm = TruckTpm.open(tcti)
    stack.callback(tpm.close)
    measured = measure_boot(tpm, boot or truck_boot())
    state = enroll(
        tpm,
        client,
        token,
        ek_kind="ecc",
        truck=truck,
        ek_intermediates=[],
        state_dir=state_dir,
        event_log=measured.log,
    )
    return EnrolledTpm(tpm, state, measured)


def cli_boot_and_enroll(tcti: str, server: list[str], token: str, boot_dir: Path) -> list[str]:
    """The truck's own command line: `agent boot` (its state in `boot_dir`), then `agent enroll` with that
    boot's event log, the token on stdin; returns the `--event-log` arguments for later agent calls."""
    booted = ws("agent", "boot", "--tpm", tcti, "--state", str(boot_dir))
    assert booted.returncode == 0, booted.stderr
    event_log = ["--event-log", str(boot_dir / "eventlog.bin")]
    enrolled = ws("agent", "enroll", *server, *event_log, "--token", "-", stdin=token + "\n")
    assert enrolled.returncode == 0, enrolled.stderr
    return event_log


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def new_vin() -> str:
    return "".join(secrets.choice(_VIN_ALPHABET) for _ in range(17))


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


@dataclass
class Operator:
    service: RunningService
    client: httpx.Client

    def post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        return self.client.post(path, json=body, headers=self.service.admin())

    def get(self, path: str) -> httpx.Response:
        return self.client.get(path, headers=self.service.admin())

    def fleet(self) -> str:
        fleet = new_id("fleet")
        response = self.post("/v1/fleets", {"id": fleet, "name": f"Fleet {fleet}"})
        assert response.status_code == 201, response.text
        return fleet

    def truck(self, fleet: str | None = None, *, ek_sha256: str | None = None) -> str:
        truck = new_id("truck")
        body: dict[str, Any] = {"id": truck, "vin": new_vin(), "model": MODEL}
        if ek_sha256 is not None:
            body["ek_sha256"] = ek_sha256
        response = self.post(f"/v1/fleets/{fleet or self.fleet()}/trucks", body)
        assert response.status_code == 201, response.text
        return truck

    def token(self, truck: str) -> str:
        response = self.post(f"/v1/trucks/{truck}/enrollment-tokens", {})
        assert response.status_code == 201, response.text
        token: str = response.json()["token"]
        return token

    def golden_release(self, version: str = "2026.11.1", boot: TruckBoot | None = None) -> str:
        """Register a release key and the signed release of `boot` (default: the default boot of MODEL)
        as `version` of MODEL; its id. A service holds one release per model and version, so an active
        one of this version with the same PCRs (another test's, on a shared service) is reused."""
        expected = (boot or truck_boot()).expected_pcrs()
        listed = self.get(f"/v1/releases?model={MODEL}")
        assert listed.status_code == 200, listed.text
        for release in listed.json():
            if release["version"] == version and release["status"] == "active":
                assert release["pcrs"] == {str(p): v.hex() for p, v in expected.items()}, release
                found: str = release["id"]
                return found
        signer = ReleaseSigner()
        key = self.post(
            "/v1/release-keys", {"name": f"release team {version}", "public_key_pem": signer.public_pem}
        )
        assert key.status_code == 201, key.text
        manifest = signer.manifest(MODEL, version, expected)
        created = self.post("/v1/releases", {"key_id": key.json()["id"], "manifest": manifest})
        assert created.status_code == 201, created.text
        release_id: str = created.json()["id"]
        return release_id

    def truck_state(self, truck: str) -> dict[str, Any]:
        response = self.get(f"/v1/trucks/{truck}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


@dataclass
class TruckSide:
    """A truck's TPM (already open) with an AK made for this enrollment."""

    tpm: TruckTpm
    kind: EkKind
    ak: KeyBlob = field(init=False)

    def __post_init__(self) -> None:
        self.ak = self.tpm.create_attestation_key(self.kind)

    def start_body(self, **overrides: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "ek_certificate": b64(self.tpm.ek_certificate(self.kind)),
            "ek_public": b64(self.tpm.ek_public(self.kind)),
            "ak_public": b64(self.ak.public),
        }
        body.update(overrides)
        return body

    def start(self, client: httpx.Client, token: str, **overrides: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return client.post("/v1/enrollments", json=self.start_body(**overrides), headers=headers)

    def activated_secret(self, challenge: dict[str, Any]) -> bytes:
        return self.tpm.activate_credential(
            self.ak, self.kind, unb64(challenge["credential_blob"]), unb64(challenge["encrypted_secret"])
        )

    def answer(
        self,
        challenge: dict[str, Any],
        *,
        identity: KeyBlob | None = None,
        certify_with: KeyBlob | None = None,
        csr_key: ec.EllipticCurvePrivateKey | None = None,
        **overrides: Any,
    ) -> dict[str, Any]:
        """The activation body: secret, identity public area, its Certify over the nonce, and a CSR."""
        identity = identity or self.tpm.create_identity_key(self.kind)
        info, signature = self.tpm.certify(
            identity, certify_with or self.ak, unb64(challenge["certify_nonce"])
        )
        signer = csr_key or self.tpm.identity_signer(identity)
        csr = (
            x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(signer, hashes.SHA256())
        )
        body: dict[str, Any] = {
            "secret": b64(self.activated_secret(challenge)),
            "identity_public": b64(identity.public),
            "certify_info": b64(info),
            "certify_signature": b64(signature),
            "csr": csr.public_bytes(Encoding.PEM).decode(),
        }
        if challenge.get("quote_nonce") is not None:
            body |= self.first_quote(challenge)
        body.update(overrides)
        return body

    def first_quote(self, challenge: dict[str, Any], *, nonce: bytes | None = None) -> dict[str, Any]:
        """The first-quote fields: the AK's quote over the challenge's quote nonce (or `nonce`) of the PCRs
        it names, their values and the boot's event log (the TPM booted here on first use)."""
        event_log = booted(self.tpm)
        bank = next(b for b in get_args(PcrBank) if b == challenge["quote_bank"])
        pcrs = challenge["quote_pcrs"]
        info, signature = self.tpm.quote(self.ak, nonce or unb64(challenge["quote_nonce"]), bank, pcrs)
        values = self.tpm.pcr_read(bank, pcrs)
        return {
            "quote": b64(info),
            "quote_signature": b64(signature),
            "pcr_values": {str(p): b64(v) for p, v in values.items()},
            "event_log": b64(event_log),
        }

    def activate(
        self, client: httpx.Client, challenge: dict[str, Any], body: dict[str, Any]
    ) -> httpx.Response:
        return client.post(f"/v1/enrollments/{challenge['enrollment_id']}/activate", json=body)

    def enroll(self, client: httpx.Client, token: str) -> dict[str, Any]:
        started = self.start(client, token)
        assert started.status_code == 201, started.text
        challenge: dict[str, Any] = started.json()
        activated = self.activate(client, challenge, self.answer(challenge))
        assert activated.status_code == 201, activated.text
        result: dict[str, Any] = activated.json()
        return result
