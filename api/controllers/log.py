"""The transparency log's public read API (no auth): the signed checkpoint, c2sp tlog-tiles tiles and
entry bundles, entries, inclusion and consistency proofs, and the log's verifier key.

Hashes and entry bytes are standard base64 in JSON (as in checkpoints); a leaf hash parameter may be
hex or base64. Bad parameters are problem+json with the stable code of the `tlog.errors` class.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Any

import msgspec
from litestar import Controller, Request, Response, get
from litestar.params import Parameter

from api.problems import problem_response, problems
from api.services import services_of
from tlog.errors import InvalidTilePath, MalformedHash, ProofRequestInvalid, TlogError
from tlog.merkle import HASH_SIZE, MAX_TREE_SIZE

_TEXT = "text/plain; charset=utf-8"
_BINARY = "application/octet-stream"
_IMMUTABLE = "public, max-age=31536000, immutable"
_FRESH = "no-cache"
_STATUS = {"not_found": 404, "unavailable": 503, "forbidden": 403, "conflict": 409}
# Malformed input is a 400; a well-formed request no tree can answer (index past size, ...) a 422.
_MALFORMED = (InvalidTilePath, MalformedHash)


class EntryOut(msgspec.Struct, kw_only=True):
    index: int
    leaf_hash: str
    kind: str
    entry: str
    checkpoint_size: int
    created_at: datetime


class InclusionOut(msgspec.Struct, kw_only=True):
    index: int
    tree_size: int
    leaf_hash: str
    hashes: list[str]


class ConsistencyOut(msgspec.Struct, kw_only=True):
    first: int
    second: int
    hashes: list[str]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def parse_leaf_hash(text: str) -> bytes:
    """64 hex digits, or base64 (standard or URL-safe, padded or not) of 32 bytes."""
    value = text.strip()
    try:
        if len(value) == 2 * HASH_SIZE:
            return bytes.fromhex(value)
        padded = value + "=" * (-len(value) % 4)
        decoded = base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
    except (ValueError, binascii.Error):
        decoded = b""
    if len(decoded) != HASH_SIZE:
        raise MalformedHash("leaf_hash must be 32 bytes as 64 hex digits or base64")
    return decoded


def handle_tlog_error(request: Request[Any, Any, Any], exc: TlogError) -> Response[bytes]:
    status = 400 if isinstance(exc, _MALFORMED) else _STATUS.get(exc.kind, 422)
    headers = {"Retry-After": "5"} if exc.kind == "unavailable" else None
    return problem_response(status, exc.code, exc.reason, request, headers=headers)


Index = Parameter(ge=0, le=MAX_TREE_SIZE, description="Leaf index")


class LogController(Controller):
    path = "/v1/log"
    tags = ("log",)

    @get(
        "/checkpoint",
        operation_id="getLogCheckpoint",
        sync_to_thread=True,
        media_type=_TEXT,
        summary="The latest checkpoint (c2sp.org/tlog-checkpoint signed note)",
        responses=problems(503),
    )
    def checkpoint(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        note = services_of(request).log.checkpoint()
        return Response(note, media_type=_TEXT, headers={"Cache-Control": _FRESH})

    @get(
        "/key",
        operation_id="getLogKey",
        sync_to_thread=True,
        media_type=_TEXT,
        summary="The log's signed-note verifier key (<origin>+<key id>+<base64 key>)",
        responses=problems(503),
    )
    def key(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        text = str(services_of(request).log.verifier_key())
        return Response(f"{text}\n".encode(), media_type=_TEXT)

    @get(
        "/tile/{path:path}",
        operation_id="getLogTile",
        sync_to_thread=True,
        media_type=_BINARY,
        summary="A hash tile tile/<L>/<N>[.p/<W>] or an entry bundle tile/entries/<N>[.p/<W>]",
        responses=problems(400, 404, 503),
    )
    def tile(self, request: Request[Any, Any, Any], path: str) -> Response[bytes]:
        view = services_of(request).log.tile("tile/" + path.lstrip("/"))
        cache = _IMMUTABLE if view.immutable else _FRESH
        return Response(view.data, media_type=_BINARY, headers={"Cache-Control": cache})

    @get(
        "/entries/{index:int}",
        operation_id="getLogEntry",
        sync_to_thread=True,
        summary="One entry with its leaf hash",
        responses=problems(400, 404, 503),
    )
    def entry(self, request: Request[Any, Any, Any], index: int = Index) -> EntryOut:
        view = services_of(request).log.entry(index)
        return EntryOut(
            index=view.index,
            leaf_hash=_b64(view.leaf_hash),
            kind=view.kind,
            entry=_b64(view.entry),
            checkpoint_size=view.checkpoint_size,
            created_at=view.created_at,
        )

    @get(
        "/proof/inclusion",
        operation_id="getLogInclusionProof",
        sync_to_thread=True,
        summary="Inclusion proof (RFC 9162) by index or leaf hash, to the tree of `size` (default latest)",
        responses=problems(400, 404, 422, 503),
    )
    def inclusion(
        self,
        request: Request[Any, Any, Any],
        index: int | None = Parameter(ge=0, le=MAX_TREE_SIZE, default=None, required=False),
        leaf_hash: str | None = Parameter(max_length=128, default=None, required=False),
        size: int | None = Parameter(ge=0, le=MAX_TREE_SIZE, default=None, required=False),
    ) -> InclusionOut:
        log = services_of(request).log
        if index is not None and leaf_hash is None:
            view = log.inclusion(index, size)
        elif leaf_hash is not None and index is None:
            view = log.inclusion_by_hash(parse_leaf_hash(leaf_hash), size)
        else:
            raise ProofRequestInvalid("give exactly one of index and leaf_hash")
        return InclusionOut(
            index=view.index,
            tree_size=view.size,
            leaf_hash=_b64(view.leaf_hash),
            hashes=[_b64(h) for h in view.proof],
        )

    @get(
        "/proof/consistency",
        operation_id="getLogConsistencyProof",
        sync_to_thread=True,
        summary="Consistency proof (RFC 9162) from the tree of `first` to that of `second` (default latest)",
        responses=problems(400, 422, 503),
    )
    def consistency(
        self,
        request: Request[Any, Any, Any],
        first: int = Parameter(ge=0, le=MAX_TREE_SIZE),
        second: int | None = Parameter(ge=0, le=MAX_TREE_SIZE, default=None, required=False),
    ) -> ConsistencyOut:
        size1, size2, proof = services_of(request).log.consistency(first, second)
        return ConsistencyOut(first=size1, second=size2, hashes=[_b64(h) for h in proof])
