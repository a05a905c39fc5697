"""Settings from flags, `JJHUB_*` environment and embedded defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

DEFAULT_DATA_DIR = Path("/var/lib/jjhub")


def _env(name: str, default: str) -> str:
    return os.environ.get(f"JJHUB_{name}", default)


@dataclass(frozen=True)
class Settings:
    """Everything the server needs; one data directory holds all its state."""

    data_dir: Path = DEFAULT_DATA_DIR
    api_host: str = "127.0.0.1"
    api_port: int = 3000
    ssh_listen_host: str = "0.0.0.0"
    ssh_port: int = 2222
    ssh_public_host: str = "localhost"
    ssh_public_port: int | None = None
    runtime: str = "auto"
    idle_timeout_seconds: int = 1800
    ssh_token_ttl_seconds: int = 24 * 3600
    rate_limit_per_minute: int = 120
    network_cidr: str = "10.203.0.0/22"
    lifecycle_interval_seconds: float = 5.0
    starting_timeout_seconds: int = 600
    session_idle_seconds: int = 1800
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def database_url(self) -> str:
        return os.environ.get("JJHUB_DATABASE_URL") or (
            f"sqlite:///{self.data_dir / 'jjhub.db'}"
        )

    @property
    def image_dir(self) -> Path:
        """Base images; shareable between data directories (tests share one)."""
        override = os.environ.get("JJHUB_IMAGE_DIR")
        return Path(override) if override else self.data_dir / "images"

    @property
    def advertised_ssh_port(self) -> int:
        return self.ssh_public_port or self.ssh_port

    def with_overrides(self, **values: object) -> Settings:
        clean = {k: v for k, v in values.items() if v is not None}
        return replace(self, **clean)  # type: ignore[arg-type]


def from_environment() -> Settings:
    """Settings with `JJHUB_*` variables applied over the defaults."""
    public_port = _env("SSH_PUBLIC_PORT", "")
    return Settings(
        data_dir=Path(_env("DATA_DIR", str(DEFAULT_DATA_DIR))),
        api_host=_env("API_HOST", "127.0.0.1"),
        api_port=int(_env("API_PORT", "3000")),
        ssh_listen_host=_env("SSH_LISTEN_HOST", "0.0.0.0"),
        ssh_port=int(_env("SSH_PORT", "2222")),
        ssh_public_host=_env("SSH_PUBLIC_HOST", "localhost"),
        ssh_public_port=int(public_port) if public_port else None,
        runtime=_env("RUNTIME", "auto"),
        idle_timeout_seconds=int(_env("IDLE_TIMEOUT", "1800")),
        ssh_token_ttl_seconds=int(_env("SSH_TOKEN_TTL", str(24 * 3600))),
        rate_limit_per_minute=int(_env("RATE_LIMIT", "120")),
        network_cidr=_env("NETWORK_CIDR", "10.203.0.0/22"),
        lifecycle_interval_seconds=float(_env("LIFECYCLE_INTERVAL", "5")),
        starting_timeout_seconds=int(_env("STARTING_TIMEOUT", "600")),
        session_idle_seconds=int(_env("SESSION_IDLE_TIMEOUT", "1800")),
    )
