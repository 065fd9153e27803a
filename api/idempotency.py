"""Idempotency-Key on mutating calls: a retry with the same key and request gets the stored response
(marked `Idempotent-Replayed: true`); the same key with another request is refused."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec
from litestar import Request, Response
from litestar.concurrency import sync_to_thread
from litestar.params import Parameter

from api.services import actor_of
from provision.idempotency import Claim, Pending, lookup

Out = TypeVar("Out", bound=msgspec.Struct)
Result = TypeVar("Result")


IdempotencyKey = Parameter(
    header="Idempotency-Key",
    required=False,
    description="Optional. A retry with the same key and the same request gets the stored response "
    "(header Idempotent-Replayed: true) instead of repeating the change; 1 to 128 visible ASCII characters.",
)


async def idempotent(
    request: Request[Any, Any, Any],
    operation: str,
    *,
    key: str | None,
    out_type: type[Out],
    status_code: int,
    run: Callable[[Pending[Result] | None], Awaitable[Result]],
    render: Callable[[Result], Out],
) -> Response[Out]:
    if key is None:
        return Response(render(await run(None)), status_code=status_code)
    body = await request.body()
    claim = Claim.of(actor_of(request).name, key, operation, request.url.path.encode() + b"\n" + body)
    stored = await sync_to_thread(lookup, request.app.state.services.engine, claim)
    if stored is not None:
        replayed = msgspec.json.decode(stored.body, type=out_type)
        return Response(replayed, status_code=stored.status_code, headers={"Idempotent-Replayed": "true"})
    pending: Pending[Result] = Pending(
        claim=claim, status_code=status_code, render=lambda result: msgspec.json.encode(render(result))
    )
    return Response(render(await run(pending)), status_code=status_code)
