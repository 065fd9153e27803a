"""SAN syntax: SPIFFE IDs (spiffe.io SPIFFE-ID spec §2) and DNS hostnames (RFC 1123), parsed strictly."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from pki.errors import ProfileViolation, SanOutsideTrustDomain

SPIFFE_PREFIX = "spiffe://"
_MAX_SPIFFE_ID = 2048
_MAX_HOSTNAME = 253
_TRUST_DOMAIN = re.compile(r"[a-z0-9._-]{1,255}")
_PATH_SEGMENT = re.compile(r"[A-Za-z0-9._-]+")
_DNS_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
# Fleet and truck ids: what the registry accepts, so a SAN can always be traced back to a row.
ENTITY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True)
class SpiffeId:
    trust_domain: str
    segments: tuple[str, ...]

    @property
    def path(self) -> str:
        return "/" + "/".join(self.segments)

    def __str__(self) -> str:
        return f"{SPIFFE_PREFIX}{self.trust_domain}{self.path}"


@dataclass(frozen=True)
class TruckId:
    fleet: str
    truck: str


def check_trust_domain(trust_domain: str) -> str:
    """Configuration check (ValueError): a SPIFFE trust domain is a lowercase host name."""
    if not _TRUST_DOMAIN.fullmatch(trust_domain) or not is_hostname(trust_domain):
        raise ValueError(f"invalid trust domain {trust_domain!r}")
    return trust_domain


def parse_spiffe_id(uri: str, trust_domain: str) -> SpiffeId:
    """A SPIFFE ID in `trust_domain` with a non-empty path, or ProfileViolation/SanOutsideTrustDomain."""
    shown = uri[:128]
    if len(uri) > _MAX_SPIFFE_ID:
        raise ProfileViolation("URI SAN is longer than a SPIFFE ID may be (2048 bytes)")
    if not uri.startswith(SPIFFE_PREFIX):
        raise ProfileViolation(f"URI SAN {shown!r} is not a spiffe:// URI")
    authority, _, path = uri.removeprefix(SPIFFE_PREFIX).partition("/")
    if "?" in uri or "#" in uri:
        raise ProfileViolation(f"URI SAN {shown!r} carries a query or fragment")
    if "@" in authority:
        raise ProfileViolation(f"URI SAN {shown!r} carries userinfo")
    if ":" in authority:
        raise ProfileViolation(f"URI SAN {shown!r} carries a port")
    if authority != trust_domain:
        raise SanOutsideTrustDomain(f"URI SAN {shown!r} is outside trust domain {trust_domain!r}")
    if not path:
        raise ProfileViolation(f"URI SAN {shown!r} has no path")
    segments = tuple(path.split("/"))
    for segment in segments:
        # Empty, '.' and '..' segments would let two spellings name one workload (SPIFFE-ID §2.2).
        if segment in ("", ".", "..") or not _PATH_SEGMENT.fullmatch(segment):
            raise ProfileViolation(f"URI SAN {shown!r} has an invalid path segment {segment[:64]!r}")
    return SpiffeId(trust_domain=authority, segments=segments)


def parse_truck_id(uri: str, trust_domain: str) -> TruckId:
    """spiffe://<trust_domain>/fleet/<fleet>/truck/<truck>, exactly."""
    spiffe = parse_spiffe_id(uri, trust_domain)
    parts = spiffe.segments
    if len(parts) != 4 or parts[0] != "fleet" or parts[2] != "truck":
        raise ProfileViolation(f"URI SAN path {spiffe.path[:128]!r} is not /fleet/<fleet>/truck/<truck>")
    fleet, truck = parts[1], parts[3]
    if not ENTITY_ID.fullmatch(fleet) or not ENTITY_ID.fullmatch(truck):
        raise ProfileViolation(f"URI SAN path {spiffe.path[:128]!r} has an invalid fleet or truck id")
    return TruckId(fleet=fleet, truck=truck)


def is_hostname(name: str) -> bool:
    if not name or len(name) > _MAX_HOSTNAME:
        return False
    labels = name.split(".")
    if not all(_DNS_LABEL.fullmatch(label) for label in labels):
        return False
    # An all-numeric last label is an IPv4 address in disguise; IPs belong in iPAddress SANs.
    return not labels[-1].isdigit()


def check_dns_name(name: str) -> str:
    """A DNS SAN: a plain hostname, no wildcard, no IP address, no empty label, ≤ 253 characters."""
    shown = name[:128]
    if "*" in name:
        raise ProfileViolation(f"DNS SAN {shown!r} is a wildcard")
    try:
        ipaddress.ip_address(name)
    except ValueError:
        pass
    else:
        raise ProfileViolation(f"DNS SAN {shown!r} is an IP address")
    if not is_hostname(name):
        raise ProfileViolation(f"DNS SAN {shown!r} is not a valid hostname")
    return name
