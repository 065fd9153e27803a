"""What the authority's use cases need from the settings."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from pki.signer import KeyAlgorithm


@dataclass(frozen=True)
class AuthorityConfig:
    trust_domain: str
    public_url: str
    ca_key_algorithm: KeyAlgorithm = KeyAlgorithm.EC_P256
    root_ca_ttl: timedelta = timedelta(days=3650)
    issuing_ca_ttl: timedelta = timedelta(days=365)
    truck_cert_ttl: timedelta = timedelta(hours=24)
    crl_validity: timedelta = timedelta(hours=24)
    ocsp_validity: timedelta = timedelta(hours=1)
