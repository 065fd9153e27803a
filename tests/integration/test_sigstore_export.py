"""Sigstore export checked by the stock `sigstore` CLI, offline, against the ClientTrustConfig we export:
an evidence-signing certificate issued through the authority (precertificate, SCT from our CT key,
final certificate; the test holds the P-256 key), an artifact signed with it, exported as a bundle v0.3
whose hashedrekord 0.0.2 entry is a leaf of our log, stamped by our RFC 3161 TSA. The CLI prints OK on
it, and fails when any one field is altered."""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from pki.evidence_signing import issue_evidence_certificate
from pki.filekeys import FileKeyBackend
from pki.profiles import parse_csr, profile_for, validate_request
from pki.sct import CtLog
from pki.signer import KeyAlgorithm
from provision.audit import Actor
from provision.authority import Authority
from provision.config import AuthorityConfig
from provision.db import make_engine
from provision.migrate import upgrade_to_head
from provision.sigstore import EvidenceCertificateUnknown, EvidenceSignatureInvalid, Sigstore
from provision.tlog_store import TransparencyLog
from tests.support.csr import make_csr, truck_uri
from tests.support.postgres import scratch_database
from tests.support.service import running_service
from tlog.merkle import leaf_hash

ACTOR = Actor("test")
ISSUER = "http://127.0.0.1:1"
IDENTITY = truck_uri()
ARTIFACT = b'{"kind":"mission_manifest","truck":"t-001","sequence":1}'


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class World:
    authority: Authority
    log: TransparencyLog
    sigstore: Sigstore
    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate
    bundle: dict[str, Any]
    trust: dict[str, Any]
    workdir: Path


