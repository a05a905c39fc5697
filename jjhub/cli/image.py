"""`jjhub image build`: build the base images ahead of the first workspace."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import click

from jjhub import config, logs
from jjhub.errors import DomainError
from jjhub.runtime.errors import RuntimeFailure


@click.group()
def image() -> None:
    """Base images machines start from (built on first need otherwise)."""


@image.command("build")
@click.option(
    "--runtime",
    type=click.Choice(["runc", "qemu", "all"]),
    default="all",
    show_default=True,
    help="Which driver's image to build.",
)
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    help="The server's data directory. [env JJHUB_DATA_DIR; default /var/lib/jjhub]",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def build(runtime: str, data_dir: Path | None, as_json: bool) -> None:
    """Build (or find cached) the Debian base image, with progress in the log.

    The image is keyed by its recipe, so this is quick when nothing changed.
    """
    logs.setup("INFO")
    settings = config.from_environment().with_overrides(data_dir=data_dir)
    try:
        built = asyncio.run(_build(settings.image_dir, runtime))
    except (RuntimeFailure, DomainError) as error:
        raise click.ClickException(str(error)) from None
    if as_json:
        click.echo(json.dumps(built))
        return
    for name, info in built.items():
        click.echo(f"{name}: {info['path']} ({info['seconds']} s)")


async def _build(image_dir: Path, runtime: str) -> dict[str, dict[str, object]]:
    from jjhub.runtime import images
    from jjhub.runtime.runc_config import UID_OFFSET

    built: dict[str, dict[str, object]] = {}
    if runtime in ("runc", "all"):
        started = time.monotonic()
        path = await images.ensure_shifted_rootfs(image_dir, UID_OFFSET)
        built["runc"] = {
            "path": str(path),
            "seconds": round(time.monotonic() - started, 1),
        }
    if runtime in ("qemu", "all"):
        from jjhub.runtime.guest_image import ensure_guest_image

        started = time.monotonic()
        guest = await ensure_guest_image(image_dir)
        built["qemu"] = {
            "path": str(guest.disk),
            "seconds": round(time.monotonic() - started, 1),
        }
    return built
