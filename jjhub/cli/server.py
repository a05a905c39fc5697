"""`jjhub server`: run the API, the SSH gateway and the lifecycle loop."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from jjhub import config, logs

ENVIRONMENT_ONLY = """\b
Settings with no flag (environment only):
  JJHUB_RATE_LIMIT            API requests a minute per token (120)
  JJHUB_SSH_TOKEN_TTL         lifetime of SSH access tokens, seconds (86400)
  JJHUB_LIFECYCLE_INTERVAL    seconds between lifecycle passes (5)
  JJHUB_STARTING_TIMEOUT      seconds before a stuck create is failed (600)
  JJHUB_SESSION_IDLE_TIMEOUT  seconds before an idle legacy session ends (1800)
  JJHUB_IMAGE_DIR             base images (DATA_DIR/images)
  JJHUB_DEBIAN_MIRROR         mirror for the base image (deb.debian.org)
  JJHUB_QEMU_ACCEL            kvm, tcg or auto (auto probes KVM once per boot)
  JJHUB_DATABASE_URL          SQLAlchemy URL (SQLite in the data directory)
"""


@click.command(epilog=ENVIRONMENT_ONLY)
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    help="Where the database, images, machines, snapshots and keys live. [env JJHUB_DATA_DIR; default /var/lib/jjhub]",
)
@click.option(
    "--host",
    "api_host",
    help="Address the HTTP API listens on. [env JJHUB_API_HOST; default 127.0.0.1]",
)
@click.option(
    "--port",
    "api_port",
    type=int,
    help="Port of the HTTP API. [env JJHUB_API_PORT; default 3000]",
)
@click.option(
    "--ssh-listen-host",
    help="Address the SSH gateway listens on. [env JJHUB_SSH_LISTEN_HOST; default 0.0.0.0]",
)
@click.option(
    "--ssh-port",
    type=int,
    help="Port the SSH gateway listens on. [env JJHUB_SSH_PORT; default 2222]",
)
@click.option(
    "--ssh-public-host",
    help="Host name written into SSH connection info. [env JJHUB_SSH_PUBLIC_HOST; default localhost]",
)
@click.option(
    "--ssh-public-port",
    type=int,
    help="Port written into SSH connection info, if a proxy maps it. [env JJHUB_SSH_PUBLIC_PORT; default the gateway port]",
)
@click.option(
    "--runtime",
    type=click.Choice(["auto", "runc", "qemu"]),
    help="Machine driver; auto picks qemu where KVM works, else runc. [env JJHUB_RUNTIME; default auto]",
)
@click.option(
    "--idle-timeout",
    "idle_timeout_seconds",
    type=int,
    help="Seconds without activity before a workspace is suspended, unless the workspace or repository says otherwise. [env JJHUB_IDLE_TIMEOUT; default 1800]",
)
@click.option(
    "--network-cidr",
    help="Private address range for runc workspaces (one per server on a host). [env JJHUB_NETWORK_CIDR; default 10.203.0.0/22]",
)
@click.option(
    "--log-level",
    default="INFO",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]),
)
def server(log_level: str, **overrides: object) -> None:
    """Run the workspace server in the foreground.

    Workspaces keep running when the server stops; on start it reconciles its
    database with what the runtime reports.
    """
    logs.setup(log_level)
    settings = config.from_environment().with_overrides(**overrides)
    from jjhub.server import serve

    asyncio.run(serve(settings))
