"""Trucks authenticate requests with their TPM-resident identity key.

Two carriers, one set of certificate checks:

- a single-use request JWT (`typ: truck-request+jwt`) whose `x5c` header carries the truck's identity
  certificate and which the identity key signs, bound to the call like a DPoP proof (RFC 9449 §4.2:
  `htm`, `htu` without query) and to this service (`aud`);
- a client certificate from a TLS handshake that a trusted proxy terminated (the HTTP layer decides
  whether to believe the proxy; this module only checks the certificate).

The certificate must be one this authority issued (same DER in our store, signed by one of our issuing
CAs, rotated-out ones included while in date), in date, not revoked, of the truck profile, name a
registered and enrolled truck by its SPIFFE ID, and carry the key that truck enrolled last (a
certificate of a superseded TPM fails). The JWT's algorithm is pinned to that key's curve, never taken
from the header beyond that. Every failure raises TruckRequestInvalid with one precise reason.
"""

from __future__ import annotations

import base64
import binascii
import functools
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import jwt
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from sqlalchemy import Engine, bindparam, select
from sqlmodel import Session, col

from attest.errors import AttestError
from attest.public import parse_tpmt_public
from pki.errors import ProfileViolation
from pki.jws import unverified_part
from pki.names import parse_truck_id
from provision.authority import serial_hex
from provision.errors import JwtReplayed, TruckRequestInvalid
from provision.fleets import spiffe_id
from provision.hierarchy import CaView
from provision.single_use import PendingJti, is_spent, spend_jti
from provision.tables import IssuedCertificate, Truck, TruckEnrollment

TYP = "truck-request+jwt"
PURPOSE = "truck-request"  # the spent_jtis namespace
MAX_LIFETIME = timedelta(seconds=120)
LEEWAY = timedelta(seconds=10)  # truck clocks drift; a small allowance on iat/exp/nbf only
MAX_X5C = 4
_MAX_CERTIFICATE_BYTES = 8192
# The identity key's curve decides the algorithm; nothing else is ever accepted.
_ALGORITHM_OF_CURVE = {"secp256r1": "ES256", "secp384r1": "ES384"}
_ACCEPTED_ALGORITHMS = frozenset(_ALGORITHM_OF_CURVE.values())
_REQUIRED_CLAIMS = ["iss", "sub", "aud", "exp", "iat", "jti", "htm", "htu"]
# Key sources other than x5c would make "which key verified this" ambiguous.
_FORBIDDEN_HEADERS = ("jwk", "jku", "x5u", "crit")
_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
# Live state read on every request (Core: no ORM objects to build): the stored certificate and its
# status, and the truck with the identity key of its latest enrollment.
_CERTIFICATE = select(
    col(IssuedCertificate.certificate_der),
    col(IssuedCertificate.profile),
    col(IssuedCertificate.status),
    col(IssuedCertificate.revocation_reason),
).where(col(IssuedCertificate.serial) == bindparam("serial"))
_LATEST_IDENTITY = (
    select(col(TruckEnrollment.identity_public))
    .where(col(TruckEnrollment.truck_id) == col(Truck.id))
    .order_by(col(TruckEnrollment.id).desc())
    .limit(1)
    .scalar_subquery()
)
_TRUCK = select(
    col(Truck.id), col(Truck.fleet_id), col(Truck.state), _LATEST_IDENTITY.label("identity_public")
).where(col(Truck.id) == bindparam("truck"))


@dataclass(frozen=True)
class TruckRequester:
    """A truck whose request credential verified: who it is and until when the credential holds."""

    truck_id: str
    fleet_id: str
    spiffe_id: str
    certificate_serial: str
    jti: str | None  # None for a client certificate (mTLS has no per-request id)
    expires_at: datetime  # the JWT's exp, or the certificate's notAfter
    # Set when `verify` was asked not to spend the jti: the use case must spend it in its transaction.
    unspent: PendingJti | None = None


@dataclass(frozen=True)
class _Certified:
    truck_id: str
    fleet_id: str
    spiffe_id: str
    serial: str
    not_after: datetime
    public_key: ec.EllipticCurvePublicKey
    algorithm: str
    jti_spent: bool | None = None  # whether the claimed jti was spent, when asked


