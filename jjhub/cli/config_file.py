"""Where the CLI keeps its settings, and how the environment overrides them.

The config file is `$XDG_CONFIG_HOME/jjhub/config.json` (mode 600), written
by `jjhub auth login`. `JJHUB_API_URL` and `JJHUB_TOKEN` win over it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_API_URL = "http://localhost:3000"


def _xdg(variable: str, fallback: str) -> Path:
    value = os.environ.get(variable, "")
    if value and os.path.isabs(value):
        return Path(value)
    return Path.home() / fallback


def config_path() -> Path:
    return _xdg("XDG_CONFIG_HOME", ".config") / "jjhub" / "config.json"


def state_dir() -> Path:
    return _xdg("XDG_STATE_HOME", ".local/state") / "jjhub"


def known_hosts_path() -> Path:
    """The CLI's own known-hosts file, so gateway keys never touch ~/.ssh."""
    directory = state_dir()
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    return directory / "known_hosts"


def load() -> dict[str, Any]:
    """The saved settings, or {} when there are none or the file is unreadable."""
    try:
        data = json.loads(config_path().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def save(data: dict[str, Any]) -> Path:
    """Write the settings atomically with mode 600 (the file holds a token)."""
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_suffix(".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        os.fchmod(handle.fileno(), 0o600)
        json.dump(data, handle, indent=2)
        handle.write("\n")
    os.replace(temporary, path)
    return path


@dataclass(frozen=True)
class Credentials:
    api_url: str
    token: str | None
    # Where the token came from: "env", "config" or "" when there is none.
    token_source: str
    username: str | None = None


def credentials() -> Credentials:
    saved = load()
    api_url = (
        os.environ.get("JJHUB_API_URL") or saved.get("api_url") or DEFAULT_API_URL
    ).rstrip("/")
    env_token = os.environ.get("JJHUB_TOKEN", "").strip()
    if env_token:
        return Credentials(api_url, env_token, "env")
    token = saved.get("token") or None
    return Credentials(api_url, token, "config" if token else "", saved.get("username"))
