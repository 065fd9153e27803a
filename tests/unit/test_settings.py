from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from api.settings import SettingsError, load_settings, parse_duration, to_env
from pki.signer import KeyAlgorithm


def test_defaults_are_the_embedded_setup() -> None:
    settings = load_settings({})
    assert settings.effective_database_url.startswith("sqlite:///")
    assert not settings.uses_vault and settings.truck_cert_ttl == timedelta(hours=24)


def test_environment_is_read_and_typed() -> None:
    settings = load_settings(
        {
            "WEIGHSTATION_DATA_DIR": "/srv/ws",
            "WEIGHSTATION_TRUCK_CERT_TTL": "12h",
            "WEIGHSTATION_CA_KEY_ALGORITHM": "rsa-3072",
            "WEIGHSTATION_PORT": "9000",
            "WEIGHSTATION_DATABASE_URL": "postgresql://ws@db/ws",
        }
    )
    assert settings.data_dir == Path("/srv/ws") and settings.port == 9000
    assert settings.truck_cert_ttl == timedelta(hours=12)
    assert settings.ca_key_algorithm is KeyAlgorithm.RSA_3072


def test_cli_overrides_win_and_round_trip_through_the_environment() -> None:
    settings = load_settings({"WEIGHSTATION_PORT": "9000"}, {"port": 9100, "host": None})
    assert settings.port == 9100
    assert load_settings(to_env(settings)) == settings


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("WEIGHSTATION_PORT", "eighty", "WEIGHSTATION_PORT"),
        ("WEIGHSTATION_PORT", "70000", "1..65535"),
        ("WEIGHSTATION_TRUST_DOMAIN", "Fleet Example", "DNS name"),
        ("WEIGHSTATION_DATABASE_URL", "mysql://x/y", "sqlite"),
        ("WEIGHSTATION_VAULT_ADDR", "vault:8200", "http"),
        ("WEIGHSTATION_CA_KEY_ALGORITHM", "dsa-1024", "WEIGHSTATION_CA_KEY_ALGORITHM"),
        ("WEIGHSTATION_TRUCK_CERT_TTL", "a while", "duration"),
        ("WEIGHSTATION_ISSUING_CA_TTL", "99999d", "ROOT_CA_TTL"),
    ],
)
def test_bad_settings_are_named(variable: str, value: str, says: str) -> None:
    with pytest.raises(SettingsError, match=says):
        load_settings({variable: value})


def test_vault_needs_a_token() -> None:
    with pytest.raises(SettingsError, match="VAULT_TOKEN"):
        load_settings({"WEIGHSTATION_VAULT_ADDR": "http://127.0.0.1:8200"})


def test_durations() -> None:
    assert parse_duration("90") == timedelta(seconds=90)
    assert parse_duration("15m") == timedelta(minutes=15)
    assert parse_duration("30d") == timedelta(days=30)
    with pytest.raises(ValueError, match="duration"):
        parse_duration("1w")
