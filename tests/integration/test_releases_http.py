"""Golden releases over HTTP: the operator registers a release key and signed manifests, lists and revokes
them; forged or duplicate manifests are refused with their codes and audited."""

from __future__ import annotations

import pytest

from tests.support.audit import audit_rows
from tests.support.enrolling import Operator, new_id
from tests.support.releases import ReleaseSigner
from tests.support.service import RunningService

pytestmark = pytest.mark.integration
PCRS = {i: bytes([i]) * 32 for i in range(16)}


def db(service: RunningService) -> str:
    return f"sqlite:///{service.data_dir / 'weighstation.db'}"


def register_key(operator: Operator, signer: ReleaseSigner) -> str:
    response = operator.post(
        "/v1/release-keys", {"name": "release team", "public_key_pem": signer.public_pem}
    )
    assert response.status_code == 201, response.text
    key_id: str = response.json()["id"]
    return key_id


def test_register_list_and_revoke_a_release(service: RunningService) -> None:
    signer = ReleaseSigner()
    model = new_id("model")
    with service.client() as client:
        operator = Operator(service, client)
        key_id = register_key(operator, signer)
        assert key_id in [k["id"] for k in operator.get("/v1/release-keys").json()]
        manifest = signer.manifest(model, "2026.11.1", PCRS)
        created = operator.post("/v1/releases", {"key_id": key_id, "manifest": manifest})
        assert created.status_code == 201, created.text
        release = created.json()
        assert (release["model"], release["version"], release["status"]) == (model, "2026.11.1", "active")
        assert release["pcrs"]["15"] == "0f" * 32
        listed = operator.get(f"/v1/releases?model={model}").json()
        assert [r["id"] for r in listed] == [release["id"]]

        again = operator.post(
            "/v1/releases", {"key_id": key_id, "manifest": signer.manifest(model, "2026.11.1", PCRS)}
        )
        assert (again.status_code, again.json()["code"]) == (409, "release-exists")

        revoked = operator.post(f"/v1/releases/{release['id']}/revoke", {"reason": "CVE in the bootloader"})
        assert revoked.status_code == 200, revoked.text
        assert (revoked.json()["status"], revoked.json()["revocation_reason"]) == (
            "revoked",
            "CVE in the bootloader",
        )
        assert operator.get(f"/v1/releases/{release['id']}").json()["status"] == "revoked"
    actions = {(r["action"], r["target"]) for r in audit_rows(db(service)) if r["outcome"] == "ok"}
    assert {("release.register", release["id"]), ("release.revoke", release["id"])} <= actions


def test_forged_and_unknown_manifests_are_refused(service: RunningService) -> None:
    signer, forger = ReleaseSigner(), ReleaseSigner()
    model = new_id("model")
    with service.client() as client:
        operator = Operator(service, client)
        key_id = register_key(operator, signer)
        forged = operator.post(
            "/v1/releases", {"key_id": key_id, "manifest": forger.manifest(model, "1.0", PCRS)}
        )
        assert (forged.status_code, forged.json()["code"]) == (403, "release-signature-invalid")
        unknown = operator.post(
            "/v1/releases", {"key_id": "nope", "manifest": signer.manifest(model, "1.0", PCRS)}
        )
        assert (unknown.status_code, unknown.json()["code"]) == (404, "unknown-release-key")
        bad = operator.post(
            "/v1/releases", {"key_id": key_id, "manifest": signer.manifest(model, "1.0", PCRS, extra=1)}
        )
        assert (bad.status_code, bad.json()["code"]) == (422, "release-manifest-invalid")
        not_a_key = operator.post(
            "/v1/release-keys", {"name": "x", "public_key_pem": "-----BEGIN PUBLIC KEY-----"}
        )
        assert (not_a_key.status_code, not_a_key.json()["code"]) == (422, "invalid-release-key")
        assert operator.get(f"/v1/releases?model={model}").json() == []
    refusals = [r for r in audit_rows(db(service)) if r["code"] == "release-signature-invalid"]
    assert refusals and refusals[-1]["outcome"] == "refused"


def test_release_calls_need_the_operator(service: RunningService) -> None:
    with service.client() as client:
        assert client.get("/v1/releases").status_code == 401
        assert client.post("/v1/release-keys", json={"name": "x", "public_key_pem": "y"}).status_code == 401
