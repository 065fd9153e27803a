"""Settings, read once (environment, then CLI overrides) and validated with clear messages.

Nothing reads the environment at import time: `load_settings` is called by the CLI or the ASGI
factory, and the resulting frozen object is passed down.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from cryptography import x509

from pki.filekeys import load_or_create_passphrase
from pki.signer import KeyAlgorithm
from tlog.note import is_valid_key_name

PREFIX = "WEIGHSTATION_"
_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DNS_NAME = re.compile(
    r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$"
)


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable and what is expected."""


def parse_duration(text: str) -> timedelta:
    """'90s', '15m', '24h', '365d' (a plain integer means seconds)."""
    text = text.strip()
    if text.isdigit():
        return timedelta(seconds=int(text))
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration like 90s, 15m, 24h or 30d")
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("data")
    database_url: str = ""
    vault_addr: str = ""
    vault_token: str = field(default="", repr=False)
    vault_mount: str = "transit"
    key_passphrase: str = field(default="", repr=False)
    trust_domain: str = "weighstation.local"
    ca_key_algorithm: KeyAlgorithm = KeyAlgorithm.EC_P256
    root_ca_ttl: timedelta = timedelta(days=3650)
    issuing_ca_ttl: timedelta = timedelta(days=365)
    truck_cert_ttl: timedelta = timedelta(hours=24)
    crl_validity: timedelta = timedelta(hours=24)
    ocsp_validity: timedelta = timedelta(hours=1)
    public_url: str = "http://127.0.0.1:8443"
    host: str = "127.0.0.1"
    port: int = 8443
    workers: int = 1
    max_body_bytes: int = 65536
    log_level: str = "INFO"
    # Enrollment: PEM bundles of the TPM makers' roots (pinned) and intermediates; without roots,
    # no EK is trusted and enrollment is refused.
    tpm_manufacturer_roots: str = ""
    tpm_manufacturer_intermediates: str = ""
    enrollment_token_key: str = field(default="", repr=False)
    enrollment_token_ttl: timedelta = timedelta(minutes=15)
    enrollment_challenge_ttl: timedelta = timedelta(minutes=5)
    # A first quote must pass before the identity certificate is issued (DESIGN.md flow 3); false only
    # while a deployment's trucks cannot yet boot measured. A model without any golden release refuses
    # enrollment unless enrollment_require_release is false (then: enrolled, attested "warning").
    enrollment_first_quote: bool = True
    enrollment_require_release: bool = True
    # Attestation: the PCRs every quote must cover (the authority's choice, never the truck's), how long
    # a nonce and a result last, and whether a passing attestation lifts a quarantine by itself.
    attestation_bank: str = "sha256"
    attestation_pcrs: str = "0-15"
    attestation_nonce_ttl: timedelta = timedelta(minutes=2)
    attestation_result_ttl: timedelta = timedelta(minutes=10)
    quarantine_auto_lift: bool = False
    # A truck certificate is renewed only with an affirming attestation at most this old.
    renewal_attestation_window: timedelta = timedelta(minutes=15)
    # Transparency log: its origin line (default "<trust domain>/log") and its key's algorithm.
    log_origin: str = ""
    log_key_algorithm: KeyAlgorithm = KeyAlgorithm.ED25519
    access_token_ttl: timedelta = timedelta(minutes=5)
    # Clock skew tolerated between us and clients (assertion iat/nbf/exp) and added to a retired
    # access-token key's overlap after a rotation.
    clock_skew: timedelta = timedelta(seconds=30)
    # mTLS through a reverse proxy: the peers (CIDRs) whose client-certificate header is believed, and
    # that header (URL-escaped PEM, as nginx's $ssl_client_escaped_cert gives). Empty: believe none.
    trusted_proxies: str = ""
    client_cert_header: str = "X-Forwarded-Client-Cert"

    @property
    def attestation_pcr_list(self) -> tuple[int, ...]:
        """'0-7,10' → (0, ..., 7, 10)."""
        pcrs: set[int] = set()
        for part in self.attestation_pcrs.split(","):
            low, _, high = part.strip().partition("-")
            pcrs.update(range(int(low), int(high or low) + 1))
        return tuple(sorted(pcrs))

    @property
    def trusted_proxy_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        """'10.0.0.0/8, ::1/128' → the networks; a bare address is a /32 (/128)."""
        return tuple(
            ipaddress.ip_network(part.strip()) for part in self.trusted_proxies.split(",") if part.strip()
        )

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'weighstation.db').resolve()}"

    @property
    def effective_log_origin(self) -> str:
        return self.log_origin or f"{self.trust_domain}/log"

    @property
    def uses_vault(self) -> bool:
        return bool(self.vault_addr)

    def validate(self) -> Settings:
        if not _DNS_NAME.match(self.trust_domain):
            raise SettingsError(
                f"{PREFIX}TRUST_DOMAIN={self.trust_domain!r}: expected a lower-case DNS name "
                "such as fleet.example"
            )
        url = self.effective_database_url
        if not url.startswith(("sqlite:///", "postgresql://", "postgresql+psycopg://")):
            raise SettingsError(
                f"{PREFIX}DATABASE_URL={url!r}: expected sqlite:///PATH or postgresql+psycopg://USER@HOST/DB"
            )
        if self.vault_addr and not self.vault_addr.startswith(("http://", "https://")):
            raise SettingsError(f"{PREFIX}VAULT_ADDR={self.vault_addr!r}: expected http(s)://host:port")
        if self.vault_addr and not self.vault_token:
            raise SettingsError(f"{PREFIX}VAULT_TOKEN is required when {PREFIX}VAULT_ADDR is set")
        if not self.public_url.startswith(("http://", "https://")):
            raise SettingsError(f"{PREFIX}PUBLIC_URL={self.public_url!r}: expected an http(s) URL")
        if not 1 <= self.port <= 65535:
            raise SettingsError(f"{PREFIX}PORT={self.port}: expected 1..65535")
        if not 1 <= self.workers <= 64:
            raise SettingsError(f"{PREFIX}WORKERS={self.workers}: expected 1..64")
        if self.max_body_bytes < 1024:
            raise SettingsError(f"{PREFIX}MAX_BODY_BYTES={self.max_body_bytes}: expected at least 1024")
        for name in (
            "root_ca_ttl",
            "issuing_ca_ttl",
            "truck_cert_ttl",
            "crl_validity",
            "ocsp_validity",
            "enrollment_token_ttl",
            "enrollment_challenge_ttl",
            "attestation_nonce_ttl",
            "attestation_result_ttl",
            "renewal_attestation_window",
            "access_token_ttl",
        ):
            if getattr(self, name) <= timedelta(0):
                raise SettingsError(f"{PREFIX}{name.upper()}: must be positive")
        try:
            self.trusted_proxy_networks  # noqa: B018 -- parsed here so a typo stops the start
        except ValueError as exc:
            raise SettingsError(f"{PREFIX}TRUSTED_PROXIES={self.trusted_proxies!r}: {exc}") from None
        if not re.fullmatch(r"[A-Za-z0-9-]{1,64}", self.client_cert_header):
            raise SettingsError(
                f"{PREFIX}CLIENT_CERT_HEADER={self.client_cert_header!r}: an HTTP header name"
            )
        if self.clock_skew > timedelta(minutes=5):
            raise SettingsError(f"{PREFIX}CLOCK_SKEW: at most 5m")
        if self.enrollment_token_ttl > timedelta(days=1):
            raise SettingsError(f"{PREFIX}ENROLLMENT_TOKEN_TTL: at most 24h (tokens are short-lived)")
        if self.enrollment_token_key and len(self.enrollment_token_key) < 32:
            raise SettingsError(f"{PREFIX}ENROLLMENT_TOKEN_KEY: at least 32 characters")
        if self.attestation_bank not in {"sha256", "sha384"}:
            raise SettingsError(f"{PREFIX}ATTESTATION_BANK={self.attestation_bank!r}: sha256 or sha384")
        try:
            pcrs = self.attestation_pcr_list
        except ValueError:
            pcrs = ()
        if not pcrs or any(not 0 <= p <= 23 for p in pcrs):
            raise SettingsError(
                f"{PREFIX}ATTESTATION_PCRS={self.attestation_pcrs!r}: PCRs like 0-15 or 0-7,10"
            )
        if not is_valid_key_name(self.effective_log_origin):
            raise SettingsError(f"{PREFIX}LOG_ORIGIN={self.log_origin!r}: a note key name (no spaces or '+')")
        if self.log_key_algorithm not in (KeyAlgorithm.ED25519, KeyAlgorithm.EC_P256):
            raise SettingsError(f"{PREFIX}LOG_KEY_ALGORITHM={self.log_key_algorithm}: ed25519 or ec-p256")
        if self.issuing_ca_ttl > self.root_ca_ttl:
            raise SettingsError(f"{PREFIX}ISSUING_CA_TTL must not exceed {PREFIX}ROOT_CA_TTL")
        return self


