"""Operator calls: fleets, their insurance coverage, trucks and their profile, enrollment tokens and
hardware-swap approvals."""

from __future__ import annotations

from datetime import timedelta
from functools import partial
from typing import Any, TypeVar

import msgspec
from litestar import Controller, Request, Response, get, post, put
from litestar.concurrency import sync_to_thread
from litestar.params import Parameter

from api.fleet_schemas import (
    CoverageIn,
    CoverageOut,
    FleetIn,
    FleetOut,
    SwapIn,
    SwapOut,
    TokenIn,
    TokenOut,
    TruckIn,
    TruckOut,
    TruckProfileIn,
)
from api.idempotency import IdempotencyKey, idempotent
from api.problems import problems
from api.scopes import NEEDS_ADMIN, NEEDS_FLEETS
from api.services import actor_of, services_of
from policies.entities import ClientPrincipal
from provision.coverage import Cover, CoverageView
from provision.fleets import FleetView, SwapView, TruckView
from provision.idempotency import Pending

Out = TypeVar("Out", bound=msgspec.Struct)
FleetParam = Parameter(description="Fleet id", max_length=64)
TruckParam = Parameter(description="Truck id", max_length=64)


def out(view: object, out_type: type[Out]) -> Out:
    """A use-case view (a dataclass with the same field names) as its wire body."""
    return msgspec.convert(view, out_type, from_attributes=True)


def _fleet(view: FleetView) -> FleetOut:
    return out(view, FleetOut)


def _truck(view: TruckView) -> TruckOut:
    return out(view, TruckOut)


def _swap(view: SwapView) -> SwapOut:
    return out(view, SwapOut)


def _coverage(view: CoverageView) -> CoverageOut:
    return out(view, CoverageOut)


class FleetController(Controller):
    path = "/v1/fleets"
    tags = ("fleets",)

    @post(
        "/",
        operation_id="createFleet",
        security=NEEDS_ADMIN,
        summary="Create a fleet",
        responses=problems(400, 401, 403, 409),
    )
    async def create(
        self, request: Request[Any, Any, Any], data: FleetIn, idempotency_key: str | None = IdempotencyKey
    ) -> Response[FleetOut]:
        async def run(pending: Pending[FleetView] | None) -> FleetView:
            create = partial(services_of(request).fleets.create_fleet, idempotency=pending)
            return await sync_to_thread(create, actor_of(request), data.id, data.name)

        return await idempotent(
            request,
            "createFleet",
            key=idempotency_key,
            out_type=FleetOut,
            status_code=201,
            run=run,
            render=_fleet,
        )

    @get(
        "/",
        operation_id="listFleets",
        security=NEEDS_FLEETS,
        sync_to_thread=True,
        summary="List the fleets the caller may see",
        description="Only the fleets the caller may look up (getFleet): a fleet operator its own, the "
        "global admin every one.",
        responses=problems(401, 403),
    )
    def list_fleets(self, request: Request[Any, Any, Any]) -> list[FleetOut]:
        """Only the fleets the caller may getFleet: the guard allowed the listing, not every fleet."""
        services = services_of(request)
        # The client the guard read and allowed for this request; without one (a principal that is no
        # client) there is nobody to decide getFleet for, and the listing is empty (fail closed).
        client: ClientPrincipal | None = getattr(request.state, "client", None)
        if client is None or client.id != getattr(request.state, "client_id", None):
            return []
        visible = services.fleets.fleets_visible_to(services.policies.engine, client)
        return [_fleet(view) for view in visible]

    @get(
        "/{fleet:str}",
        operation_id="getFleet",
        security=NEEDS_FLEETS,
        sync_to_thread=True,
        summary="Look up a fleet",
        responses=problems(401, 403, 404),
    )
    def show(self, request: Request[Any, Any, Any], fleet: str = FleetParam) -> FleetOut:
        return _fleet(services_of(request).fleets.fleet(fleet))

    @get(
        "/{fleet:str}/insurance-policies",
        operation_id="getFleetInsurancePolicies",
        security=NEEDS_FLEETS,
        sync_to_thread=True,
        summary="The insurance policies covering a fleet, with their validity",
        responses=problems(401, 403, 404),
    )
    def insurance_policies(self, request: Request[Any, Any, Any], fleet: str = FleetParam) -> CoverageOut:
        return _coverage(services_of(request).coverage.coverage(fleet))

    @put(
        "/{fleet:str}/insurance-policies",
        operation_id="setFleetInsurancePolicies",
        security=NEEDS_FLEETS,
        sync_to_thread=True,
        summary="Replace the insurance policies covering a fleet (every cover, past ones included)",
        description="An insurer's client reads the evidence of a statement when one of its "
        "`insurer_policies` covered the truck's fleet at the statement's submission: from `valid_from` "
        "(inclusive) until `valid_until` (exclusive; null: no end yet). Covers of one policy number must "
        "not overlap. Idempotent: the body is the whole list.",
        responses=problems(400, 401, 403, 404, 422),
    )
    def set_insurance_policies(
        self, request: Request[Any, Any, Any], data: CoverageIn, fleet: str = FleetParam
    ) -> CoverageOut:
        covers = [Cover(c.policy_number, c.valid_from, c.valid_until) for c in data.policies]
        return _coverage(services_of(request).coverage.replace(actor_of(request), fleet, covers))

    @post(
        "/{fleet:str}/trucks",
        operation_id="registerTruck",
        security=NEEDS_FLEETS,
        summary="Register a truck (VIN, model; optionally pin its EK by SPKI SHA-256)",
        responses=problems(400, 401, 403, 404, 409),
    )
    async def register_truck(
        self,
        request: Request[Any, Any, Any],
        data: TruckIn,
        fleet: str = FleetParam,
        idempotency_key: str | None = IdempotencyKey,
    ) -> Response[TruckOut]:
        async def run(pending: Pending[TruckView] | None) -> TruckView:
            register = partial(
                services_of(request).fleets.register_truck,
                truck_id=data.id,
                vin=data.vin,
                model=data.model,
                expected_ek_sha256=data.ek_sha256,
                idempotency=pending,
            )
            return await sync_to_thread(register, actor_of(request), fleet)

        return await idempotent(
            request,
            "registerTruck",
            key=idempotency_key,
            out_type=TruckOut,
            status_code=201,
            run=run,
            render=_truck,
        )

    @get(
        "/{fleet:str}/trucks",
        operation_id="listTrucks",
        security=NEEDS_FLEETS,
        sync_to_thread=True,
        summary="List a fleet's trucks",
        responses=problems(401, 403, 404),
    )
    def trucks(self, request: Request[Any, Any, Any], fleet: str = FleetParam) -> list[TruckOut]:
        return [_truck(view) for view in services_of(request).fleets.trucks(fleet)]


