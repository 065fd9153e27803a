"""OAuth2 scopes per operation, and the OpenAPI security schemes and requirements the guard really
enforces (api.authorize). Cedar says which kind of client may do what on which resource; a scope lets a
client hold a token narrower than its registration (a dashboard that only reads, a broker token that
only asks decisions). An operation needs one of its scopes on top of Cedar's permit.
"""

from __future__ import annotations

from litestar.openapi.spec import OAuthFlow, OAuthFlows, Reference, SecurityScheme

# None: no scope (the operation is open to Anonymous by public.cedar, or its caller is authenticated
# by something other than an access token: a truck, an enrollment token, the token endpoint's client).
ADMIN = "admin"  # running the authority: CA, certificates, releases, clients, policies, new fleets
FLEETS = "fleets"  # fleet work: fleets, trucks and profiles, enrollment tokens, swaps, quarantine; listings
ATTESTATION_READ = "attestation:read"  # a truck's attestation status (operators, contracted brokers)
DECISIONS = "decisions"  # the decision API
EVIDENCE_READ = "evidence:read"  # evidence bundles of truck statements
SCOPE_DESCRIPTIONS = {
    ADMIN: "Run the authority: CA, certificates, releases, OAuth2 clients, policies, new fleets",
    FLEETS: "Manage fleets and trucks: registration, profiles, enrollment tokens, hardware swaps, quarantine",
    ATTESTATION_READ: "Read trucks' attestation status",
    DECISIONS: "Ask the decision API (dispatch, tender.accept)",
    EVIDENCE_READ: "Download evidence bundles of truck statements",
}

_ADMIN_OPERATIONS = (
    "issueCertificate",
    "revokeCertificate",
    "renewCertificate",
    "rotateCa",
    "createFleet",
    "registerReleaseKey",
    "registerRelease",
    "revokeRelease",
    "registerClient",
    "listClients",
    "rotateAccessTokenKey",
    "getPolicies",
    "uploadPolicies",
)
_FLEET_OPERATIONS = (
    "listFleets",
    "listReleaseKeys",
    "listReleases",
    "getRelease",
    "getFleet",
    "getFleetInsurancePolicies",
    "setFleetInsurancePolicies",
    "registerTruck",
    "listTrucks",
    "getTruck",
    "setTruckProfile",
    "mintEnrollmentToken",
    "approveHardwareSwap",
    "liftQuarantine",
)
_UNSCOPED_OPERATIONS = (
    "health",
    "readiness",
    "getMetrics",
    "getOpenApi",
    "options",
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
    "getEvidenceTrust",
    "exportSigstoreBundle",
    # the truck's own operations: authenticated by the truck, never by an access token
    "issueAttestationNonce",
    "attestTruck",
    "renewTruckCertificate",
    "submitStatement",
    "issueEvidenceCertificate",
)
SCOPES: dict[str, frozenset[str] | None] = {
    **dict.fromkeys(_ADMIN_OPERATIONS, frozenset({ADMIN})),
    **dict.fromkeys(_FLEET_OPERATIONS, frozenset({FLEETS})),
    "getAttestationStatus": frozenset({FLEETS, ATTESTATION_READ}),
    "getStatement": frozenset({FLEETS, ATTESTATION_READ}),
    "getStatementChain": frozenset({FLEETS, ATTESTATION_READ}),
    "getEvidenceBundle": frozenset({FLEETS, EVIDENCE_READ}),
    "exportStatementSigstoreBundle": frozenset({FLEETS, EVIDENCE_READ}),
    "decide": frozenset({DECISIONS}),
    "decideBatch": frozenset({DECISIONS}),
    **dict.fromkeys(_UNSCOPED_OPERATIONS, None),
}

# -- OpenAPI: what is really accepted ----------------------------------------------------------------
ACCESS_TOKEN_SCHEME = "accessToken"  # noqa: S105 (a scheme name, not a secret)
CLIENT_BASIC_SCHEME = "clientSecretBasic"
ENROLLMENT_SCHEME = "enrollmentToken"
TRUCK_REQUEST_SCHEME = "truckRequest"
SECURITY_COMPONENTS: dict[str, SecurityScheme | Reference] = {
    ACCESS_TOKEN_SCHEME: SecurityScheme(
        type="oauth2",
        description="An ES256 access token from the client-credentials grant, sent as "
        "`Authorization: Bearer`. Cedar policies decide per client kind and resource; the token "
        "must also carry one of the operation's scopes.",
        flows=OAuthFlows(
            client_credentials=OAuthFlow(
                token_url="/v1/oauth/token",  # noqa: S106 (a URL)
                scopes=dict(SCOPE_DESCRIPTIONS),
            )
        ),
    ),
    CLIENT_BASIC_SCHEME: SecurityScheme(
        type="http",
        scheme="basic",
        description="client_secret_basic at the token endpoint (client_secret_post and "
        "private_key_jwt send the credentials in the form instead)",
    ),
    ENROLLMENT_SCHEME: SecurityScheme(
        type="http",
        scheme="bearer",
        bearer_format="JWT",
        description="A single-use enrollment token the operator minted for the truck",
    ),
    TRUCK_REQUEST_SCHEME: SecurityScheme(
        type="http",
        scheme="bearer",
        bearer_format="truck-request+jwt",
        description="A single-use request JWT signed by the truck's TPM identity key (x5c: its "
        "certificate), bound to the method and URL; or its client certificate forwarded by a trusted "
        "TLS-terminating proxy",
    ),
}
Security = list[dict[str, list[str]]]


def requires(*scopes: str) -> Security:
    """An operation's OpenAPI security: an access token with any one of `scopes`."""
    return [{ACCESS_TOKEN_SCHEME: [scope]} for scope in scopes]


NEEDS_ADMIN: Security = requires(ADMIN)
NEEDS_FLEETS: Security = requires(FLEETS)
NEEDS_STATUS_READ: Security = requires(FLEETS, ATTESTATION_READ)
# The truck's own operations: its request credential (policy truck-own-records), nothing else.
TRUCK_SELF: Security = [{TRUCK_REQUEST_SCHEME: []}]
# A truck's records: an access token, or the truck itself.
TRUCK_RECORDS: Security = [*NEEDS_STATUS_READ, *TRUCK_SELF]
NEEDS_DECISIONS: Security = requires(DECISIONS)
NEEDS_EVIDENCE_READ: Security = requires(FLEETS, EVIDENCE_READ)
CLIENT_CREDENTIALS: Security = [{CLIENT_BASIC_SCHEME: []}, {}]
ENROLLING_TRUCK: Security = [{ENROLLMENT_SCHEME: []}]
PUBLIC: Security = []
