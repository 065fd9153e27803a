"""Evidence bundles and the trust file an insurer verifies them with (formats: tlog/bundle.py).

A bundle is assembled from what the log already holds: the statement's entry, the attestation result
that covered the truck when the statement was logged (its entry and its token), inclusion proofs of
both against the latest checkpoint, the signing certificate's issuing CA, and, when the insurer names
a checkpoint size it already holds, a consistency proof between that size and the bundle's.

The trust file lists every key an old bundle may need: all root CAs the hierarchy has had, the log's
verifier key and every attestation-result key ever used (the JWKS drops retired keys once their
tokens expire; a dispute may come years later).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from pki.jws import ec_jwk
from provision.authority import Authority
from provision.errors import ProvisionError
from provision.sequencer import ENTRIES
from provision.statements import Statements, StatementView
from provision.tables import AttestationResult
from provision.tlog_store import TransparencyLog
from provision.token_keys import RESULTS, TokenKeys
from tlog.bundle import BUNDLE_MEDIA_TYPE, RESULT_ENTRY, TRUST_MEDIA_TYPE
from tlog.checkpoint import verify_checkpoint
from tlog.note import VerifierKey


class StatementNotLogged(ProvisionError):
    """The statement is stored but the sequencer has not logged it yet: no bundle can prove it."""

    code = "statement-not-logged"
    kind = "conflict"


class HeldCheckpointBeyondLog(ProvisionError):
    """The insurer's checkpoint size is larger than the log this authority has published."""

    code = "checkpoint-beyond-log"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@dataclass(frozen=True)
class BundleView:
    truck: str
    sequence: int
    index: int
    size: int
    document: bytes  # the bundle file (JSON)


class EvidenceBundles:
    def __init__(
        self,
        engine: Engine,
        authority: Authority,
        statements: Statements,
        log: TransparencyLog,
        token_keys: TokenKeys,
        *,
        result_issuer: str,
        clock: Callable[[], datetime],
    ) -> None:
        self._engine = engine
        self._authority = authority
        self._statements = statements
        self._log = log
        self._token_keys = token_keys
        self._result_issuer = result_issuer
        self._clock = clock

    # -- bundles -----------------------------------------------------------------------------------

    def bundle(self, truck_id: str, sequence: int, *, held_size: int | None = None) -> BundleView:
        """The evidence bundle of one truck statement, proven against the latest checkpoint."""
        statement = self._statements.get(truck_id, sequence)
        if statement.receipt is None:
            raise StatementNotLogged(
                f"statement {sequence} of truck {truck_id} is stored but not logged yet; retry shortly"
            )
        note = self._log.checkpoint()
        key = self._log.verifier_key()
        size = verify_checkpoint(note, [key], origin=key.name).size
        if held_size is not None and not 0 < held_size <= size:
            raise HeldCheckpointBeyondLog(
                f"checkpoint size {held_size} is not in the published log of {size}"
            )
        index = statement.receipt.index
        document: dict[str, object] = {
            "mediaType": BUNDLE_MEDIA_TYPE,
            "checkpoint": note.decode("utf-8"),
            "statement": {
                "index": index,
                "entry": _b64(statement.receipt.entry),
                "proof": [_b64(h) for h in self._log.inclusion(index, size).proof],
            },
            "chain": [_b64(c.public_bytes(serialization.Encoding.DER)) for c in self._chain(statement)],
            "attestation": self._covering_result(statement, index, size),
            "consistency": None,
        }
        if held_size is not None:
            _, _, proof = self._log.consistency(held_size, size)
            document["consistency"] = {"size": held_size, "proof": [_b64(h) for h in proof]}
        body = json.dumps(document, indent=1, sort_keys=True).encode("utf-8")
        return BundleView(truck_id, sequence, index, size, body)

    def _chain(self, statement: StatementView) -> list[x509.Certificate]:
        """The issuing CAs between the signing certificate and a root (roots are in the trust file)."""
        certs = x509.load_pem_x509_certificates(statement.certificate_chain_pem.encode())
        issuers = {
            view.certificate.subject: view.certificate
            for view in self._authority.cas.authorities()
            if view.kind != "root"
        }
        chain: list[x509.Certificate] = []
        issuer = issuers.get(certs[0].issuer)
        while issuer is not None and issuer not in chain:
            chain.append(issuer)
            issuer = issuers.get(issuer.issuer)
        return chain

    def _covering_result(self, statement: StatementView, index: int, size: int) -> dict[str, object] | None:
        """The latest attestation result of the truck that was in date when the statement was logged,
        with its log entry (found among the entries logged at its issue time) and inclusion proof."""
        at = statement.submitted_at
        with Session(self._engine) as session:
            result = session.exec(
                select(AttestationResult)
                .where(
                    col(AttestationResult.truck_id) == statement.truck,
                    col(AttestationResult.issued_at) <= at,
                    col(AttestationResult.expires_at) > at,
                )
                .order_by(col(AttestationResult.issued_at).desc())
                .limit(1)
            ).first()
            if result is None:
                return None
            rows = session.connection().execute(
                select(ENTRIES.c.idx, ENTRIES.c.entry).where(
                    ENTRIES.c.kind == RESULT_ENTRY,
                    ENTRIES.c.created_at == result.issued_at,
                    ENTRIES.c.idx < index,
                )
            )
            for row_index, entry in rows:
                logged = json.loads(bytes(entry))
                if logged.get("result") == result.id:
                    return {
                        "index": row_index,
                        "entry": _b64(bytes(entry)),
                        "proof": [_b64(h) for h in self._log.inclusion(row_index, size).proof],
                        "token": result.token,
                    }
        return None

    # -- trust ----------------------------------------------------------------------------------------

    def trust(self) -> bytes:
        """The trust file: log origin and key, every root CA, every attestation-result key ever used."""
        key: VerifierKey = self._log.verifier_key()
        roots = [
            view.certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")
            for view in self._authority.cas.authorities()
            if view.kind == "root"
        ]
        result_keys = [ec_jwk(public, kid=kid) for kid, public in self._token_keys.every_key(RESULTS).items()]
        document = {
            "mediaType": TRUST_MEDIA_TYPE,
            "log": {"origin": key.name, "keys": [str(key)]},
            "certificate_authorities": roots,
            "result_tokens": {"issuer": self._result_issuer, "keys": result_keys},
        }
        return json.dumps(document, indent=1, sort_keys=True).encode("utf-8")
