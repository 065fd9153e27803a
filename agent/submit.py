"""The truck signs a statement (mission manifest or telemetry snapshot) and gets a verified receipt.

1. pin the log key: the one given (`--log-key`), else the one pinned in the state dir, else the server's
   on first use (trust on first use, kept in `statements.json` from then on);
2. fetch the latest checkpoint and verify it with that key: the statement names it (a not-before bound);
3. build the canonical statement (sequence = ours + 1, previous = hash of our last statement) and sign
   its bytes with the TPM identity key (ECDSA P-256 / SHA-256);
4. keep it as pending in the state dir, then submit; on 202, poll its URL until it is sequenced;
5. verify the receipt: the log entry carries our exact statement and a signature by our identity key,
   the leaf hash is that entry's, the checkpoint is signed by the pinned key, the inclusion proof leads
   to its root;
6. only then advance the chain (sequence, previous) in `statements.json`, atomically, and drop the pending
   statement. A pending statement left by an interrupted run is submitted again first: the server answers
   the same statement with its first receipt, so the chain advances exactly once.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from agent.client import BadServerResponse, EnrollmentClient, EnrollmentRefused
from agent.evidence import current as evidence_certificate
from agent.state import AgentState, StateError, write_private_file
from agent.tpm import TruckTpm
from tlog.checkpoint import VerifiedCheckpoint, verify_checkpoint
from tlog.errors import TlogError
from tlog.merkle import leaf_hash
from tlog.note import VerifierKey
from tlog.statement import StatementCheckpoint, StatementKind, build_statement, statement_hash

CHAIN_FILE = "statements.json"
PENDING_FILE = "statement-pending.json"
ENTRY_KIND = "truck.statement"
_POLL_SECONDS = 0.5


@dataclass(frozen=True)
class ChainState:
    """The truck's side of its statement chain, and the log key it trusts."""

    sequence: int = 0
    previous: bytes | None = None
    log_key: str | None = None

    @classmethod
    def load(cls, directory: Path) -> ChainState:
        path = directory / CHAIN_FILE
        if not path.exists():
            return cls()
        try:
            document = json.loads(path.read_bytes())
            sequence, previous, key = document["sequence"], document["previous"], document["log_key"]
            if not isinstance(sequence, int) or sequence < 0 or not isinstance(previous, str):
                raise StateError(f"{CHAIN_FILE}: bad sequence or previous")
            if key is not None and not isinstance(key, str):
                raise StateError(f"{CHAIN_FILE}: bad log_key")
            return cls(sequence, bytes.fromhex(previous) if previous else None, key)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StateError(f"{CHAIN_FILE} is unreadable: {exc}") from None

    def save(self, directory: Path) -> None:
        document = {
            "sequence": self.sequence,
            "previous": self.previous.hex() if self.previous else "",
            "log_key": self.log_key,
        }
        write_private_file(directory / CHAIN_FILE, json.dumps(document, indent=2).encode() + b"\n")


@dataclass(frozen=True)
class Signed:
    statement: bytes
    signature: bytes


