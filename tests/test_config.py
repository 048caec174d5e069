"""Settings: defaults, TOML file, environment overrides, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from kakitome.config import load_settings
from kakitome.errors import ConfigError
from kakitome.queue.schedule import RetrySchedule
from kakitome.tls.policy import PolicySource, TLSLevel, resolve_tls_policy


def test_defaults_are_sqlite_and_may() -> None:
    """Without a file or environment, the service runs on SQLite with opportunistic TLS."""
    settings = load_settings(environ={})
    assert settings.database.url.startswith("sqlite:///")
    assert settings.tls.default_level is TLSLevel.MAY
    assert settings.delivery.smtp_port == 25


def test_toml_then_environment_wins(tmp_path: Path) -> None:
    """A TOML file sets values and KAKITOME_<SECTION>__<KEY> overrides them."""
    file = tmp_path / "k.toml"
    file.write_text(
        '[delivery]\nsmtp_port = 2525\nhelo_hostname = "mx.example.jp"\n'
        '[tls]\ndefault_level = "encrypt"\npolicy = { "bank.example" = "secure" }\n',
        encoding="utf-8",
    )
    env = {"KAKITOME_DELIVERY__SMTP_PORT": "2600", "KAKITOME_DNS__NAMESERVERS": "127.0.0.1:5353"}
    settings = load_settings(file, environ=env)
    assert settings.delivery.smtp_port == 2600
    assert settings.delivery.helo_hostname == "mx.example.jp"
    assert settings.tls.default_level is TLSLevel.ENCRYPT
    assert settings.tls.policy == {"bank.example": TLSLevel.SECURE}
    assert settings.dns.nameservers == ("127.0.0.1:5353",)


def test_config_path_from_environment(tmp_path: Path) -> None:
    """KAKITOME_CONFIG names the settings file when --config is not given."""
    file = tmp_path / "k.toml"
    file.write_text('[http]\nport = 9999\n', encoding="utf-8")
    assert load_settings(environ={"KAKITOME_CONFIG": str(file)}).http.port == 9999


def test_policy_table_from_environment_json() -> None:
    """The per-domain TLS table can be given as JSON in the environment."""
    env = {"KAKITOME_TLS__POLICY": '{".example.net": "verify"}'}
    table = load_settings(environ=env).tls.policy
    policy = resolve_tls_policy("mx.example.net", table, TLSLevel.MAY)
    assert policy.level is TLSLevel.VERIFY and policy.source is PolicySource.TABLE
    assert resolve_tls_policy("other.test", table, TLSLevel.MAY).source is PolicySource.DEFAULT


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"KAKITOME_DELIVERY__SMTP_PORT": "seventy"}, "delivery.smtp_port"),
        ({"KAKITOME_TLS__DEFAULT_LEVEL": "sometimes"}, "tls.default_level"),
        ({"KAKITOME_DELIVERY__NO_SUCH_KEY": "1"}, "no_such_key"),
        ({"KAKITOME_NOSECTION__KEY": "1"}, "nosection"),
    ],
)
def test_bad_values_name_the_key(env: dict[str, str], fragment: str) -> None:
    """A value that does not parse gives a ConfigError naming the key."""
    with pytest.raises(ConfigError, match=fragment):
        load_settings(environ=env)


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    """An explicit settings file that does not exist is an error, not silently ignored."""
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "absent.toml", environ={})


def test_retry_schedule_grows_and_caps() -> None:
    """Back-off starts at the first delay, doubles, and never exceeds the maximum."""
    schedule = RetrySchedule(first=300, factor=2, maximum=14_400, lifetime=432_000)
    delays = [schedule.delay(n) for n in range(1, 10)]
    assert delays[:3] == [300, 600, 1200]
    assert max(delays) == 14_400
    assert schedule.delay(10_000) == 14_400
