from __future__ import annotations

import base64
import binascii
from functools import partial
from typing import Any
from urllib.parse import unquote

from litestar import Controller, Request, Response, get, post
from litestar.concurrency import sync_to_thread
from litestar.params import Parameter

from api.controllers.convert import authority_out
from api.idempotency import IdempotencyKey, idempotent
from api.metrics import ca_rotations
from api.problems import problems
from api.schemas import AuthorityOut
from api.scopes import NEEDS_ADMIN
from api.services import actor_of, authority_of
from provision.hierarchy import CaView
from provision.idempotency import Pending

_OCSP_RESPONSE = "application/ocsp-response"
_PEM_CHAIN = "application/pem-certificate-chain"
_MAX_OCSP_REQUEST = 4096


class CaController(Controller):
    path = "/v1/ca"
    tags = ("ca",)

    @get(
        "/bundle",
        operation_id="getTrustBundle",
        sync_to_thread=True,
        media_type=_PEM_CHAIN,
        summary="Trust bundle: the root and every issuing CA still valid (old and new during a rotation)",
    )
    def bundle(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        return Response(authority_of(request).cas.bundle_pem(), media_type=_PEM_CHAIN)

    @get(
        "/authorities",
        operation_id="listAuthorities",
        sync_to_thread=True,
        summary="The CA hierarchy with each CA's status",
    )
    def authorities(self, request: Request[Any, Any, Any]) -> list[AuthorityOut]:
        return [authority_out(view) for view in authority_of(request).cas.authorities()]

    @get(
        "/crl",
        operation_id="getCrl",
        sync_to_thread=True,
        media_type="application/pkix-crl",
        summary="DER CRL of the active issuing CA",
        responses=problems(503),
    )
    def crl(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        return Response(authority_of(request).status.crl(), media_type="application/pkix-crl")

    @get(
        "/authorities/{ca_id:str}/crl",
        operation_id="getAuthorityCrl",
        sync_to_thread=True,
        media_type="application/pkix-crl",
        summary="DER CRL of one issuing CA (also a retired one)",
        responses=problems(404, 503),
    )
    def authority_crl(
        self, request: Request[Any, Any, Any], ca_id: str = Parameter(max_length=64)
    ) -> Response[bytes]:
        return Response(authority_of(request).status.crl(ca_id), media_type="application/pkix-crl")

    @post(
        "/rotate",
        operation_id="rotateCa",
        security=NEEDS_ADMIN,
        status_code=201,
        summary="Rotate the issuing CA; the old one stays trusted until it expires",
        responses=problems(401, 403, 409, 422, 503),
    )
    async def rotate(
        self, request: Request[Any, Any, Any], idempotency_key: str | None = IdempotencyKey
    ) -> Response[AuthorityOut]:
        async def run(pending: Pending[CaView] | None) -> CaView:
            view = await sync_to_thread(
                partial(authority_of(request).cas.rotate, idempotency=pending), actor_of(request)
            )
            ca_rotations.inc()
            return view

        return await idempotent(
            request,
            "rotateCa",
            key=idempotency_key,
            out_type=AuthorityOut,
            status_code=201,
            run=run,
            render=authority_out,
        )


class OcspController(Controller):
    """RFC 6960 responder. Protocol errors travel inside the OCSPResponse (status 200), as clients expect."""

    path = "/v1/ocsp"
    tags = ("ca",)

    @post(
        "/",
        operation_id="ocspPost",
        status_code=200,
        media_type=_OCSP_RESPONSE,
        summary="OCSP over POST (body: DER OCSPRequest)",
        responses=problems(413),
    )
    async def ocsp_post(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        body = await request.body()
        return await self._answer(request, body)

    @get(
        "/{encoded:path}",
        operation_id="ocspGet",
        media_type=_OCSP_RESPONSE,
        summary="OCSP over GET (path: base64 of the DER OCSPRequest, URL-encoded)",
    )
    async def ocsp_get(self, request: Request[Any, Any, Any], encoded: str) -> Response[bytes]:
        # Base64 may hold "//" or end in "/", which path normalisation would mangle: read the raw path.
        raw = request.scope.get("raw_path") or b""
        _, _, tail = raw.decode("latin-1").partition("/v1/ocsp/")
        text = unquote(tail or encoded.lstrip("/"))
        try:
            der = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        except (binascii.Error, ValueError):
            der = b""  # answered as malformedRequest by the responder
        return await self._answer(request, der)

    @staticmethod
    async def _answer(request: Request[Any, Any, Any], der: bytes) -> Response[bytes]:
        # Oversized requests are answered as malformed rather than parsed.
        answer = await sync_to_thread(
            authority_of(request).status.ocsp, der if len(der) <= _MAX_OCSP_REQUEST else b""
        )
        return Response(answer, media_type=_OCSP_RESPONSE, headers={"Cache-Control": "max-age=60"})
