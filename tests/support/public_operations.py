"""The operations anyone may call (Anonymous passes the guard, each opened by a named policy in
policies/public.cedar; the use case may still authenticate, e.g. the enrollment token or the client at the
token endpoint). Written out here, apart from api/scopes.py, as the tests' own expectation."""

from __future__ import annotations

# In the OpenAPI document.
PUBLIC_DOCUMENTED = (
    "health",
    "readiness",
    "getJwks",
    "getTrustBundle",
    "listAuthorities",
    "getCrl",
    "getAuthorityCrl",
    "ocspPost",
    "ocspGet",
    "getCertificate",
    "getLogCheckpoint",
    "getLogKey",
    "getLogTile",
    "getLogEntry",
    "getLogInclusionProof",
    "getLogConsistencyProof",
    "getAuthorizationServerMetadata",
    "issueAccessToken",
    "startEnrollment",
    "activateEnrollment",
    "getSigstoreTrustConfig",
    "exportSigstoreBundle",
    "getEvidenceTrust",
)
# Routes outside the document: /metrics, the document itself, CORS preflight.
PUBLIC_OPERATIONS = (*PUBLIC_DOCUMENTED, "getMetrics", "getOpenApi", "options")