def normalise_url(url: str) -> str:
    """scheme://host[:port]/path: lower-case scheme and host, default port dropped, query and fragment
    dropped (RFC 9449 §4.3 compares htu this way)."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    default = {"http": 80, "https": 443}.get(scheme)
    netloc = host if port is None or port == default else f"{host}:{port}"
    return urlunsplit((scheme, netloc, parts.path or "/", "", ""))


class TruckRequests:
    def __init__(
        self,
        engine: Engine,
        authorities: Callable[[], Sequence[CaView]],
        *,
        trust_domain: str,
        audience: str,
        clock: Callable[[], datetime],
        leeway: timedelta = LEEWAY,
    ) -> None:
        self._engine = engine
        self._leeway = leeway
        self._authorities = authorities
        self._trust_domain = trust_domain
        self._audience = audience.rstrip("/")
        self._clock = clock

    # -- the request JWT -------------------------------------------------------------------------

    def verify(self, token: str, *, method: str, url: str, spend: bool = True) -> TruckRequester:
        """Verify a truck request JWT for this call (`method`, the request `url`) and spend its jti.

        With `spend=False` a jti already spent is still refused here, but this one is not spent: the
        requester's `unspent` must be spent by the use case in its own write transaction
        (provision.single_use.spend_pending), which alone settles two presentations racing."""
        now = self._clock()
        # 1. The unverified header: type, an algorithm we could accept at all, the certificates.
        header = _header(token)
        leaf, extras = _x5c(header)
        # 2. The certificate and the truck it names (same checks as mTLS). When the use case spends the
        # jti, the same read says whether it was spent already (the claimed jti, judged at step 8).
        claimed_jti = None if spend else _unverified_jti(token)
        certified = self._certified(leaf, extras, now, jti=claimed_jti)
        # 3. The algorithm is the one the certificate's key dictates (no header choice beyond that).
        if header["alg"] != certified.algorithm:
            raise TruckRequestInvalid(
                f"alg {header['alg']} does not match the certificate's key; it must be {certified.algorithm}"
            )
        # 4. Signature, audience, required claims, exp/iat against the clock.
        claims = self._decode(token, certified, now)
        # 5. Issuer and subject name the certificate's truck.
        if claims["iss"] != certified.truck_id:
            raise TruckRequestInvalid(
                f"iss {str(claims['iss'])[:64]!r} is not the truck the certificate names "
                f"({certified.truck_id!r})"
            )
        if claims["sub"] != certified.spiffe_id:
            raise TruckRequestInvalid(f"sub is not the certificate's SPIFFE ID {certified.spiffe_id}")
        # 6. Bound to this call (RFC 9449 §4.3 steps 8-9).
        if claims["htm"] != method.upper():
            raise TruckRequestInvalid(
                f"htm {str(claims['htm'])[:16]!r} is not this request's method {method}"
            )
        htu = claims["htu"]
        if not isinstance(htu, str) or normalise_url(htu) != normalise_url(url):
            raise TruckRequestInvalid(
                f"htu {str(htu)[:256]!r} is not this request's URL {normalise_url(url)}"
            )
        # 7. Short-lived: a request JWT is minted per request.
        issued = datetime.fromtimestamp(claims["iat"], tz=now.tzinfo)
        expires = datetime.fromtimestamp(claims["exp"], tz=now.tzinfo)
        if expires - issued > MAX_LIFETIME:
            raise TruckRequestInvalid(
                f"lifetime exp - iat = {int((expires - issued).total_seconds())} s exceeds "
                f"{int(MAX_LIFETIME.total_seconds())} s"
            )
        # 8. Single use, on every replica.
        jti = claims["jti"]
        if not isinstance(jti, str):
            raise TruckRequestInvalid("jti is not a string")
        if not jti or len(jti) > 128:
            raise TruckRequestInvalid("the JWT's jti is missing or longer than 128 characters")
        pending = PendingJti(PURPOSE, jti, certified.truck_id, expires + self._leeway)
        if spend:
            self.spend(pending)
        else:
            spent = certified.jti_spent if jti == claimed_jti else None
            if spent is None:
                with self._engine.connect() as conn:
                    spent = is_spent(conn, PURPOSE, jti)
            if spent:
                raise TruckRequestInvalid(_already_used(jti))
        return TruckRequester(
            truck_id=certified.truck_id,
            fleet_id=certified.fleet_id,
            spiffe_id=certified.spiffe_id,
            certificate_serial=certified.serial,
            jti=jti,
            expires_at=expires,
            unspent=None if spend else pending,
        )

    def spend(self, pending: PendingJti) -> None:
        """Spend a verified request JWT's jti in a transaction of its own (TruckRequestInvalid if it
        was spent before)."""
        with Session(self._engine) as session:
            try:
                spend_jti(
                    session,
                    purpose=pending.purpose,
                    jti=pending.jti,
                    subject=pending.subject,
                    expires_at=pending.expires_at,
                    now=self._clock(),
                )
            except JwtReplayed as exc:
                raise TruckRequestInvalid(exc.reason) from None
            session.commit()

    def _decode(self, token: str, certified: _Certified, now: datetime) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                certified.public_key,
                algorithms=[certified.algorithm],
                audience=self._audience,
                # Times are checked below against the service's clock, not pyjwt's.
                options={
                    "require": _REQUIRED_CLAIMS,
                    "strict_aud": True,
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                },
            )
        except jwt.InvalidSignatureError:
            raise TruckRequestInvalid("the signature does not verify with the certificate's key") from None
        except jwt.InvalidAudienceError:
            raise TruckRequestInvalid(f"aud is not this service ({self._audience})") from None
        except jwt.MissingRequiredClaimError as exc:
            raise TruckRequestInvalid(f"the request JWT lacks the {exc.claim!r} claim") from None
        except jwt.InvalidTokenError as exc:
            raise TruckRequestInvalid(f"request JWT refused: {exc}") from None
        for name in ("iat", "exp", "nbf"):
            # bool is an int in Python; a NumericDate is not.
            if name in claims and type(claims[name]) is not int:
                raise TruckRequestInvalid(f"{name} is not an integer NumericDate")
        stamp = now.timestamp()
        leeway = self._leeway.total_seconds()
        if claims["exp"] <= stamp - leeway:
            raise TruckRequestInvalid("the request JWT has expired (exp)")
        if claims["iat"] > stamp + leeway:
            raise TruckRequestInvalid("the request JWT is not valid yet: iat is in the future")
        if "nbf" in claims and claims["nbf"] > stamp + leeway:
            raise TruckRequestInvalid("the request JWT is not valid yet (nbf)")
        if claims["exp"] <= claims["iat"]:
            raise TruckRequestInvalid("exp is not after iat")
        return claims

    # -- a client certificate forwarded by a trusted proxy ---------------------------------------

    def verify_client_certificate(self, pem_chain: str) -> TruckRequester:
        """Check a TLS client certificate (leaf first, optional intermediates) like an x5c chain."""
        try:
            certificates = x509.load_pem_x509_certificates(pem_chain.encode("ascii"))
        except (ValueError, UnicodeEncodeError) as exc:
            raise TruckRequestInvalid(f"the client certificate is not PEM: {exc}") from None
        if not 1 <= len(certificates) <= MAX_X5C:
            raise TruckRequestInvalid(f"expected 1 to {MAX_X5C} client certificates, got {len(certificates)}")
        leaf, *extras = certificates
        certified = self._certified(leaf, extras, self._clock())
        return TruckRequester(
            truck_id=certified.truck_id,
            fleet_id=certified.fleet_id,
            spiffe_id=certified.spiffe_id,
            certificate_serial=certified.serial,
            jti=None,
            expires_at=certified.not_after,
        )

    # -- the certificate checks both carriers share ----------------------------------------------

    def _certified(
        self,
        leaf: x509.Certificate,
        extras: Sequence[x509.Certificate],
        now: datetime,
        *,
        jti: str | None = None,
    ) -> _Certified:
        authorities = self._authorities()
        ours = {view.certificate.public_bytes(serialization.Encoding.DER) for view in authorities}
        # a. Anything sent beside the leaf must be one of our CA certificates (they are hints only).
        for extra in extras:
            if extra.public_bytes(serialization.Encoding.DER) not in ours:
                raise TruckRequestInvalid(
                    f"the chain carries {extra.subject.rfc4514_string()[:128]!r}, not a CA of this authority"
                )
        # b. Signed by one of our issuing CAs (active or rotated out), which is in date.
        issuer = _issuing_ca(leaf, authorities)
        if issuer is None:
            raise TruckRequestInvalid("the certificate was not issued by a CA of this authority")
        if not issuer.not_before <= now <= issuer.not_after:
            raise TruckRequestInvalid(f"the issuing CA {issuer.id} is not valid now")
        # c. In date.
        if now < leaf.not_valid_before_utc:
            raise TruckRequestInvalid("the certificate is not valid yet")
        if now > leaf.not_valid_after_utc:
            raise TruckRequestInvalid(
                f"the certificate expired at {leaf.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}"
            )
        # d. A truck certificate for client authentication, naming one truck by its SPIFFE ID.
        _require_client_auth(leaf)
        uri = _only_uri_san(leaf)
        try:
            named = parse_truck_id(uri, self._trust_domain)
        except ProfileViolation as exc:
            raise TruckRequestInvalid(
                f"the certificate's SPIFFE ID does not name a truck: {exc.reason}"
            ) from None
        public_key = leaf.public_key()
        if not isinstance(public_key, ec.EllipticCurvePublicKey):
            raise TruckRequestInvalid("the certificate's key is not an EC key; trucks sign with ECDSA")
        algorithm = _ALGORITHM_OF_CURVE.get(public_key.curve.name)
        if algorithm is None:
            raise TruckRequestInvalid(
                f"the certificate's curve {public_key.curve.name} is not P-256 or P-384"
            )
        serial = serial_hex(leaf.serial_number)
        with self._engine.connect() as conn:
            row = conn.execute(_CERTIFICATE, {"serial": serial}).first()
            truck = conn.execute(_TRUCK, {"truck": named.truck}).first()
            jti_spent = None if jti is None else is_spent(conn, PURPOSE, jti)
        # e. Exactly the certificate we stored, of the truck profile, not revoked.
        if row is None or row.certificate_der != leaf.public_bytes(serialization.Encoding.DER):
            raise TruckRequestInvalid(f"certificate {serial} is not one this authority issued")
        if row.profile != "truck":
            raise TruckRequestInvalid(f"certificate {serial} has profile {row.profile!r}, not truck")
        if row.status != "valid":
            raise TruckRequestInvalid(
                f"certificate {serial} is {row.status} ({row.revocation_reason or 'no reason given'})"
            )
        # f. A registered, enrolled truck in the fleet the SPIFFE ID names.
        if truck is None:
            raise TruckRequestInvalid(f"the certificate names truck {named.truck!r}, which is not registered")
        if truck.fleet_id != named.fleet:
            raise TruckRequestInvalid(f"truck {truck.id} is not in fleet {named.fleet!r}")
        if truck.state != "enrolled" or truck.identity_public is None:
            raise TruckRequestInvalid(f"truck {truck.id} is not enrolled")
        # g. The key is the TPM-resident identity key of the truck's current enrollment.
        try:
            enrolled_spki = _spki_of_tpm_public(bytes(truck.identity_public))
        except AttestError as exc:
            raise TruckRequestInvalid(f"the enrolled identity key cannot be read: {exc.reason}") from None
        if enrolled_spki != public_key.public_bytes(*_SPKI):
            raise TruckRequestInvalid(
                f"the certificate's key is not the identity key truck {truck.id} enrolled last"
            )
        return _Certified(
            truck_id=truck.id,
            fleet_id=truck.fleet_id,
            spiffe_id=spiffe_id(self._trust_domain, truck.fleet_id, truck.id),
            serial=serial,
            not_after=leaf.not_valid_after_utc,
            public_key=public_key,
            algorithm=algorithm,
            jti_spent=jti_spent,
        )


def _unverified_jti(token: str) -> str | None:
    """The jti the payload claims, before any check (only to read its spent state in the same query as
    the certificate's; the verified claim decides). None when there is no string jti to read."""
    payload = unverified_part(token, 1)
    jti = payload.get("jti") if payload is not None else None
    return jti if isinstance(jti, str) and 0 < len(jti) <= 128 else None


def _already_used(jti: str) -> str:
    return f"this {PURPOSE} JWT (jti {jti!r}) was already used; it is single use"


def _header(token: str) -> Mapping[str, Any]:
    if not isinstance(token, str) or token.count(".") != 2:
        raise TruckRequestInvalid("not a compact JWT (three base64url parts)")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError as exc:
        raise TruckRequestInvalid(f"not a JWT: {exc}") from None
    if header.get("typ") != TYP:
        raise TruckRequestInvalid(f"typ {str(header.get('typ'))[:32]!r} is not {TYP!r}")
    alg = header.get("alg")
    if alg not in _ACCEPTED_ALGORITHMS:
        raise TruckRequestInvalid(f"alg {str(alg)[:16]!r} is not accepted; ES256 or ES384 by the key's curve")
    for name in _FORBIDDEN_HEADERS:
        if name in header:
            raise TruckRequestInvalid(f"the {name!r} header is not accepted; the key comes from x5c only")
    return header


def _x5c(header: Mapping[str, Any]) -> tuple[x509.Certificate, list[x509.Certificate]]:
    """RFC 7515 §4.1.6: a list of standard-base64 DER certificates, the signer's first."""
    x5c = header.get("x5c")
    if x5c is None:
        raise TruckRequestInvalid("no x5c header: the request JWT must carry the truck's certificate")
    if not isinstance(x5c, list) or not 1 <= len(x5c) <= MAX_X5C:
        raise TruckRequestInvalid(f"x5c must be a list of 1 to {MAX_X5C} certificates")
    certificates: list[x509.Certificate] = []
    for index, entry in enumerate(x5c):
        if not isinstance(entry, str) or len(entry) > _MAX_CERTIFICATE_BYTES * 4 // 3 + 4:
            raise TruckRequestInvalid(f"x5c[{index}] is not a base64 certificate of at most 8 KiB")
        try:
            certificates.append(x509.load_der_x509_certificate(base64.b64decode(entry, validate=True)))
        except (binascii.Error, ValueError) as exc:
            raise TruckRequestInvalid(f"x5c[{index}] is not a base64 DER certificate: {exc}") from None
    return certificates[0], certificates[1:]


def _issuing_ca(leaf: x509.Certificate, authorities: Sequence[CaView]) -> CaView | None:
    leaf_der = leaf.public_bytes(serialization.Encoding.DER)
    for view in authorities:
        if view.kind != "issuing" or view.certificate.subject != leaf.issuer:
            continue
        pair = (leaf_der, view.certificate.public_bytes(serialization.Encoding.DER))
        if _SIGNED.seen(pair):
            return view
        try:
            leaf.verify_directly_issued_by(view.certificate)
        except (InvalidSignature, ValueError, TypeError):
            continue
        _SIGNED.add(pair)
        return view
    return None


class _SignedPairs:
    """(certificate DER, issuer DER) pairs whose signature verified: a fact about the two byte
    strings alone, so it never goes stale (whether either is still valid is checked on every call).
    Bounded; the oldest pairs go first."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._pairs: OrderedDict[tuple[bytes, bytes], None] = OrderedDict()
        self._lock = threading.Lock()

    def seen(self, pair: tuple[bytes, bytes]) -> bool:
        with self._lock:
            if pair in self._pairs:
                self._pairs.move_to_end(pair)
                return True
            return False

    def add(self, pair: tuple[bytes, bytes]) -> None:
        with self._lock:
            self._pairs[pair] = None
            while len(self._pairs) > self._size:
                self._pairs.popitem(last=False)


_SIGNED = _SignedPairs(4096)


@functools.lru_cache(maxsize=4096)
def _spki_of_tpm_public(identity_public: bytes) -> bytes:
    """The SubjectPublicKeyInfo DER of an enrolled identity key's stored TPMT_PUBLIC (a pure function
    of the stored bytes; a refusal raises and is not cached)."""
    return parse_tpmt_public(identity_public).public_key().public_bytes(*_SPKI)


def _require_client_auth(leaf: x509.Certificate) -> None:
    try:
        constraints = leaf.extensions.get_extension_for_class(x509.BasicConstraints).value
        usages = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound as exc:
        raise TruckRequestInvalid(f"the certificate lacks {exc.oid.dotted_string}") from None
    if constraints.ca:
        raise TruckRequestInvalid("the certificate is a CA certificate")
    if ExtendedKeyUsageOID.CLIENT_AUTH not in usages:
        raise TruckRequestInvalid("the certificate is not for client authentication (no clientAuth EKU)")


def _only_uri_san(leaf: x509.Certificate) -> str:
    try:
        sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise TruckRequestInvalid("the certificate has no subjectAltName") from None
    uris = sans.get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) != 1:
        raise TruckRequestInvalid(f"the certificate must carry exactly one URI SAN, not {len(uris)}")
    return uris[0]
