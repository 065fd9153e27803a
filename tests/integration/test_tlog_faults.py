"""Faults of the transparency log on the real server (`weighstation serve` subprocesses), checked with tlog's
own verification only:

* SIGKILL during a sustained load of certificate issuance (each issued certificate is logged): after a
  restart on the same data dir and database, every acknowledged (201) certificate is in the log once, with
  an inclusion proof that verifies against the new checkpoint, and every checkpoint seen before the kill
  is consistent with it;
* two replicas on one PostgreSQL database issuing at once: one linear log (indices 0..n-1, no gap, no
  duplicate index or leaf), every acknowledged certificate logged exactly once, every checkpoint either
  replica signed a prefix of the final tree.
"""

from __future__ import annotations

import base64
import itertools
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from provision.db import make_engine
from provision.sequencer import CHECKPOINTS, ENTRIES
from tests.support.csr import make_csr, truck_uri
from tests.support.postgres import scratch_database
from tests.support.service import RunningService, running_service
from tlog.checkpoint import VerifiedCheckpoint, verify_checkpoint
from tlog.merkle import MerkleTree, leaf_hash
from tlog.note import VerifierKey
from tlog.tiles import TILE_WIDTH, BundleId, parse_entry_bundle

pytestmark = pytest.mark.integration

ORIGIN = "fleet.test/log"  # the default: "<trust domain>/log"
ISSUED = "certificate.issued"
CSRS = [make_csr(uris=[truck_uri(truck=f"fault-{i}")])[1] for i in range(8)]


def b64d(text: str) -> bytes:
    return base64.b64decode(text)


def log_key(client: httpx.Client) -> VerifierKey:
    response = client.get("/v1/log/key")
    assert response.status_code == 200, response.text
    return VerifierKey.parse(response.text.strip())


def latest_checkpoint(client: httpx.Client, key: VerifierKey) -> VerifiedCheckpoint:
    response = client.get("/v1/log/checkpoint")
    assert response.status_code == 200, response.text
    return verify_checkpoint(response.content, [key], origin=ORIGIN)


