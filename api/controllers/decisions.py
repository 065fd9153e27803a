"""The decision API for brokers and TMSs: may the authenticated client dispatch these trucks now?"""

from __future__ import annotations

from typing import Any

from litestar import Request, post

from api.attest_schemas import BatchDecisionIn, DecisionIn, DecisionOut, TenderIn
from api.problems import problems
from api.scopes import NEEDS_DECISIONS
from api.services import actor_of, services_of
from policies.entities import ClientPrincipal, TenderState
from provision.decisions import DecisionView


def _tender(tender: TenderIn | None) -> TenderState | None:
    if tender is None:
        return None
    return TenderState(id=tender.id, hazmat=tender.hazmat, lanes=frozenset(tender.lanes), fleet=tender.fleet)


def _client(request: Request[Any, Any, Any]) -> str | ClientPrincipal:
    """The principal the route guard read for this request, else the token's client id (read again)."""
    client: ClientPrincipal | None = getattr(request.state, "client", None)
    if client is not None and client.id == request.state.client_id:
        return client
    client_id: str = request.state.client_id
    return client_id


def _out(view: DecisionView) -> DecisionOut:
    return DecisionOut(
        truck=view.truck,
        decision="allow" if view.allowed else "deny",
        reasons=list(view.reasons),
        evaluated=view.evaluated,
        policy_version=view.policy_version,
    )


@post(
    "/v1/decisions",
    operation_id="decide",
    security=NEEDS_DECISIONS,
    tags=["decisions"],
    status_code=200,
    summary="May the calling client dispatch this truck (or accept this tender for it) now?",
    responses=problems(400, 401, 403, 404),
)
async def decide(request: Request[Any, Any, Any], data: DecisionIn) -> DecisionOut:
    services = services_of(request)
    views = await services.decisions.decide_async(
        actor_of(request),
        _client(request),
        data.action,
        [data.truck],
        _tender(data.tender),
    )
    return _out(views[0])


@post(
    "/v1/decisions/batch",
    operation_id="decideBatch",
    security=NEEDS_DECISIONS,
    tags=["decisions"],
    status_code=200,
    summary="The same question for up to 1,000 trucks at once",
    responses=problems(400, 401, 403, 404),
)
async def decide_batch(request: Request[Any, Any, Any], data: BatchDecisionIn) -> list[DecisionOut]:
    services = services_of(request)
    views = await services.decisions.decide_async(
        actor_of(request),
        _client(request),
        data.action,
        data.trucks,
        _tender(data.tender),
    )
    return [_out(view) for view in views]
