"""Operator calls: the active Cedar policy set, and uploading a new one (validated, audited, the
previous versions kept)."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.concurrency import sync_to_thread

from api.attest_schemas import PolicyIn, PolicyOut
from api.problems import problems
from api.scopes import NEEDS_ADMIN
from api.services import actor_of, services_of
from provision.policy_store import PolicyView


def _out(view: PolicyView) -> PolicyOut:
    return PolicyOut(
        version=view.version, text=view.text, uploaded_by=view.uploaded_by, uploaded_at=view.uploaded_at
    )


class PolicyController(Controller):
    path = "/v1/policies"
    tags = ("policies",)

    @get(
        "/",
        operation_id="getPolicies",
        security=NEEDS_ADMIN,
        sync_to_thread=True,
        summary="The active policy set",
        responses=problems(401, 403),
    )
    def show(self, request: Request[Any, Any, Any]) -> PolicyOut:
        return _out(services_of(request).policies.current())

    @post(
        "/",
        operation_id="uploadPolicies",
        security=NEEDS_ADMIN,
        summary="Upload a policy set: validated against the schema first; an invalid one changes nothing",
        responses=problems(400, 401, 403, 422),
    )
    async def upload(self, request: Request[Any, Any, Any], data: PolicyIn) -> Response[PolicyOut]:
        services = services_of(request)
        view = await sync_to_thread(services.policies.upload, actor_of(request), data.text)
        return Response(_out(view), status_code=201)