@dataclass
class Load:
    """Certificate issuance from several client threads, and a watcher keeping every checkpoint it sees."""

    service: RunningService
    key: VerifierKey
    threads: int = 6
    acknowledged: list[str] = field(default_factory=list)  # serials answered 201
    refused: list[str] = field(default_factory=list)  # any other answer before the stop
    checkpoints: dict[int, VerifiedCheckpoint] = field(default_factory=dict)
    forks: list[str] = field(default_factory=list)  # two roots seen for one size
    stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _workers: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        headers = self.service.admin()  # one token for the whole run: the server may die mid-way
        for n in range(self.threads):
            self._workers.append(threading.Thread(target=self._issue, args=(n, headers), daemon=True))
        self._workers.append(threading.Thread(target=self._watch, daemon=True))
        for worker in self._workers:
            worker.start()

    def _issue(self, n: int, headers: dict[str, str]) -> None:
        with httpx.Client(base_url=self.service.url, timeout=30) as client:
            i = n
            while not self.stop.is_set():
                body = {"profile": "truck", "csr": CSRS[i % len(CSRS)]}
                i += self.threads
                try:
                    response = client.post("/v1/certificates", json=body, headers=headers)
                except httpx.HTTPError:
                    if self.service.process.poll() is not None:
                        return  # killed: this request was never acknowledged
                    continue
                with self._lock:
                    if response.status_code == 201:
                        self.acknowledged.append(response.json()["serial"])
                    else:
                        self.refused.append(f"{response.status_code} {response.text[:200]}")

    def _watch(self) -> None:
        with httpx.Client(base_url=self.service.url, timeout=30) as client:
            while not self.stop.is_set():
                try:
                    response = client.get("/v1/log/checkpoint")
                except httpx.HTTPError:
                    if self.service.process.poll() is not None:
                        return
                    continue
                # Verified as a client would on receipt: the log key's signature, the origin.
                seen = verify_checkpoint(response.content, [self.key], origin=ORIGIN)
                with self._lock:
                    earlier = self.checkpoints.setdefault(seen.size, seen)
                    if earlier.root_hash != seen.root_hash:
                        self.forks.append(f"two roots for size {seen.size}")
                time.sleep(0.02)

    def wait_for(self, acknowledged: int, checkpoints: int, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while len(self.acknowledged) < acknowledged or len(self.checkpoints) < checkpoints:
            assert time.monotonic() < deadline, (
                len(self.acknowledged),
                len(self.checkpoints),
                self.refused[:3],
            )
            assert all(w.is_alive() for w in self._workers), "a load thread died"
            time.sleep(0.05)

    def finish(self) -> None:
        self.stop.set()
        for worker in self._workers:
            worker.join(timeout=60)
        assert not any(w.is_alive() for w in self._workers)
        assert not self.forks, self.forks


def read_log(client: httpx.Client, size: int) -> list[bytes]:
    """Every entry of the tree of `size` leaves, through the public entry bundles."""
    entries: list[bytes] = []
    for index in range(0, (size + TILE_WIDTH - 1) // TILE_WIDTH):
        width = min(TILE_WIDTH, size - index * TILE_WIDTH)
        bundle = BundleId(index, width)
        response = client.get(f"/v1/log/{bundle.path}")
        assert response.status_code == 200, (bundle.path, response.text)
        entries.extend(parse_entry_bundle(response.content, bundle))
    return entries


def issued_serials(entries: list[bytes]) -> list[str]:
    documents = [json.loads(e) for e in entries]
    return [d["serial"] for d in documents if d["kind"] == ISSUED]


def wait_until_logged(
    client: httpx.Client, key: VerifierKey, serials: set[str]
) -> tuple[VerifiedCheckpoint, list[bytes]]:
    """Acknowledged certificates are logged from their pending rows soon after the commit (after a
    restart, by the new process): poll until the published tree holds every one of them."""
    deadline = time.monotonic() + 90
    while True:
        latest = latest_checkpoint(client, key)
        entries = read_log(client, latest.size)
        missing = serials - set(issued_serials(entries))
        if not missing:
            return latest, entries
        assert time.monotonic() < deadline, f"{len(missing)} acknowledged certificates not logged"
        time.sleep(0.2)


def check_tree(
    client: httpx.Client, latest: VerifiedCheckpoint, entries: list[bytes], acknowledged: list[str]
) -> None:
    """The entries make the signed root; each acknowledged certificate is in it once, provably."""
    leaves = [leaf_hash(e) for e in entries]
    assert MerkleTree(leaves).root() == latest.root_hash
    assert len(set(leaves)) == len(leaves), "a leaf is in the log twice"
    serials = issued_serials(entries)
    assert len(serials) == len(set(serials)), "a certificate is logged twice"
    where = {
        document["serial"]: leaf
        for e, leaf in zip(entries, leaves, strict=True)
        if (document := json.loads(e))["kind"] == ISSUED
    }
    for serial in acknowledged:
        leaf = where[serial]
        # At the size of the checkpoint in hand: rows left pending by the kill may still be sequencing.
        response = client.get(
            "/v1/log/proof/inclusion", params={"leaf_hash": leaf.hex(), "size": latest.size}
        )
        assert response.status_code == 200, response.text
        proof = response.json()
        assert proof["tree_size"] == latest.size
        latest.verify_inclusion(leaf, proof["index"], [b64d(h) for h in proof["hashes"]])


def check_consistent(
    client: httpx.Client, latest: VerifiedCheckpoint, older: list[VerifiedCheckpoint]
) -> None:
    for checkpoint in older:
        params = {"first": checkpoint.size, "second": latest.size}
        response = client.get("/v1/log/proof/consistency", params=params)
        assert response.status_code == 200, response.text
        latest.verify_consistency(checkpoint, [b64d(h) for h in response.json()["hashes"]])


@pytest.fixture(params=["sqlite", "postgresql"])
def database_env(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    if request.param == "sqlite":
        yield {}
    else:
        with scratch_database() as url:
            yield {"WEIGHSTATION_DATABASE_URL": url}


def test_sigkill_under_issuance_load_loses_no_acknowledged_entry(
    tmp_path: Path, database_env: dict[str, str]
) -> None:
    data = tmp_path / "data"
    with running_service(data, env=database_env) as server, server.client() as client:
        key = log_key(client)
        load = Load(server, key)
        load.start()
        try:
            # Mid-load: requests in flight, pending rows not yet sequenced, a step maybe half-written.
            load.wait_for(acknowledged=150, checkpoints=3)
            server.process.kill()  # SIGKILL: no shutdown hook runs
            server.process.wait()
        finally:
            load.finish()
    acknowledged = list(load.acknowledged)
    before = list(load.checkpoints.values())
    assert not load.refused, load.refused[:3]

    with running_service(data, env=database_env) as server, server.client() as client:
        assert str(log_key(client)) == str(key), "the restarted server signs with another key"
        latest, entries = wait_until_logged(client, key, set(acknowledged))
        check_tree(client, latest, entries, acknowledged)
        check_consistent(client, latest, before)
        # The log goes on from there: a new certificate lands in a tree consistent with all of them.
        response = client.post(
            "/v1/certificates", json={"profile": "truck", "csr": CSRS[0]}, headers=server.admin()
        )
        assert response.status_code == 201, response.text
        newest, entries = wait_until_logged(client, key, {*acknowledged, response.json()["serial"]})
        check_consistent(client, newest, [*before, latest])


def test_two_replicas_on_postgresql_append_one_linear_log(tmp_path: Path) -> None:
    with scratch_database() as pg_url:
        shared = tmp_path / "data"  # the replicas share the file keys, hence the log key
        env = {"WEIGHSTATION_DATABASE_URL": pg_url}
        with (
            running_service(shared, env=env) as first,
            running_service(shared, env=env) as second,
            first.client() as a,
            second.client() as b,
        ):
            key = log_key(a)
            assert str(log_key(b)) == str(key)
            loads = [Load(first, key, threads=4), Load(second, key, threads=4)]
            for load in loads:
                load.start()
            try:
                for load in loads:
                    load.wait_for(acknowledged=200, checkpoints=3)
            finally:
                for load in loads:
                    load.finish()
            for load in loads:
                assert not load.refused, load.refused[:3]
            acknowledged = [s for load in loads for s in load.acknowledged]
            latest, entries = wait_until_logged(b, key, set(acknowledged))
            assert a.get("/v1/log/checkpoint").content == b.get("/v1/log/checkpoint").content
            check_tree(a, latest, entries, acknowledged)
            seen = [c for load in loads for c in load.checkpoints.values()]
            check_consistent(b, latest, seen)

            # The stored log itself: indices 0..n-1 with no gap, each leaf the hash of its entry, each
            # once; every checkpoint either replica signed is the root of a prefix of this one tree, and
            # each is consistent with the next by the proof either replica serves.
            engine = make_engine(pg_url)
            try:
                with engine.connect() as conn:
                    rows = conn.execute(
                        select(ENTRIES.c.idx, ENTRIES.c.leaf_hash, ENTRIES.c.entry).order_by(ENTRIES.c.idx)
                    ).all()
                    notes = (
                        conn.execute(select(CHECKPOINTS.c.note).order_by(CHECKPOINTS.c.size)).scalars().all()
                    )
            finally:
                engine.dispose()
            assert [r.idx for r in rows] == list(range(len(rows)))
            assert len(rows) >= latest.size
            leaves = [bytes(r.leaf_hash) for r in rows]
            assert leaves == [leaf_hash(bytes(r.entry)) for r in rows]
            assert len(set(leaves)) == len(leaves)
            serials = issued_serials([bytes(r.entry) for r in rows])
            assert sorted(serials) == sorted(acknowledged), "each acknowledged certificate exactly once"
            tree = MerkleTree(leaves)
            signed = [verify_checkpoint(str(n).encode(), [key], origin=ORIGIN) for n in notes]
            assert len(signed) >= 3
            for checkpoint in signed:
                assert tree.root(checkpoint.size) == checkpoint.root_hash, f"checkpoint {checkpoint.size}"
            for n, (older, newer) in enumerate(itertools.pairwise(signed)):
                check_consistent(a if n % 2 else b, newer, [older])
