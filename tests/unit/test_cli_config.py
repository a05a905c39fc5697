"""The CLI's config file and the environment variables that override it."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from jjhub.cli import config_file


@pytest.fixture(autouse=True)
def xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.delenv("JJHUB_TOKEN", raising=False)
    monkeypatch.delenv("JJHUB_API_URL", raising=False)
    return tmp_path


def test_save_writes_the_file_with_mode_600(xdg: Path) -> None:
    path = config_file.save({"api_url": "http://h:1", "token": "jjhub_x"})

    assert path == xdg / "config" / "jjhub" / "config.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert config_file.load()["token"] == "jjhub_x"


def test_credentials_come_from_the_file() -> None:
    config_file.save({"api_url": "http://h:1/", "token": "jjhub_x"})

    creds = config_file.credentials()

    assert (creds.api_url, creds.token, creds.token_source) == (
        "http://h:1",
        "jjhub_x",
        "config",
    )


def test_environment_overrides_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    config_file.save({"api_url": "http://h:1", "token": "jjhub_x"})
    monkeypatch.setenv("JJHUB_TOKEN", "jjhub_env")
    monkeypatch.setenv("JJHUB_API_URL", "http://other:2")

    creds = config_file.credentials()

    assert (creds.api_url, creds.token, creds.token_source) == (
        "http://other:2",
        "jjhub_env",
        "env",
    )


def test_credentials_without_anything_have_no_token() -> None:
    creds = config_file.credentials()

    assert creds.token is None
    assert creds.api_url == config_file.DEFAULT_API_URL


def test_unreadable_config_counts_as_empty(xdg: Path) -> None:
    path = xdg / "config" / "jjhub" / "config.json"
    path.parent.mkdir(parents=True)
    path.write_text("{not json")

    assert config_file.load() == {}


def test_known_hosts_lives_in_the_state_directory(xdg: Path) -> None:
    assert config_file.known_hosts_path() == xdg / "state" / "jjhub" / "known_hosts"
