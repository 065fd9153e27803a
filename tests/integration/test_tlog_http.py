"""The transparency log over HTTP on the real server: certificate issuance and revocation land in the
log, the public read API (checkpoint, key, tiles, bundles, entries, proofs) verifies with tlog alone,
bad parameters are problem+json, two replicas on PostgreSQL make one log, and a SIGKILLed server
loses nothing it acknowledged."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from provision.db import make_engine
from provision.sequencer import CHECKPOINTS
from tests.integration.test_http_pki import issue_truck
from tests.support.postgres import scratch_database
from tests.support.service import RunningService, running_service
from tlog.checkpoint import VerifiedCheckpoint, verify_checkpoint
from tlog.merkle import MerkleTree, leaf_hash
from tlog.note import VerifierKey
from tlog.tiles import BundleId, encode_entry_bundle, encode_tile, tile_hashes, tiles_for_size

ORIGIN = "fleet.test/log"  # the default: "<trust domain>/log"


def b64d(text: str) -> bytes:
    return base64.b64decode(text)


def log_key(client: httpx.Client) -> VerifierKey:
    response = client.get("/v1/log/key")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return VerifierKey.parse(response.text.strip())


def checkpoint(client: httpx.Client, key: VerifierKey) -> VerifiedCheckpoint:
    response = client.get("/v1/log/checkpoint")
    assert response.status_code == 200 and response.headers["cache-control"] == "no-cache"
    return verify_checkpoint(response.content, [key], origin=ORIGIN)


def entries(client: httpx.Client, size: int) -> list[dict[str, Any]]:
    out = []
    for index in range(size):
        response = client.get(f"/v1/log/entries/{index}")
        assert response.status_code == 200, response.text
        out.append(response.json())
    return out


def logged_certificates(client: httpx.Client, key: VerifierKey) -> list[dict[str, Any]]:
    size = checkpoint(client, key).size
    return [json.loads(b64d(e["entry"])) for e in entries(client, size)]


def wait_for(client: httpx.Client, key: VerifierKey, wanted: set[tuple[str, str]]) -> list[dict[str, Any]]:
    """Certificate events are sequenced just after their commit: poll until all are in."""
    deadline = time.monotonic() + 30
    while True:
        logged = logged_certificates(client, key)
        if wanted <= {(e["kind"], e["serial"]) for e in logged}:
            return logged
        assert time.monotonic() < deadline, (
            f"not logged: {wanted - {(e['kind'], e['serial']) for e in logged}}"
        )
        time.sleep(0.1)


def revoke(service: RunningService, client: httpx.Client, serial: str) -> None:
    response = client.post(
        f"/v1/certificates/{serial}/revoke", json={"reason": "key_compromise"}, headers=service.admin()
    )
    assert response.status_code == 200, response.text


def test_issued_and_revoked_certificates_are_logged(service: RunningService) -> None:
    with service.client() as client:
        key = log_key(client)
        issued = issue_truck(service, client, "tlog-1")
        revoke(service, client, issued["serial"])
        serial = issued["serial"]
        logged = wait_for(client, key, {("certificate.issued", serial), ("certificate.revoked", serial)})
        der = x509.load_pem_x509_certificate(issued["certificate_pem"].encode()).public_bytes(Encoding.DER)
        events = {e["kind"]: e for e in logged if e["serial"] == serial}
        assert events["certificate.issued"]["certificate_sha256"] == hashlib.sha256(der).hexdigest()
        assert events["certificate.issued"]["subject"] == issued["subject"]
        assert events["certificate.issued"]["issuer"] == issued["issuer_id"]
        assert events["certificate.revoked"]["reason"] == "key_compromise"
        assert events["certificate.revoked"]["certificate_sha256"] == hashlib.sha256(der).hexdigest()
        # Each is provably in the signed tree, found by its leaf hash (hex or base64).
        latest = checkpoint(client, key)
        for kind, event in events.items():
            entry = json.dumps(event, sort_keys=True, separators=(",", ":")).encode()
            for form in (leaf_hash(entry).hex(), base64.urlsafe_b64encode(leaf_hash(entry)).decode()):
                proof = client.get("/v1/log/proof/inclusion", params={"leaf_hash": form}).json()
                assert proof["tree_size"] == latest.size, kind
                latest.verify_inclusion(leaf_hash(entry), proof["index"], [b64d(h) for h in proof["hashes"]])


def test_read_api_matches_what_tlog_computes(service: RunningService) -> None:
    with service.client() as client:
        key = log_key(client)
        before = checkpoint(client, key)
        for i in range(3):
            issue_truck(service, client, f"tlog-read-{i}")
        deadline = time.monotonic() + 30
        while (latest := checkpoint(client, key)).size < before.size + 3:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        logged = entries(client, latest.size)
        raw = [b64d(e["entry"]) for e in logged]
        assert [b64d(e["leaf_hash"]) for e in logged] == [leaf_hash(r) for r in raw]
        tree = MerkleTree(leaf_hash(r) for r in raw)
        assert tree.root() == latest.root_hash
        for tile in tiles_for_size(latest.size):
            response = client.get(f"/v1/log/{tile.path}")
            assert response.status_code == 200
            assert response.content == encode_tile(tile_hashes(tree, tile))
            assert response.headers["content-type"] == "application/octet-stream"
            cache = response.headers["cache-control"]
            assert ("immutable" in cache) is not tile.is_partial
            if tile.level == 0:
                bundle = client.get(f"/v1/log/{BundleId(tile.index, tile.width).path}")
                start = tile.index * 256
                assert bundle.content == encode_entry_bundle(raw[start : start + tile.width])
        # Inclusion by index at an older size, and consistency from every earlier size.
        proof = client.get("/v1/log/proof/inclusion", params={"index": 0, "size": before.size + 1}).json()
        assert proof["tree_size"] == before.size + 1
        assert [b64d(h) for h in proof["hashes"]] == list(tree.inclusion_proof(0, before.size + 1))
        for first in range(latest.size + 1):
            body = client.get("/v1/log/proof/consistency", params={"first": first}).json()
            assert body["second"] == latest.size
            assert [b64d(h) for h in body["hashes"]] == list(tree.consistency_proof(first, latest.size))
        consistency = client.get("/v1/log/proof/consistency", params={"first": before.size}).json()
        latest.verify_consistency(before, [b64d(h) for h in consistency["hashes"]])


@pytest.mark.parametrize(
    ("path", "params", "status", "code"),
    [
        ("/v1/log/proof/inclusion", {"index": 0, "size": 10**12}, 422, "size-beyond-tree"),
        ("/v1/log/proof/inclusion", {"index": 10**12}, 422, "index-out-of-range"),
        ("/v1/log/proof/inclusion", {"index": 0, "leaf_hash": "00" * 32}, 422, "proof-request-invalid"),
        ("/v1/log/proof/inclusion", {}, 422, "proof-request-invalid"),
        ("/v1/log/proof/inclusion", {"leaf_hash": "zz"}, 400, "malformed-hash"),
        ("/v1/log/proof/inclusion", {"leaf_hash": "11" * 32}, 404, "leaf-not-in-log"),
        ("/v1/log/proof/inclusion", {"index": -1}, 400, "invalid-request"),
        ("/v1/log/proof/inclusion", {"index": "x"}, 400, "invalid-request"),
        ("/v1/log/proof/consistency", {"first": 3, "second": 1}, 422, "sizes-reversed"),
        ("/v1/log/proof/consistency", {"first": 1, "second": 10**12}, 422, "size-beyond-tree"),
        ("/v1/log/proof/consistency", {"first": 2**70}, 400, "invalid-request"),
        ("/v1/log/proof/consistency", {}, 400, "invalid-request"),
        ("/v1/log/entries/99999999", {}, 404, "entry-not-found"),
        ("/v1/log/tile/0/x000/001", {}, 400, "invalid-tile-path"),
        ("/v1/log/tile/0/001.p/256", {}, 400, "invalid-tile-path"),
        ("/v1/log/tile/5/000", {}, 404, "tile-not-in-tree"),
        ("/v1/log/tile/entries/x001/000", {}, 404, "tile-not-in-tree"),
    ],
)
def test_bad_parameters_are_problems(
    service: RunningService, path: str, params: dict[str, Any], status: int, code: str
) -> None:
    with service.client() as client:
        issue_truck(service, client, "tlog-bad")  # a log of a few entries
        response = client.get(path, params=params)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == code


def test_two_replicas_append_into_one_linear_log(tmp_path: Path) -> None:
    with scratch_database() as pg_url:
        shared = tmp_path / "data"
        env = {"WEIGHSTATION_DATABASE_URL": pg_url}
        with (
            running_service(shared, env=env) as first,
            running_service(shared, env=env) as second,
            first.client() as a,
            second.client() as b,
        ):
            key = log_key(a)
            assert str(log_key(b)) == str(key)
            jobs = [(first, a, f"rep-a-{i}") for i in range(15)] + [
                (second, b, f"rep-b-{i}") for i in range(15)
            ]
            with ThreadPoolExecutor(max_workers=8) as pool:
                issued = list(pool.map(lambda job: issue_truck(*job), jobs))
            wanted = {("certificate.issued", c["serial"]) for c in issued}
            logged = wait_for(b, key, wanted)
            serials = [e["serial"] for e in logged if e["kind"] == "certificate.issued"]
            assert sorted(serials) == sorted(c["serial"] for c in issued)  # each exactly once
            # Both replicas serve the same signed tree, and it holds every entry read back.
            assert a.get("/v1/log/checkpoint").content == b.get("/v1/log/checkpoint").content
            latest = checkpoint(a, key)
            raw = [b64d(e["entry"]) for e in entries(a, latest.size)]
            assert MerkleTree(leaf_hash(r) for r in raw).root() == latest.root_hash
            # Every checkpoint either replica signed is consistent with every later one.
            engine = make_engine(pg_url)
            try:
                with engine.connect() as conn:
                    notes = conn.execute(CHECKPOINTS.select().order_by(CHECKPOINTS.c.size)).all()
            finally:
                engine.dispose()
            signed = [verify_checkpoint(n.note.encode(), [key], origin=ORIGIN) for n in notes]
            assert len(signed) >= 2
            for i, older in enumerate(signed):
                for newer in signed[i + 1 :]:
                    params = {"first": older.size, "second": newer.size}
                    proof = a.get("/v1/log/proof/consistency", params=params).json()["hashes"]
                    newer.verify_consistency(older, [b64d(h) for h in proof])


def test_sigkilled_server_loses_no_acknowledged_certificate(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with running_service(data) as server, server.client() as client:
        key = log_key(client)
        issued = [issue_truck(server, client, f"kill-{i}") for i in range(5)]
        seen = checkpoint(client, key)
        server.process.kill()  # no shutdown: events may still be pending, never sequenced here
        server.process.wait()
    with running_service(data) as server, server.client() as client:
        assert str(log_key(client)) == str(key)
        issued += [issue_truck(server, client, f"after-{i}") for i in range(3)]
        logged = wait_for(client, key, {("certificate.issued", c["serial"]) for c in issued})
        assert len(logged) == len({(e["kind"], e["serial"]) for e in logged})
        latest = checkpoint(client, key)
        proof = client.get("/v1/log/proof/consistency", params={"first": seen.size}).json()
        latest.verify_consistency(seen, [b64d(h) for h in proof["hashes"]])
