"""Evidence for insurers: the bundle that proves one truck statement offline, and the trust file that
`weighstation verify` checks bundles against (formats: tlog/bundle.py)."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, get
from litestar.params import Parameter

from api.controllers.statements import SequenceParam, TruckParam
from api.problems import problems
from api.scopes import NEEDS_EVIDENCE_READ, PUBLIC
from api.services import services_of
from tlog.bundle import BUNDLE_MEDIA_TYPE, TRUST_MEDIA_TYPE
from tlog.merkle import MAX_TREE_SIZE

HeldSizeParam = Parameter(
    query="consistency_with",
    ge=1,
    le=MAX_TREE_SIZE,
    required=False,
    description="Size of a checkpoint you already hold: the bundle adds a consistency proof to it",
)


class EvidenceController(Controller):
    path = "/v1"
    tags = ("evidence",)

    @get(
        "/trucks/{truck:str}/statements/{sequence:int}/bundle",
        operation_id="getEvidenceBundle",
        security=NEEDS_EVIDENCE_READ,
        sync_to_thread=True,
        media_type=BUNDLE_MEDIA_TYPE,
        summary="The evidence bundle of one truck statement, verifiable offline with `weighstation verify`",
        responses=problems(400, 401, 403, 404, 409),
    )
    def bundle(
        self,
        request: Request[Any, Any, Any],
        truck: str = TruckParam,
        sequence: int = SequenceParam,
        held_size: int | None = HeldSizeParam,
    ) -> Response[bytes]:
        view = services_of(request).evidence.bundle(truck, sequence, held_size=held_size)
        filename = f"{truck}-{sequence}.evidence.json"
        return Response(
            view.document,
            media_type=BUNDLE_MEDIA_TYPE,
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )

    @get(
        "/evidence/trust",
        operation_id="getEvidenceTrust",
        security=PUBLIC,
        sync_to_thread=True,
        media_type=TRUST_MEDIA_TYPE,
        summary="The trust file for `weighstation verify`: log origin and key, roots, every result-token key",
        responses=problems(503),
    )
    def trust(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        return Response(services_of(request).evidence.trust(), media_type=TRUST_MEDIA_TYPE)
