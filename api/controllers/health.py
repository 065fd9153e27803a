from __future__ import annotations

from typing import Any

from litestar import Request, Response, get

from api.problems import problems
from api.schemas import HealthOut, ReadyOut


@get("/healthz", operation_id="health", tags=["health"], summary="Liveness: the process answers")
async def health() -> HealthOut:
    return HealthOut(status="ok")


@get(
    "/readyz",
    operation_id="readiness",
    tags=["health"],
    sync_to_thread=True,
    summary="Readiness: the database and the key backend answer",
    responses={503: problems(503)[503]},
)
def readiness(request: Request[Any, Any, Any]) -> Response[ReadyOut]:
    checks = request.app.state.services.readiness()
    ready = all(value == "ok" for value in checks.values())
    return Response(
        ReadyOut(status="ready" if ready else "unavailable", checks=checks), status_code=200 if ready else 503
    )
