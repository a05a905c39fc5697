"""The repository checkout a new workspace starts with."""

from __future__ import annotations

import logging
from urllib.parse import urlsplit, urlunsplit

from jjhub.logs import kv
from jjhub.runtime.base import Runtime

log = logging.getLogger(__name__)

CHECKOUT_DIR = "/home/developer/workspace"
LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1", "[::1]"}


def reachable_url(clone_url: str, host_address: str | None) -> str:
    """Rewrite a loopback clone URL to the host as seen from inside a machine.

    A repository served on the server's own loopback is a common self-hosted
    setup; inside the machine "localhost" is the machine itself.
    """
    parts = urlsplit(clone_url)
    if host_address is None or parts.hostname not in LOOPBACK_HOSTS:
        return clone_url
    netloc = host_address + (f":{parts.port}" if parts.port else "")
    if parts.username:
        netloc = f"{parts.username}@{netloc}"
    return urlunsplit(parts._replace(netloc=netloc))


async def clone(
    runtime: Runtime, machine_id: str, clone_url: str, host_address: str | None
) -> str | None:
    """Clone into the checkout directory as `developer`; the error text, if any."""
    url = reachable_url(clone_url, host_address)
    result = await runtime.exec(
        machine_id,
        ["git", "clone", "--quiet", url, CHECKOUT_DIR],
        user="developer",
    )
    if result.exit_code == 0:
        log.info("cloned repository %s", kv(machine=machine_id, url=url))
        return None
    error = result.stderr.decode(errors="replace").strip().splitlines()
    message = error[-1] if error else f"git exited with {result.exit_code}"
    log.warning("clone failed %s", kv(machine=machine_id, url=url, error=message))
    return message
