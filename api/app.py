"""The one application factory. Settings come in; the lifespan owns the engine and the key backend."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.concurrency import sync_to_thread
from litestar.exceptions import HTTPException
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.openapi.spec import Components
from litestar.plugins.prometheus import PrometheusConfig, PrometheusController

from api.authorize import Refused, authorize, handle_refused
from api.controllers.attestation import AttestationController, jwks
from api.controllers.ca import CaController, OcspController
from api.controllers.certificates import CertificateController
from api.controllers.decisions import decide, decide_batch
from api.controllers.enrollment import EnrollmentController
from api.controllers.evidence import EvidenceController
from api.controllers.fleets import FleetController, TruckController
from api.controllers.health import health, readiness
from api.controllers.log import LogController, handle_tlog_error
from api.controllers.oauth import ClientController, metadata, rotate_access_token_key, token
from api.controllers.policies import PolicyController
from api.controllers.releases import ReleaseController, ReleaseKeyController
from api.controllers.sigstore import SigstoreController
from api.controllers.statements import StatementController
from api.controllers.truck_sigstore import TruckSigstoreController
from api.middleware import RequestIdMiddleware, configure_logging
from api.problems import handle_domain_error, handle_http_exception, handle_unexpected
from api.scopes import SECURITY_COMPONENTS
from api.services import Services
from api.settings import Settings
from attest.errors import AttestError
from pki.errors import PkiError
from provision.errors import ProvisionError
from tlog.errors import TlogError

VERSION = "0.1.0"


class MetricsController(PrometheusController):
    path = "/metrics"
    include_in_schema = False


def create_app(settings: Settings) -> Litestar:
    configure_logging(settings.log_level)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        services = await sync_to_thread(Services.open, settings)
        app.state.services = services
        try:
            yield
        finally:
            await sync_to_thread(services.close)

    prometheus = PrometheusConfig(
        app_name="weighstation", prefix="weighstation", group_path=True, exclude=["/metrics"]
    )
    return Litestar(
        route_handlers=[
            health,
            readiness,
            CertificateController,
            CaController,
            OcspController,
            FleetController,
            TruckController,
            EnrollmentController,
            ReleaseKeyController,
            ReleaseController,
            AttestationController,
            jwks,
            LogController,
            StatementController,
            SigstoreController,
            TruckSigstoreController,
            EvidenceController,
            ClientController,
            token,
            metadata,
            rotate_access_token_key,
            decide,
            decide_batch,
            PolicyController,
            MetricsController,
        ],
        lifespan=[lifespan],
        # Every route, including the OpenAPI document, metrics and OPTIONS, is authorized by Cedar.
        guards=[authorize],
        middleware=[RequestIdMiddleware, prometheus.middleware],
        exception_handlers={
            Refused: handle_refused,
            PkiError: handle_domain_error,
            ProvisionError: handle_domain_error,
            AttestError: handle_domain_error,
            TlogError: handle_tlog_error,
            HTTPException: handle_http_exception,
            Exception: handle_unexpected,
        },
        request_max_body_size=settings.max_body_bytes,
        openapi_config=OpenAPIConfig(
            title="weighstation",
            version=VERSION,
            path="/schema",
            render_plugins=[JsonRenderPlugin()],
            components=Components(security_schemes=SECURITY_COMPONENTS),
            description="Zero-trust identity and attestation authority for autonomous truck fleets.",
        ),
        debug=False,
    )