def _convert(name: str, raw: str, default: object) -> object:
    if isinstance(default, bool):
        return raw.lower() in {"1", "true", "yes"}
    if isinstance(default, int):
        return int(raw)
    if isinstance(default, timedelta):
        return parse_duration(raw)
    if isinstance(default, KeyAlgorithm):
        return KeyAlgorithm(raw)
    if isinstance(default, Path):
        return Path(raw)
    return raw


def load_settings(env: Mapping[str, str], overrides: Mapping[str, object] | None = None) -> Settings:
    """Build settings from `WEIGHSTATION_*` variables, then apply CLI overrides (already typed)."""
    if env.get(PREFIX + "ADMIN_TOKEN"):
        # Refused rather than ignored: whoever set it believes a token guards the operator calls.
        raise SettingsError(
            f"{PREFIX}ADMIN_TOKEN is no longer supported: operators are OAuth2 clients; create the "
            "first one with `weighstation client create --kind operator --name NAME --global-admin`"
        )
    values: dict[str, Any] = {}
    defaults = Settings()
    for f in fields(Settings):
        raw = env.get(PREFIX + f.name.upper())
        if raw is None or raw == "":
            continue
        try:
            values[f.name] = _convert(f.name, raw, getattr(defaults, f.name))
        except ValueError as exc:
            raise SettingsError(f"{PREFIX}{f.name.upper()}={raw!r}: {exc}") from None
    for key, value in (overrides or {}).items():
        if value is not None:
            values[key] = value
    return replace(defaults, **values).validate()


def to_env(settings: Settings) -> dict[str, str]:
    """The inverse of load_settings, so worker processes rebuild exactly the same settings."""
    env: dict[str, str] = {}
    for f in fields(Settings):
        value = getattr(settings, f.name)
        text = f"{int(value.total_seconds())}s" if isinstance(value, timedelta) else str(value)
        env[PREFIX + f.name.upper()] = text
    return env


def enrollment_token_key(settings: Settings) -> bytes:
    """The configured HMAC key for enrollment tokens, or one generated once into the data dir (0600).
    Replicas must share it (same setting, or the same data dir)."""
    if settings.enrollment_token_key:
        return settings.enrollment_token_key.encode()
    return load_or_create_passphrase(settings.data_dir / "secrets" / "enrollment-token-key")


def load_pem_bundle(variable: str, path: str) -> tuple[x509.Certificate, ...]:
    """Certificates from a PEM file named by a setting; an unreadable or empty bundle stops start-up."""
    if not path:
        return ()
    try:
        certificates = x509.load_pem_x509_certificates(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        raise SettingsError(
            f"{PREFIX}{variable}={path!r}: not a readable PEM certificate bundle ({exc})"
        ) from None
    return tuple(certificates)