class TruckController(Controller):
    path = "/v1/trucks"
    tags = ("fleets",)

    @get(
        "/{truck:str}",
        operation_id="getTruck",
        security=NEEDS_FLEETS,
        sync_to_thread=True,
        summary="A truck, its state and its enrolled hardware (EK, AK, certificate)",
        responses=problems(401, 403, 404),
    )
    def show(self, request: Request[Any, Any, Any], truck: str = TruckParam) -> TruckOut:
        return _truck(services_of(request).fleets.truck(truck))

    @put(
        "/{truck:str}/profile",
        operation_id="setTruckProfile",
        security=NEEDS_FLEETS,
        sync_to_thread=True,
        summary="Set the truck's autonomy mode and hazmat certification (audited)",
        description="What the decision API's Truck entity says from now on: `autonomy_mode` (driverless, "
        "supervised, manual or unknown; 400 `invalid-autonomy-mode` otherwise) for operators' own "
        "policies, and `hazmat_certified`, without which the safety policy refuses every hazmat tender. "
        "Idempotent: the body is the whole profile. Answers the truck as getTruck does.",
        responses=problems(400, 401, 403, 404),
    )
    def set_profile(
        self, request: Request[Any, Any, Any], data: TruckProfileIn, truck: str = TruckParam
    ) -> TruckOut:
        view = services_of(request).fleets.set_truck_profile(
            actor_of(request),
            truck,
            autonomy_mode=data.autonomy_mode,
            hazmat_certified=data.hazmat_certified,
        )
        return _truck(view)

    @post(
        "/{truck:str}/enrollment-tokens",
        operation_id="mintEnrollmentToken",
        security=NEEDS_FLEETS,
        summary="Mint a single-use, short-lived enrollment token bound to the truck",
        description="Takes no Idempotency-Key: the token is a secret the authority does not store, so a "
        "retry mints another token and the lost one expires unused.",
        responses=problems(400, 401, 403, 404),
    )
    async def mint_token(
        self, request: Request[Any, Any, Any], data: TokenIn, truck: str = TruckParam
    ) -> Response[TokenOut]:
        ttl = timedelta(seconds=data.ttl_seconds) if data.ttl_seconds is not None else None
        minted = await sync_to_thread(services_of(request).tokens.mint, actor_of(request), truck, ttl)
        body = TokenOut(token=minted.token, jti=minted.jti, truck=minted.truck, expires_at=minted.expires_at)
        return Response(body, status_code=201, headers={"Cache-Control": "no-store"})

    @post(
        "/{truck:str}/hardware-swaps",
        operation_id="approveHardwareSwap",
        security=NEEDS_FLEETS,
        summary="Approve the truck's next enrollment binding a different TPM (used once, audited)",
        responses=problems(400, 401, 403, 404),
    )
    async def approve_swap(
        self,
        request: Request[Any, Any, Any],
        data: SwapIn,
        truck: str = TruckParam,
        idempotency_key: str | None = IdempotencyKey,
    ) -> Response[SwapOut]:
        async def run(pending: Pending[SwapView] | None) -> SwapView:
            approve = partial(services_of(request).fleets.approve_swap, idempotency=pending)
            return await sync_to_thread(approve, actor_of(request), truck, data.reason)

        return await idempotent(
            request,
            "approveHardwareSwap",
            key=idempotency_key,
            out_type=SwapOut,
            status_code=201,
            run=run,
            render=_swap,
        )