def issue_evidence(authority: Authority, key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    _, csr = make_csr(key, uris=[IDENTITY])
    view = asyncio.run(authority.issue_async(ACTOR, profile="evidence", csr=csr.encode()))
    return view.certificate


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("sigstore")
    engine = make_engine(f"sqlite:///{tmp / 'ws.db'}")
    upgrade_to_head(engine)
    keys = FileKeyBackend(tmp / "keys", b"secret")
    authority = Authority(engine, keys, AuthorityConfig(trust_domain="fleet.test", public_url=ISSUER))
    authority.cas.bootstrap(ACTOR)
    log = TransparencyLog(engine, keys, origin="fleet.test/log", clock=utcnow, poll_interval=0.05)
    log.ensure(ACTOR)
    assert log.start()
    authority.log_wake = log.wake
    sigstore = Sigstore(engine, keys, authority, log, tmp / "sigstore", clock=utcnow)
    sigstore.ensure(ACTOR)
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = issue_evidence(authority, key)
    signature = key.sign(ARTIFACT, ec.ECDSA(hashes.SHA256()))
    bundle = sigstore.export(ACTOR, artifact=ARTIFACT, signature=signature, certificate=certificate)
    try:
        yield World(authority, log, sigstore, key, certificate, bundle, sigstore.trust_config(), tmp)
    finally:
        log.close()
        authority.close()
        engine.dispose()


def sigstore_verify(
    workdir: Path, bundle: dict[str, Any], trust: dict[str, Any], artifact: bytes, *, issuer: str = ISSUER
) -> subprocess.CompletedProcess[str]:
    """`sigstore --trust-config T verify identity --offline --bundle B ... ARTIFACT`, the stock CLI."""
    workdir.mkdir(exist_ok=True)
    (workdir / "artifact").write_bytes(artifact)
    (workdir / "bundle.json").write_text(json.dumps(bundle))
    (workdir / "trust.json").write_text(json.dumps(trust))
    command = [
        str(Path(sys.executable).with_name("sigstore")),
        "--trust-config",
        str(workdir / "trust.json"),
        "verify",
        "identity",
        "--offline",
        "--bundle",
        str(workdir / "bundle.json"),
        "--cert-identity",
        IDENTITY,
        "--cert-oidc-issuer",
        issuer,
        str(workdir / "artifact"),
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def run_cli(
    world: World,
    bundle: dict[str, Any],
    *,
    artifact: bytes = ARTIFACT,
    trust: dict[str, Any] | None = None,
    name: str = "case",
) -> subprocess.CompletedProcess[str]:
    return sigstore_verify(world.workdir / name, bundle, trust or world.trust, artifact)


def test_stock_cli_verifies_the_exported_bundle_offline(world: World) -> None:
    result = run_cli(world, world.bundle, name="good")
    assert result.returncode == 0, result.stderr
    assert "OK: " in result.stderr


def test_the_bundle_entry_is_a_leaf_of_our_log(world: World) -> None:
    entry = world.bundle["verificationMaterial"]["tlogEntries"][0]
    body = base64.b64decode(entry["canonicalizedBody"])
    logged = world.log.entry(int(entry["logIndex"]))
    assert (
        logged.entry == body
        and logged.leaf_hash == leaf_hash(body)
        and logged.kind == "sigstore.hashedrekord"
    )
    # Exporting again appends nothing: the log dedups the same body to its first index.
    signature = base64.b64decode(world.bundle["messageSignature"]["signature"])
    again = world.sigstore.export(
        ACTOR, artifact=ARTIFACT, signature=signature, certificate=world.certificate
    )
    assert again["verificationMaterial"]["tlogEntries"][0]["logIndex"] == entry["logIndex"]


def test_the_precertificate_is_in_our_log(world: World) -> None:
    serial = format(world.certificate.serial_number, "x")
    precerts = []
    for index in range(world.log.size()):
        view = world.log.entry(index)
        if view.kind == "certificate.precertificate":
            precerts.append(json.loads(view.entry))
    mine = [p for p in precerts if p["serial"] == serial]
    assert len(mine) == 1
    precert = x509.load_der_x509_certificate(bytes.fromhex(mine[0]["precertificate"]))
    # The precertificate: signed by the same CA, same serial, subject, key, validity and SAN, poisoned.
    final = world.certificate
    assert precert.extensions.get_extension_for_class(x509.PrecertPoison).critical
    precert.verify_directly_issued_by(world.sigstore._ready().evidence.certificate)
    assert (precert.serial_number, precert.subject, precert.public_key()) == (
        final.serial_number,
        final.subject,
        final.public_key(),
    )
    assert (precert.not_valid_before_utc, precert.not_valid_after_utc) == (
        final.not_valid_before_utc,
        final.not_valid_after_utc,
    )
    san = x509.SubjectAlternativeName
    assert precert.extensions.get_extension_for_class(san) == final.extensions.get_extension_for_class(san)


def _flip_b64(value: str, index: int = -1) -> str:
    raw = bytearray(base64.b64decode(value))
    raw[index] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


def _entry(bundle: dict[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = bundle["verificationMaterial"]["tlogEntries"][0]
    return entry


def _certificate_byte(bundle: dict[str, Any]) -> None:
    cert = bundle["verificationMaterial"]["certificate"]
    cert["rawBytes"] = _flip_b64(cert["rawBytes"])


def _proof_hash(bundle: dict[str, Any]) -> None:
    proof = _entry(bundle)["inclusionProof"]
    proof["hashes"][0] = _flip_b64(proof["hashes"][0])


def _checkpoint_signature(bundle: dict[str, Any]) -> None:
    checkpoint = _entry(bundle)["inclusionProof"]["checkpoint"]
    text, _, signatures = checkpoint["envelope"].partition("\n\n")
    name, _, blob = signatures.strip("\n").rpartition(" ")
    checkpoint["envelope"] = f"{text}\n\n{name} {_flip_b64(blob)}\n"


def _checkpoint_size(bundle: dict[str, Any]) -> None:
    checkpoint = _entry(bundle)["inclusionProof"]["checkpoint"]
    origin, size, rest = checkpoint["envelope"].split("\n", 2)
    checkpoint["envelope"] = f"{origin}\n{int(size) + 1}\n{rest}"


def _checkpoint_root(bundle: dict[str, Any]) -> None:
    checkpoint = _entry(bundle)["inclusionProof"]["checkpoint"]
    origin, size, root, rest = checkpoint["envelope"].split("\n", 3)
    checkpoint["envelope"] = f"{origin}\n{size}\n{_flip_b64(root)}\n{rest}"


def _proof_root(bundle: dict[str, Any]) -> None:
    proof = _entry(bundle)["inclusionProof"]
    proof["rootHash"] = _flip_b64(proof["rootHash"])


def _proof_size(bundle: dict[str, Any]) -> None:
    proof = _entry(bundle)["inclusionProof"]
    proof["treeSize"] = str(int(proof["treeSize"]) + 1)


def _body(bundle: dict[str, Any]) -> None:
    entry = _entry(bundle)
    body = json.loads(base64.b64decode(entry["canonicalizedBody"]))
    data = body["spec"]["hashedRekordV002"]["data"]
    data["digest"] = _flip_b64(data["digest"])
    entry["canonicalizedBody"] = base64.b64encode(
        json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    ).decode()


def _timestamp_time(bundle: dict[str, Any]) -> None:
    stamps = bundle["verificationMaterial"]["timestampVerificationData"]["rfc3161Timestamps"]
    token = bytearray(base64.b64decode(stamps[0]["signedTimestamp"]))
    at = token.find(b"\x18\x0f")  # the first GeneralizedTime: TSTInfo genTime
    assert at > 0
    token[at + 2 + 11] ^= 0x01  # one digit of the minutes
    stamps[0]["signedTimestamp"] = base64.b64encode(bytes(token)).decode()


def _timestamp_signature(bundle: dict[str, Any]) -> None:
    stamps = bundle["verificationMaterial"]["timestampVerificationData"]["rfc3161Timestamps"]
    token = bytearray(base64.b64decode(stamps[0]["signedTimestamp"]))
    token[-3] ^= 0x01  # inside the SignerInfo's ECDSA signature, the token's last field
    stamps[0]["signedTimestamp"] = base64.b64encode(bytes(token)).decode()


# Each mutation, and the words of the check that must catch it (sigstore-python 4.5 messages).
MUTATIONS: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "certificate": (_certificate_byte, "certificate chain"),
    "inclusion-proof-hash": (_proof_hash, "inclusion proof contains invalid root hash"),
    "inclusion-proof-root": (_proof_root, "inclusion proof contains invalid root hash"),
    "inclusion-proof-size": (_proof_size, "inclusion proof has wrong size"),
    "checkpoint-signature": (_checkpoint_signature, "checkpoint: invalid signature"),
    "checkpoint-size": (_checkpoint_size, "checkpoint: invalid signature"),
    "checkpoint-root": (_checkpoint_root, "checkpoint: invalid signature"),
    "canonicalized-body": (_body, "inclusion proof contains invalid root hash"),
    "timestamp-time": (_timestamp_time, "not enough sources of verified time"),
    "timestamp-signature": (_timestamp_signature, "not enough sources of verified time"),
}


def failure(result: subprocess.CompletedProcess[str]) -> str:
    """The CLI's error text on one line (rich wraps it in columns)."""
    assert result.returncode != 0 and "OK: " not in result.stderr, result.stderr
    words = [w for line in result.stderr.splitlines() for w in line.split() if not w.endswith(".py:42")]
    return " ".join(words)


@pytest.mark.parametrize("field", sorted(MUTATIONS))
def test_stock_cli_fails_on_a_tampered_field(world: World, field: str) -> None:
    bundle = copy.deepcopy(world.bundle)
    mutate, expected = MUTATIONS[field]
    mutate(bundle)
    assert bundle != world.bundle
    assert expected in failure(run_cli(world, bundle, name=field))


def test_stock_cli_fails_on_a_tampered_artifact_byte(world: World) -> None:
    artifact = bytearray(ARTIFACT)
    artifact[0] ^= 0x01
    result = run_cli(world, world.bundle, artifact=bytes(artifact), name="artifact")
    assert "Bundle message digest mismatch" in failure(result)


def test_stock_cli_fails_on_another_signature(world: World) -> None:
    """A valid signature by the same key over other bytes, even with a valid timestamp for it."""
    bundle = copy.deepcopy(world.bundle)
    other = world.key.sign(b"another artifact", ec.ECDSA(hashes.SHA256()))
    bundle["messageSignature"]["signature"] = base64.b64encode(other).decode()
    assert "not enough sources of verified time" in failure(run_cli(world, bundle, name="signature"))
    token = world.sigstore._ready().tsa.respond(hashlib.sha256(other).digest(), at=utcnow(), serial=7)
    stamps = bundle["verificationMaterial"]["timestampVerificationData"]["rfc3161Timestamps"]
    stamps[0]["signedTimestamp"] = base64.b64encode(token).decode()
    assert "Signature is invalid for input" in failure(run_cli(world, bundle, name="signature-stamped"))


def test_stock_cli_fails_on_an_sct_from_another_ct_key(world: World) -> None:
    """A certificate our evidence CA really signed, whose SCT is by a CT key not in the trust config."""
    keys = FileKeyBackend(world.workdir / "foreign", b"secret")
    foreign = CtLog(keys.create(KeyAlgorithm.EC_P256, "foreign-ct"))
    _, csr = make_csr(world.key, uris=[IDENTITY])
    request = validate_request(profile_for("evidence"), parse_csr(csr.encode()), trust_domain="fleet.test")
    evidence = world.sigstore._ready().evidence
    forged = issue_evidence_certificate(
        evidence,
        request,
        foreign,
        now=utcnow(),
        serial=world.certificate.serial_number + 1,
        urls=None,
        oidc_issuer=ISSUER,
    ).certificate
    bundle = copy.deepcopy(world.bundle)
    bundle["verificationMaterial"]["certificate"]["rawBytes"] = base64.b64encode(
        forged.public_bytes(Encoding.DER)
    ).decode()
    result = run_cli(world, bundle, name="sct")
    assert "failed to verify SCT" in failure(result)
    # And our own export refuses it: it is no certificate this authority stored.
    signature = world.key.sign(ARTIFACT, ec.ECDSA(hashes.SHA256()))
    with pytest.raises(EvidenceCertificateUnknown):
        world.sigstore.export(ACTOR, artifact=ARTIFACT, signature=signature, certificate=forged)


def test_stock_cli_fails_with_another_ct_key_in_the_trust_config(world: World) -> None:
    trust = copy.deepcopy(world.trust)
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    spki = other.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    trust["trustedRoot"]["ctlogs"][0]["publicKey"]["rawBytes"] = base64.b64encode(spki).decode()
    result = run_cli(world, world.bundle, trust=trust, name="ctkey")
    assert "failed to verify SCT" in failure(result)


def test_export_refuses_a_signature_over_other_bytes(world: World) -> None:
    signature = world.key.sign(b"other", ec.ECDSA(hashes.SHA256()))
    with pytest.raises(EvidenceSignatureInvalid):
        world.sigstore.export(ACTOR, artifact=ARTIFACT, signature=signature, certificate=world.certificate)


def test_over_http_issue_export_and_verify(tmp_path: Path) -> None:
    """The service: evidence certificate by the certificate API, bundle and trust config by the
    Sigstore routes (no account needed for either), verified by the stock CLI; bad input refused."""
    key = ec.generate_private_key(ec.SECP256R1())
    _, csr = make_csr(key, uris=[IDENTITY])
    with running_service(tmp_path / "data") as service, service.client() as client:
        issued = client.post(
            "/v1/certificates", json={"profile": "evidence", "csr": csr}, headers=service.admin()
        )
        assert issued.status_code == 201, issued.text
        cert_pem = issued.json()["certificate_pem"]
        read_back = client.get(f"/v1/certificates/{issued.json()['serial']}")
        assert read_back.status_code == 200 and read_back.json()["profile"] == "evidence", read_back.text
        signature = key.sign(ARTIFACT, ec.ECDSA(hashes.SHA256()))
        body = {
            "artifact": base64.b64encode(ARTIFACT).decode(),
            "signature": base64.b64encode(signature).decode(),
            "certificate_pem": cert_pem,
        }
        exported = client.post("/v1/sigstore/bundles", json=body)
        assert exported.status_code == 200, exported.text
        trust = client.get("/v1/sigstore/trust-config")
        assert trust.status_code == 200, trust.text
        result = sigstore_verify(
            tmp_path / "cli", exported.json(), trust.json(), ARTIFACT, issuer=service.url
        )
        assert result.returncode == 0 and "OK: " in result.stderr, result.stderr

        other = key.sign(b"other", ec.ECDSA(hashes.SHA256()))
        bad_signature = client.post(
            "/v1/sigstore/bundles", json={**body, "signature": base64.b64encode(other).decode()}
        )
        assert bad_signature.status_code == 422
        assert bad_signature.json()["type"].endswith("evidence-signature-invalid")
        truck_pem = client.post(
            "/v1/certificates", json={"profile": "truck", "csr": csr}, headers=service.admin()
        ).json()["certificate_pem"]
        not_evidence = client.post("/v1/sigstore/bundles", json={**body, "certificate_pem": truck_pem})
        assert not_evidence.status_code == 404
        assert not_evidence.json()["type"].endswith("evidence-certificate-unknown")
        garbage = client.post("/v1/sigstore/bundles", json={**body, "certificate_pem": "not a certificate"})
        assert garbage.status_code == 422 and garbage.json()["type"].endswith("malformed-certificate")


def test_two_replicas_on_postgresql_create_one_evidence_ca(tmp_path: Path) -> None:
    """Two authorities on one PostgreSQL database (sharing the data directory) creating the Sigstore
    material at once: one evidence CA row, one CT key, one TSA, the same trust config."""
    with scratch_database() as url:
        engine = make_engine(url)
        upgrade_to_head(engine)
        keys = FileKeyBackend(tmp_path / "keys", b"secret")
        config = AuthorityConfig(trust_domain="fleet.test", public_url=ISSUER)
        first = Authority(engine, keys, config)
        first.cas.bootstrap(ACTOR)
        log = TransparencyLog(engine, keys, origin="fleet.test/log", clock=utcnow, poll_interval=0.05)
        log.ensure(ACTOR)
        assert log.start()
        second = Authority(make_engine(url), keys, config)
        replicas = [
            Sigstore(a.engine, keys, a, log, tmp_path / "sigstore", clock=utcnow) for a in (first, second)
        ]
        try:
            for replica in replicas:
                replica.ensure(ACTOR)
            with ThreadPoolExecutor(2) as pool:
                configs = list(pool.map(lambda s: s.trust_config(), replicas))
            assert configs[0] == configs[1]
            kinds = [ca.kind for ca in first.cas.authorities()]
            assert kinds.count("evidence") == 1
        finally:
            log.close()
            first.close()
            second.close()
            second.engine.dispose()
            engine.dispose()
