"""Operator calls: release-signing keys and golden firmware releases."""

from __future__ import annotations

from functools import partial
from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.concurrency import sync_to_thread
from litestar.params import Parameter

from api.attest_schemas import ReleaseIn, ReleaseKeyIn, ReleaseKeyOut, ReleaseOut, RevokeReleaseIn
from api.controllers.fleets import out
from api.idempotency import IdempotencyKey, idempotent
from api.problems import problems
from api.scopes import NEEDS_ADMIN, NEEDS_FLEETS
from api.services import actor_of, services_of
from provision.idempotency import Pending
from provision.releases import ReleaseKeyView, ReleaseView

ReleaseParam = Parameter(description="Release id (SHA-256 of its manifest)", max_length=64)


def _key(view: ReleaseKeyView) -> ReleaseKeyOut:
    return out(view, ReleaseKeyOut)


def _release(view: ReleaseView) -> ReleaseOut:
    return out(view, ReleaseOut)


class ReleaseKeyController(Controller):
    path = "/v1/release-keys"
    tags = ("releases",)

    @post(
        "/",
        operation_id="registerReleaseKey",
        security=NEEDS_ADMIN,
        summary="Register a release-signing public key",
        responses=problems(400, 401, 403, 422),
    )
    async def register(
        self,
        request: Request[Any, Any, Any],
        data: ReleaseKeyIn,
        idempotency_key: str | None = IdempotencyKey,
    ) -> Response[ReleaseKeyOut]:
        async def run(pending: Pending[ReleaseKeyView] | None) -> ReleaseKeyView:
            call = partial(services_of(request).releases.register_key, idempotency=pending)
            return await sync_to_thread(call, actor_of(request), data.name, data.public_key_pem)

        return await idempotent(
            request,
            "registerReleaseKey",
            key=idempotency_key,
            out_type=ReleaseKeyOut,
            status_code=201,
            run=run,
            render=_key,
        )

    @get(
        "/",
        operation_id="listReleaseKeys",
        security=NEEDS_FLEETS,
        sync_to_thread=True,
        summary="Release-signing keys",
        responses=problems(401, 403),
    )
    def list_keys(self, request: Request[Any, Any, Any]) -> list[ReleaseKeyOut]:
        return [_key(view) for view in services_of(request).releases.release_keys()]


class ReleaseController(Controller):
    path = "/v1/releases"
    tags = ("releases",)

    @post(
        "/",
        operation_id="registerRelease",
        security=NEEDS_ADMIN,
        summary="Register a golden release from a manifest signed by a registered release key",
        responses=problems(400, 401, 403, 404, 409, 422),
    )
    async def register(
        self, request: Request[Any, Any, Any], data: ReleaseIn, idempotency_key: str | None = IdempotencyKey
    ) -> Response[ReleaseOut]:
        async def run(pending: Pending[ReleaseView] | None) -> ReleaseView:
            call = partial(services_of(request).releases.register, idempotency=pending)
            return await sync_to_thread(call, actor_of(request), data.key_id, data.manifest)

        return await idempotent(
            request,
            "registerRelease",
            key=idempotency_key,
            out_type=ReleaseOut,
            status_code=201,
            run=run,
            render=_release,
        )

    @get(
        "/",
        operation_id="listReleases",
        security=NEEDS_FLEETS,
        sync_to_thread=True,
        summary="Golden releases",
        responses=problems(401, 403),
    )
    def list_releases(
        self,
        request: Request[Any, Any, Any],
        model: str | None = Parameter(query="model", required=False, max_length=128),
    ) -> list[ReleaseOut]:
        return [_release(view) for view in services_of(request).releases.releases(model)]

    @get(
        "/{release_id:str}",
        operation_id="getRelease",
        security=NEEDS_FLEETS,
        sync_to_thread=True,
        summary="A release",
        responses=problems(401, 403, 404),
    )
    def show(self, request: Request[Any, Any, Any], release_id: str = ReleaseParam) -> ReleaseOut:
        return _release(services_of(request).releases.get(release_id))

    @post(
        "/{release_id:str}/revoke",
        operation_id="revokeRelease",
        security=NEEDS_ADMIN,
        status_code=200,
        summary="Revoke a release: trucks running it stop appraising as good at once",
        responses=problems(400, 401, 403, 404),
    )
    async def revoke(
        self,
        request: Request[Any, Any, Any],
        data: RevokeReleaseIn,
        release_id: str = ReleaseParam,
        idempotency_key: str | None = IdempotencyKey,
    ) -> Response[ReleaseOut]:
        async def run(pending: Pending[ReleaseView] | None) -> ReleaseView:
            call = partial(services_of(request).releases.revoke, idempotency=pending)
            return await sync_to_thread(call, actor_of(request), release_id, data.reason)

        return await idempotent(
            request,
            "revokeRelease",
            key=idempotency_key,
            out_type=ReleaseOut,
            status_code=200,
            run=run,
            render=_release,
        )
