"""Bodies of the fleet, truck and enrollment calls (msgspec; unknown fields are refused with a 400).

TPM structures and DER certificates travel as standard base64 strings (msgspec's `bytes` encoding).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec
from msgspec import Meta

from api.schemas import Pem
from provision.fleets import AUTONOMY_MODES

EntityId = Annotated[
    str,
    Meta(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
        description="Fleet or truck id: letters, digits, '.', '_' or '-', at most 64 characters",
    ),
]
Vin = Annotated[
    str, Meta(pattern=r"^[A-HJ-NPR-Z0-9]{17}$", description="ISO 3779 VIN: 17 characters, no I, O or Q")
]
Sha256Hex = Annotated[str, Meta(pattern=r"^[0-9a-f]{64}$", description="Lower-case hex SHA-256")]
Label = Annotated[str, Meta(min_length=1, max_length=128)]
Der = Annotated[bytes, Meta(min_length=1, max_length=8192, description="DER certificate, base64")]
TpmPublic = Annotated[bytes, Meta(min_length=1, max_length=1024, description="TPMT_PUBLIC, base64")]
TpmBlob = Annotated[bytes, Meta(min_length=1, max_length=2048, description="TPM structure, base64")]
QuoteBlob = Annotated[bytes, Meta(min_length=1, max_length=4096, description="TPMS_ATTEST, base64")]
PcrValues = Annotated[
    dict[Annotated[str, Meta(pattern=r"^[0-9]{1,2}$")], Annotated[bytes, Meta(max_length=64)]],
    Meta(max_length=24, description="PCR index → value, base64"),
]
EventLogBlob = Annotated[
    bytes, Meta(min_length=1, max_length=1_000_000, description="TCG crypto-agile event log, base64")
]


class _In(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    pass


class FleetIn(_In):
    id: EntityId
    name: Label


class FleetOut(msgspec.Struct, kw_only=True):
    id: str
    name: str
    created_at: datetime


PolicyNumber = Annotated[
    str,
    Meta(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}$",
        description="Insurance policy number, as insurers' clients carry it in `insurer_policies`",
    ),
]
AwareTime = Annotated[datetime, Meta(tz=True, description="RFC 3339 time with a UTC offset")]


class CoverIn(_In):
    policy_number: PolicyNumber
    valid_from: AwareTime
    # Exclusive; absent or null: the cover has no end date yet.
    valid_until: AwareTime | None = None


class CoverageIn(_In):
    """A fleet's whole coverage, past covers included: it replaces the recorded list."""

    policies: Annotated[list[CoverIn], Meta(max_length=256)]


class CoverOut(msgspec.Struct, kw_only=True):
    policy_number: str
    valid_from: datetime
    valid_until: datetime | None


class CoverageOut(msgspec.Struct, kw_only=True):
    fleet: str
    policies: list[CoverOut]


class TruckIn(_In):
    id: EntityId
    vin: Vin
    model: Label
    # Optional pin: SHA-256 of the DER SubjectPublicKeyInfo of the truck's EK, if the maker supplied it.
    ek_sha256: Sha256Hex | None = None


class TruckOut(msgspec.Struct, kw_only=True):
    id: str
    fleet: str
    vin: str
    model: str
    state: str
    spiffe_id: str
    expected_ek_sha256: str | None
    ek_sha256: str | None
    ak_name: str | None
    certificate_serial: str | None
    enrolled_at: datetime | None
    created_at: datetime
    # Defaults only for replaying a registerTruck response stored before trucks had a profile (they
    # were registered with exactly these).
    autonomy_mode: str = "unknown"
    hazmat_certified: bool = False


class TruckProfileIn(_In):
    """The whole profile (both fields required): what Cedar's Truck.autonomy_mode and
    Truck.hazmat_certified say from now on."""

    # Documented as an enum but checked by the use case, so an unknown mode is refused with its own code
    # (invalid-autonomy-mode) rather than as a generic invalid body.
    autonomy_mode: Annotated[
        str,
        Meta(
            description="driverless, supervised, manual or unknown",
            extra_json_schema={"extra": {"enum": sorted(AUTONOMY_MODES)}},  # how Litestar takes it
        ),
    ]
    hazmat_certified: Annotated[
        bool, Meta(description="Certified (placarding, equipment, inspection) to haul hazardous materials")
    ]


class TokenIn(_In):
    ttl_seconds: Annotated[int, Meta(ge=60, le=86400)] | None = None


class TokenOut(msgspec.Struct, kw_only=True):
    token: str
    jti: str
    truck: str
    expires_at: datetime


class SwapIn(_In):
    reason: Annotated[str, Meta(min_length=1, max_length=512)]


class SwapOut(msgspec.Struct, kw_only=True):
    id: int
    truck: str
    reason: str
    approved_by: str
    approved_at: datetime
    consumed_at: datetime | None


class EnrollmentStartIn(_In):
    ek_certificate: Der
    ek_public: TpmPublic
    ak_public: TpmPublic
    # The id the truck was provisioned with: if sent, it must be the truck the token was minted for.
    truck: EntityId | None = None
    ek_intermediates: Annotated[list[Der], Meta(max_length=4)] = msgspec.field(default_factory=list)


class ChallengeOut(msgspec.Struct, kw_only=True):
    enrollment_id: str
    truck: str
    credential_blob: bytes
    encrypted_secret: bytes
    certify_nonce: bytes
    expires_at: datetime
    # The first quote: extraData to carry, bank and PCRs to quote (null when none is asked for).
    quote_nonce: bytes | None = None
    quote_bank: str | None = None
    quote_pcrs: list[int] = msgspec.field(default_factory=list)


class EnrollmentActivateIn(_In):
    secret: Annotated[bytes, Meta(min_length=1, max_length=64)]
    identity_public: TpmPublic
    certify_info: TpmBlob
    certify_signature: TpmBlob
    csr: Pem
    # The first quote by the AK being enrolled over quote_nonce, with the PCR values and the
    # measured-boot event log: all four, or none (refused where the authority asks for one).
    quote: QuoteBlob | None = None
    quote_signature: TpmBlob | None = None
    pcr_values: PcrValues | None = None
    event_log: EventLogBlob | None = None


class EnrollmentOut(msgspec.Struct, kw_only=True):
    truck: str
    fleet: str
    spiffe_id: str
    serial: str
    not_after: datetime
    certificate_pem: str
    chain_pem: str
