"""The storage layer and the authority use cases on both databases (SQLite file and PostgreSQL),
with a fixed clock and file keys."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import SQLModel

from pki import errors
from pki.filekeys import FileKeyBackend
from pki.signer import KeyAlgorithm, algorithm_of
from provision import audit
from provision.audit import Actor
from provision.authority import Authority
from provision.config import AuthorityConfig
from provision.db import make_engine
from provision.migrate import upgrade_to_head
from provision.writer import BatchWriter
from tests.support.audit import audit_rows
from tests.support.csr import make_csr, truck_uri

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
ACTOR = Actor("tester", "req-1")


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    upgrade_to_head(engine)
    upgrade_to_head(engine)  # idempotent on restart
    yield engine
    engine.dispose()


@pytest.fixture
def authority(engine: Engine, tmp_path: Path) -> Iterator[tuple[Authority, Clock]]:
    clock = Clock()
    config = AuthorityConfig(trust_domain="fleet.test", public_url="http://127.0.0.1:1")
    authority = Authority(engine, FileKeyBackend(tmp_path / "keys", b"secret"), config, clock=clock)
    authority.cas.bootstrap(ACTOR)
    yield authority, clock
    authority.close()


def test_bootstrap_is_idempotent(authority: tuple[Authority, Clock]) -> None:
    auth, _ = authority
    auth.cas.bootstrap(ACTOR)
    kinds = sorted(ca.kind for ca in auth.cas.authorities())
    assert kinds == ["issuing", "root"]


def test_issue_revoke_crl_numbers_grow(authority: tuple[Authority, Clock], database_url: str) -> None:
    auth, clock = authority
    _, csr = make_csr(uris=[truck_uri()])
    view = asyncio.run(auth.issue_async(ACTOR, profile="truck", csr=csr.encode()))
    assert auth.get(view.serial).status == "valid"
    assert auth.get(view.serial.upper()).serial == view.serial
    first = x509.load_der_x509_crl(auth.status.crl())
    clock.now += timedelta(minutes=1)
    auth.revoke(ACTOR, view.serial, "key_compromise")
    second = x509.load_der_x509_crl(auth.status.crl())
    number = x509.CRLNumber
    assert (
        second.extensions.get_extension_for_class(number).value.crl_number
        > first.extensions.get_extension_for_class(number).value.crl_number
    )
    assert second.get_revoked_certificate_by_serial_number(int(view.serial, 16)) is not None
    assert auth.get(view.serial).revocation_reason == "key_compromise"
    with pytest.raises(errors.AlreadyRevoked):
        auth.revoke(ACTOR, view.serial, "superseded")
    actions = [(r["action"], r["outcome"]) for r in audit_rows(database_url)]
    assert ("certificate.issue", "ok") in actions and ("certificate.revoke", "refused") in actions


def test_refused_issuance_stores_nothing(authority: tuple[Authority, Clock], database_url: str) -> None:
    auth, _ = authority
    _, csr = make_csr(uris=["spiffe://other.test/fleet/a/truck/b"])
    with pytest.raises(errors.SanOutsideTrustDomain):
        asyncio.run(auth.issue_async(ACTOR, profile="truck", csr=csr.encode()))
    rows = audit_rows(database_url, "certificate.issue")
    assert [r["outcome"] for r in rows] == ["refused"] and rows[0]["code"] == "san-outside-trust-domain"


def test_unknown_serials(authority: tuple[Authority, Clock]) -> None:
    auth, _ = authority
    for serial in ("ab", "not-hex", "", "0" * 80):
        with pytest.raises(errors.UnknownCertificate):
            auth.get(serial)


def test_rotation_keeps_old_certificates_answerable(authority: tuple[Authority, Clock]) -> None:
    auth, clock = authority
    _, csr = make_csr(uris=[truck_uri()])
    old = asyncio.run(auth.issue_async(ACTOR, profile="truck", csr=csr.encode()))
    clock.now += timedelta(seconds=5)
    new_ca = auth.cas.rotate(ACTOR)
    new = asyncio.run(auth.issue_async(ACTOR, profile="truck", csr=csr.encode()))
    assert new.issuer_id == new_ca.id != old.issuer_id
    assert len(x509.load_pem_x509_certificates(auth.cas.bundle_pem())) == 3
    auth.revoke(ACTOR, old.serial, "superseded")
    old_crl = x509.load_der_x509_crl(auth.status.crl(old.issuer_id))
    assert old_crl.get_revoked_certificate_by_serial_number(int(old.serial, 16)) is not None
    assert (
        x509.load_der_x509_crl(auth.status.crl()).get_revoked_certificate_by_serial_number(
            int(old.serial, 16)
        )
        is None
    )
    # OCSP for a certificate of the retired CA is answered by that CA.
    request = (
        ocsp.OCSPRequestBuilder().add_certificate(old.certificate, old.chain[0], hashes.SHA256()).build()
    )
    answer = ocsp.load_der_ocsp_response(auth.status.ocsp(request.public_bytes(Encoding.DER)))
    assert answer.certificate_status == ocsp.OCSPCertStatus.REVOKED


def test_another_replica_finds_a_ca_created_since_its_last_reload(
    authority: tuple[Authority, Clock], engine: Engine, tmp_path: Path
) -> None:
    auth, clock = authority
    config = AuthorityConfig(trust_domain="fleet.test", public_url="http://127.0.0.1:1")
    replica = Authority(engine, FileKeyBackend(tmp_path / "keys", b"secret"), config, clock=clock)
    try:
        replica.cas.authorities()  # loaded now: the rotation below is newer than its cache
        clock.now += timedelta(seconds=5)
        rotated = auth.cas.rotate(ACTOR)
        issuer = replica.cas.issuer(rotated.id)
        assert issuer.certificate.subject == rotated.certificate.subject
        with pytest.raises(errors.SignerUnavailable, match="no certificate authority"):
            replica.cas.issuer("0" * 40)
    finally:
        replica.close()


def test_group_commit_lands_everything_and_isolates_a_bad_row(engine: Engine, database_url: str) -> None:
    table = SQLModel.metadata.tables["certificate_authorities"]
    writer = BatchWriter(engine)

    def row(i: int) -> dict[str, object]:
        return {
            "id": f"ca-{i}",
            "kind": "issuing",
            "status": "retired",
            "parent_id": None,
            "key_ref": "file:x",
            "certificate_der": b"\x30",
            "not_before": NOW,
            "not_after": NOW,
            "created_at": NOW,
        }

    def write(i: int) -> str:
        event = audit.values(ACTOR, "writer.test", at=NOW, target=str(i))
        try:
            # Request 7 reuses request 3's primary key: it alone must fail.
            writer.write(
                [(table, row(3 if i == 7 else i)), (SQLModel.metadata.tables["audit_events"], event)]
            )
        except IntegrityError:
            return "refused"
        return "ok"

    try:
        with ThreadPoolExecutor(max_workers=16) as pool:
            outcomes = list(pool.map(write, range(64)))
    finally:
        writer.close()
    # Either 3 or 7 may win the race for the key; exactly one of them is refused, nothing else is.
    assert outcomes.count("refused") == 1 and outcomes.index("refused") in (3, 7)
    targets = sorted(int(str(r["target"])) for r in audit_rows(database_url, "writer.test"))
    assert len(targets) == 63 and set(range(64)) - set(targets) <= {3, 7}
    with pytest.raises(RuntimeError):
        writer.write([])


def test_replicas_revoking_concurrently_keep_the_crl_complete(
    authority: tuple[Authority, Clock], engine: Engine, tmp_path: Path
) -> None:
    """Two authorities on one database (two replicas) revoke at once: every revocation reaches the
    CRL, and no CRL number is ever given to two different CRLs."""
    first, clock = authority
    config = AuthorityConfig(trust_domain="fleet.test", public_url="http://127.0.0.1:1")
    second = Authority(engine, FileKeyBackend(tmp_path / "keys", b"secret"), config, clock=clock)
    second.cas.bootstrap(ACTOR)
    _, csr = make_csr(uris=[truck_uri()])
    views = [asyncio.run(first.issue_async(ACTOR, profile="truck", csr=csr.encode())) for _ in range(12)]
    seen: dict[int, bytes] = {}

    def revoke(i: int) -> None:
        replica = (first, second)[i % 2]
        replica.revoke(ACTOR, views[i].serial, "key_compromise")
        der = replica.status.crl()
        number = x509.load_der_x509_crl(der).extensions.get_extension_for_class(x509.CRLNumber).value
        assert seen.setdefault(number.crl_number, der) == der

    try:
        with ThreadPoolExecutor(max_workers=6) as pool:
            list(pool.map(revoke, range(12)))
        final = x509.load_der_x509_crl(second.status.crl())
    finally:
        second.close()
    assert all(final.get_revoked_certificate_by_serial_number(int(v.serial, 16)) for v in views)


@pytest.mark.parametrize("algorithm", [KeyAlgorithm.EC_P384, KeyAlgorithm.RSA_3072], ids=str)
def test_selectable_ca_algorithms_verify_with_openssl(algorithm: KeyAlgorithm, tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'ws.db'}")
    upgrade_to_head(engine)
    config = AuthorityConfig(
        trust_domain="fleet.test", public_url="http://127.0.0.1:1", ca_key_algorithm=algorithm
    )
    auth = Authority(engine, FileKeyBackend(tmp_path / "keys", b"secret"), config)
    try:
        auth.cas.bootstrap(ACTOR)
        _, csr = make_csr(uris=[truck_uri()])
        view = asyncio.run(auth.issue_async(ACTOR, profile="truck", csr=csr.encode()))
        auth.revoke(ACTOR, view.serial, "superseded")
        (tmp_path / "root.pem").write_bytes(view.chain[1].public_bytes(Encoding.PEM))
        (tmp_path / "issuing.pem").write_bytes(view.chain[0].public_bytes(Encoding.PEM))
        (tmp_path / "leaf.pem").write_bytes(view.certificate.public_bytes(Encoding.PEM))
        (tmp_path / "crl.der").write_bytes(auth.status.crl())
    finally:
        auth.close()
        engine.dispose()
    ca_key = view.chain[0].public_key()
    assert isinstance(ca_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey)
    assert algorithm_of(ca_key) is algorithm
    verified = subprocess.run(
        [
            "openssl",
            "verify",
            "-CAfile",
            str(tmp_path / "root.pem"),
            "-untrusted",
            str(tmp_path / "issuing.pem"),
            str(tmp_path / "leaf.pem"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert verified.returncode == 0, verified.stderr
    (tmp_path / "bundle.pem").write_bytes(
        (tmp_path / "root.pem").read_bytes() + (tmp_path / "issuing.pem").read_bytes()
    )
    crl = subprocess.run(
        [
            "openssl",
            "crl",
            "-inform",
            "DER",
            "-in",
            str(tmp_path / "crl.der"),
            "-CAfile",
            str(tmp_path / "bundle.pem"),
            "-noout",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert "verify OK" in crl.stderr, crl.stderr
