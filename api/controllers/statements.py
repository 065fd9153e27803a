"""Truck statements over HTTP: submit a signed mission manifest or telemetry snapshot and get its
receipt (index, inclusion proof, signed checkpoint, log key), read one back by sequence, read a truck's
chain head and the forks it signed. The statement's signature authenticates the truck."""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import quote

from litestar import Controller, Request, Response, get, post
from litestar.concurrency import sync_to_thread
from litestar.params import Parameter

from api.problems import problems
from api.scopes import TRUCK_RECORDS, TRUCK_SELF
from api.services import actor_of, services_of
from api.statement_schemas import ChainOut, ForkOut, ReceiptOut, StatementIn, StatementOut
from provision.statements import ChainView, StatementView
from tlog.merkle import MAX_TREE_SIZE

TruckParam = Parameter(description="Truck id", max_length=64)
SequenceParam = Parameter(ge=1, le=MAX_TREE_SIZE, description="The statement's sequence in the truck's chain")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def statement_url(truck: str, sequence: int) -> str:
    return f"/v1/trucks/{quote(truck, safe='')}/statements/{sequence}"


def statement_out(view: StatementView) -> StatementOut:
    receipt = view.receipt
    return StatementOut(
        truck=view.truck,
        sequence=view.sequence,
        kind=view.kind,
        statement_sha256=view.sha256.hex(),
        status="sequenced" if receipt is not None else "pending",
        receipt=ReceiptOut(
            index=receipt.index,
            leaf_hash=_b64(receipt.leaf_hash),
            inclusion_proof=[_b64(h) for h in receipt.proof],
            checkpoint=receipt.checkpoint.decode("utf-8"),
            log_key=receipt.log_key,
            entry=_b64(receipt.entry),
        )
        if receipt is not None
        else None,
        receipt_url=statement_url(view.truck, view.sequence),
        statement=view.statement,
        signature=view.signature,
        certificate_chain_pem=view.certificate_chain_pem,
        certificate_serial=view.certificate_serial,
        certificate_status=view.certificate_status,
        submitted_at=view.submitted_at,
    )


def _chain(view: ChainView) -> ChainOut:
    return ChainOut(
        truck=view.truck,
        sequence=view.sequence,
        head_sha256=view.head_sha256,
        updated_at=view.updated_at,
        chain_broken_at=view.chain_broken_at,
        forks=[
            ForkOut(
                sequence=f.sequence,
                refused_sha256=f.refused_sha256,
                held_sha256=f.held_sha256,
                previous=f.previous,
                detected_at=f.detected_at,
            )
            for f in view.forks
        ],
    )


class StatementController(Controller):
    path = "/v1/trucks"
    tags = ("statements",)

    @post(
        "/{truck:str}/statements",
        operation_id="submitStatement",
        security=TRUCK_SELF,
        summary="Submit a truck-signed statement: 201 with its receipt, 200 with the first receipt for a "
        "repeat, 202 with a URL to poll when the log has not sequenced it within a few seconds",
        responses=problems(400, 403, 404, 409, 422),
    )
    async def submit(
        self, request: Request[Any, Any, Any], data: StatementIn, truck: str = TruckParam
    ) -> Response[StatementOut]:
        services = services_of(request)
        view = await sync_to_thread(
            services.statements.submit,
            actor_of(request),
            truck,
            data.statement,
            data.signature,
            data.certificate_chain_pem,
            evidence_certificate_pem=data.evidence_certificate_pem,
        )
        url = statement_url(view.truck, view.sequence)
        if view.receipt is None:
            status, headers = 202, {"Location": url, "Retry-After": "1"}
        else:
            status, headers = (200 if view.repeated else 201), {"Location": url}
        return Response(statement_out(view), status_code=status, headers=headers)

    @get(
        "/{truck:str}/statements/{sequence:int}",
        operation_id="getStatement",
        security=TRUCK_RECORDS,
        sync_to_thread=True,
        summary="One statement of the truck's chain with its receipt once sequenced (status pending before)",
        responses=problems(400, 404),
    )
    def show(
        self, request: Request[Any, Any, Any], truck: str = TruckParam, sequence: int = SequenceParam
    ) -> Response[StatementOut]:
        view = services_of(request).statements.get(truck, sequence)
        headers = {"Retry-After": "1"} if view.receipt is None else None
        return Response(statement_out(view), headers=headers)

    @get(
        "/{truck:str}/statements",
        operation_id="getStatementChain",
        security=TRUCK_RECORDS,
        sync_to_thread=True,
        summary="The truck's statement chain: head sequence and hash, and every fork it signed",
        responses=problems(404),
    )
    def chain(self, request: Request[Any, Any, Any], truck: str = TruckParam) -> ChainOut:
        return _chain(services_of(request).statements.chain(truck))
