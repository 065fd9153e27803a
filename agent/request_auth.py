"""The truck's request credential: a single-use JWT signed in the TPM by its identity key.

Header `typ: truck-request+jwt`, `alg` by the key's curve (ES256 for the P-256 identity key), `x5c` = the
identity certificate and the CA certificates above it except the self-signed root (RFC 7515 §4.1.6).
Claims bind it to the truck (`iss` = truck id, `sub` = SPIFFE ID), to the service (`aud`), to this one
call (`htm`, `htu` without query, as DPoP does, RFC 9449 §4.2) and to a short window (`iat`, `exp`);
`jti` makes it single use, so the agent mints one per request, retries included.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

import jwt
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from agent.state import StateError

if TYPE_CHECKING:
    from agent.client import EnrollmentClient
    from agent.state import AgentState
    from agent.tpm import TruckTpm

TYP = "truck-request+jwt"
LIFETIME = timedelta(seconds=60)  # the authority accepts at most 120 s
_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384"}

# (method, url) -> a fresh request JWT
RequestSigner = Callable[[str, str], str]


class RequestAuthError(StateError):
    """The agent cannot build a request credential from its state (no certificate, no SPIFFE ID)."""


def _without_query(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path or "/", "", ""))


def _x5c(chain: list[x509.Certificate]) -> list[str]:
    sent = [chain[0], *(c for c in chain[1:] if c.subject != c.issuer)]
    return [base64.b64encode(c.public_bytes(Encoding.DER)).decode("ascii") for c in sent]


def _spiffe_id(leaf: x509.Certificate) -> tuple[str, str]:
    """(SPIFFE ID, truck id) from the certificate's URI SAN spiffe://<td>/fleet/<f>/truck/<id>."""
    try:
        sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise RequestAuthError("the identity certificate has no subjectAltName") from None
    for uri in sans.get_values_for_type(x509.UniformResourceIdentifier):
        _, marker, truck = uri.rpartition("/truck/")
        if uri.startswith("spiffe://") and marker and truck:
            return uri, truck
    raise RequestAuthError("the identity certificate names no truck")


class TruckRequestSigner:
    """Mints request JWTs with `key` (the TPM identity key) for the certificate chain in `chain_pem`
    (leaf first). Call it with the HTTP method and the full request URL."""

    def __init__(
        self,
        key: ec.EllipticCurvePrivateKey,
        chain_pem: bytes,
        *,
        audience: str,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        lifetime: timedelta = LIFETIME,
    ) -> None:
        try:
            chain = x509.load_pem_x509_certificates(chain_pem)
        except ValueError as exc:
            raise RequestAuthError(f"the certificate chain is not PEM: {exc}") from None
        algorithm = _ALGORITHMS.get(key.curve.name)
        if algorithm is None:
            raise RequestAuthError(f"no request-signing algorithm for curve {key.curve.name}")
        self.spiffe_id, self.truck = _spiffe_id(chain[0])
        self._key = key
        self._algorithm = algorithm
        self._x5c = _x5c(chain)
        self._audience = audience.rstrip("/")
        self._clock = clock
        self._lifetime = lifetime

    def __call__(self, method: str, url: str) -> str:
        now = int(self._clock().timestamp())
        claims = {
            "iss": self.truck,
            "sub": self.spiffe_id,
            "aud": self._audience,
            "htm": method.upper(),
            "htu": _without_query(url),
            "iat": now,
            "exp": now + int(self._lifetime.total_seconds()),
            "jti": secrets.token_urlsafe(24),
        }
        return jwt.encode(
            claims, self._key, algorithm=self._algorithm, headers={"typ": TYP, "x5c": self._x5c}
        )


def truck_request_signer(tpm: TruckTpm, state: AgentState, *, audience: str) -> TruckRequestSigner:
    """A signer whose signatures the TPM makes with the enrolled identity key (valid while `tpm` is open)."""
    if state.certificate_pem is None:
        raise RequestAuthError("not enrolled: no identity certificate in the state")
    return TruckRequestSigner(tpm.identity_signer(state.identity), state.certificate_pem, audience=audience)


def as_truck(client: EnrollmentClient, tpm: TruckTpm, state: AgentState) -> EnrollmentClient:
    """`client` authenticating its truck calls with request JWTs for this truck; `aud` is the server
    URL the agent talks to (the authority's public URL)."""
    return client.for_truck(truck_request_signer(tpm, state, audience=client.server_url))
