"""Domain counters beside Litestar's request metrics (both on the default Prometheus registry)."""

from prometheus_client import Counter

certificates_issued = Counter(
    "weighstation_certificates_issued_total", "Certificates issued or renewed", ["profile"]
)
certificates_revoked = Counter("weighstation_certificates_revoked_total", "Certificates revoked", ["reason"])
ca_rotations = Counter("weighstation_ca_rotations_total", "Issuing CA rotations")