def _unb64(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise BadServerResponse(f"receipt: {what} is not a string")
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error as exc:
        raise BadServerResponse(f"receipt: {what} is not base64: {exc}") from None


def pin_log_key(client: EnrollmentClient, chain: ChainState, given: str | None) -> tuple[VerifierKey, str]:
    """The log key to trust and how it came to be trusted ("given", "pinned" or "first-use")."""
    try:
        if given is not None:
            key = VerifierKey.parse(given.strip())
            if chain.log_key is not None and VerifierKey.parse(chain.log_key) != key:
                raise StateError("--log-key differs from the log key pinned in the state dir")
            return key, "given"
        if chain.log_key is not None:
            return VerifierKey.parse(chain.log_key), "pinned"
        return VerifierKey.parse(client.log_key()), "first-use"
    except TlogError as exc:
        raise StateError(f"log key: {exc.reason}") from None


def verify_receipt(
    body: Mapping[str, Any], signed: Signed, identity: ec.EllipticCurvePublicKey, key: VerifierKey
) -> VerifiedCheckpoint:
    """Check the server's answer proves our statement is in the log; the checkpoint that proves it."""
    receipt = body.get("receipt")
    if not isinstance(receipt, dict):
        raise BadServerResponse("the answer carries no receipt")
    if body.get("statement_sha256") != statement_hash(signed.statement).hex():
        raise BadServerResponse("the receipt is for another statement")
    # The entry is our exact statement with a signature by our identity key (the first one logged).
    entry = _unb64(receipt.get("entry"), "entry")
    try:
        logged = json.loads(entry)
    except ValueError as exc:
        raise BadServerResponse(f"receipt: the entry is not JSON: {exc}") from None
    if not isinstance(logged, dict) or logged.get("kind") != ENTRY_KIND:
        raise BadServerResponse("receipt: the entry is not a truck statement")
    if _unb64(logged.get("statement"), "entry statement") != signed.statement:
        raise BadServerResponse("receipt: the logged statement is not ours")
    try:
        identity.verify(
            _unb64(logged.get("signature"), "entry signature"), signed.statement, ec.ECDSA(hashes.SHA256())
        )
    except InvalidSignature:
        raise BadServerResponse("receipt: the logged signature is not by our identity key") from None
    # The leaf is that entry, the checkpoint is signed by the pinned key, the proof leads to its root.
    leaf = leaf_hash(entry)
    if _unb64(receipt.get("leaf_hash"), "leaf_hash") != leaf:
        raise BadServerResponse("receipt: leaf_hash is not the hash of the entry")
    if receipt.get("log_key") != str(key):
        raise BadServerResponse("receipt: signed by another log key than the pinned one")
    index, proof = receipt.get("index"), receipt.get("inclusion_proof")
    if (
        not isinstance(index, int)
        or not isinstance(proof, list)
        or not isinstance(receipt.get("checkpoint"), str)
    ):
        raise BadServerResponse("receipt: index, inclusion_proof or checkpoint malformed")
    try:
        checkpoint = verify_checkpoint(str(receipt["checkpoint"]).encode(), [key], origin=key.name)
        checkpoint.verify_inclusion(leaf, index, [_unb64(h, "proof hash") for h in proof])
    except TlogError as exc:
        raise BadServerResponse(f"receipt does not verify: {exc.code}: {exc.reason}") from None
    return checkpoint


def _receipt_of(
    client: EnrollmentClient, truck: str, sequence: int, body: dict[str, Any], timeout: float
) -> dict[str, Any]:
    """The answer with a receipt: 202's are polled at their URL until sequenced or `timeout`."""
    deadline = time.monotonic() + timeout
    while body.get("status") != "sequenced":
        if time.monotonic() > deadline:
            raise BadServerResponse(
                f"statement {sequence} was not sequenced within {timeout:.0f} s; retry later"
            )
        time.sleep(_POLL_SECONDS)
        body = client.statement(truck, sequence)
    return body


def _send(
    client: EnrollmentClient,
    state: AgentState,
    signed: Signed,
    *,
    sequence: int,
    key: VerifierKey,
    timeout: float,
    evidence_pem: str | None = None,
) -> tuple[dict[str, Any], VerifiedCheckpoint]:
    assert state.certificate_pem is not None
    truck = state.truck
    body = client.submit_statement(
        truck,
        signed.statement,
        signed.signature,
        state.certificate_pem.decode(),
        evidence_certificate_pem=evidence_pem,
    )
    body = _receipt_of(client, truck, sequence, body, timeout)
    identity = x509.load_pem_x509_certificate(state.certificate_pem).public_key()
    if not isinstance(identity, ec.EllipticCurvePublicKey):
        raise StateError("the identity certificate's key is not an EC key")
    return body, verify_receipt(body, signed, identity, key)


def _advance(state_dir: Path, chain: ChainState, signed: Signed, sequence: int) -> ChainState:
    advanced = ChainState(sequence, statement_hash(signed.statement), chain.log_key)
    advanced.save(state_dir)
    (state_dir / PENDING_FILE).unlink(missing_ok=True)
    return advanced


def _resume(
    client: EnrollmentClient,
    state: AgentState,
    state_dir: Path,
    chain: ChainState,
    *,
    key: VerifierKey,
    timeout: float,
) -> ChainState:
    """Finish a statement an interrupted run signed and sent, but could not record."""
    path = state_dir / PENDING_FILE
    if not path.exists():
        return chain
    try:
        document = json.loads(path.read_bytes())
        signed = Signed(base64.b64decode(document["statement"]), base64.b64decode(document["signature"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StateError(f"{PENDING_FILE} is unreadable: {exc}") from None
    sequence = chain.sequence + 1
    try:
        _send(client, state, signed, sequence=sequence, key=key, timeout=timeout)
    except EnrollmentRefused:
        # Never accepted: the chain stays where it was.
        path.unlink()
        return chain
    return _advance(state_dir, chain, signed, sequence)


def submit(
    tpm: TruckTpm,
    client: EnrollmentClient,
    state: AgentState,
    state_dir: Path,
    *,
    kind: StatementKind,
    payload: bytes,
    name: str,
    log_key: str | None = None,
    timeout: float = 30.0,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> dict[str, Any]:
    """Sign, submit and verify one statement; the receipt as printed by `weighstation agent submit`.
    `client` must sign its truck calls (agent.request_auth.as_truck): the authority refuses unsigned ones."""
    truck = state.truck
    chain = ChainState.load(state_dir)
    key, pinned_by = pin_log_key(client, chain, log_key)
    if chain.log_key is None:
        chain = ChainState(chain.sequence, chain.previous, str(key))
        chain.save(state_dir)
    chain = _resume(client, state, state_dir, chain, key=key, timeout=timeout)
    # 2. The latest checkpoint, verified, is the statement's not-before bound.
    try:
        seen = verify_checkpoint(client.log_checkpoint(), [key], origin=key.name)
    except TlogError as exc:
        raise BadServerResponse(f"the log's checkpoint does not verify: {exc.code}: {exc.reason}") from None
    # 3. Build and sign.
    sequence = chain.sequence + 1
    try:
        statement = build_statement(
            name=name,
            payload_sha256=hashlib.sha256(payload).digest(),
            kind=kind,
            truck=truck,
            sequence=sequence,
            previous=chain.previous,
            checkpoint=StatementCheckpoint(seen.origin, seen.size, seen.root_hash),
            issued_at=clock(),
        )
    except TlogError as exc:
        raise StateError(f"cannot build the statement: {exc.reason}") from None
    signature = tpm.identity_signer(state.identity).sign(statement, ec.ECDSA(hashes.SHA256()))
    signed = Signed(statement, signature)
    # With a current evidence certificate, the server also keeps the statement's Sigstore bundle.
    evidence = evidence_certificate(state, state_dir, clock())
    # 4. Pending first, so an interrupted run resubmits these exact bytes instead of forking the chain.
    pending = {
        "statement": base64.b64encode(statement).decode(),
        "signature": base64.b64encode(signature).decode(),
    }
    write_private_file(state_dir / PENDING_FILE, json.dumps(pending).encode())
    try:
        body, checkpoint = _send(
            client, state, signed, sequence=sequence, key=key, timeout=timeout, evidence_pem=evidence
        )
    except EnrollmentRefused:
        (state_dir / PENDING_FILE).unlink(missing_ok=True)
        raise
    # 6. Verified: advance the chain.
    _advance(state_dir, chain, signed, sequence)
    receipt = body["receipt"]
    return {
        "truck": truck,
        "sequence": sequence,
        "kind": kind,
        "name": name,
        "payload_sha256": hashlib.sha256(payload).hexdigest(),
        "statement_sha256": statement_hash(statement).hex(),
        "statement": base64.b64encode(statement).decode(),
        "signature": base64.b64encode(signature).decode(),
        "receipt": {
            "index": receipt["index"],
            "leaf_hash": receipt["leaf_hash"],
            "inclusion_proof": receipt["inclusion_proof"],
            "checkpoint": receipt["checkpoint"],
            "log_key": receipt["log_key"],
            "entry": receipt["entry"],
        },
        "verified": {"checkpoint_size": checkpoint.size, "origin": checkpoint.origin, "log_key": pinned_by},
        "sigstore_bundle": f"/v1/trucks/{quote(truck, safe='')}/statements/{sequence}/sigstore"
        if evidence is not None
        else None,
    }
