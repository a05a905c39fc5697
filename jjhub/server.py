"""One server process: the HTTP API, the SSH gateway and the lifecycle loop."""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass

import uvicorn

from jjhub.api.app import create_app
from jjhub.config import Settings
from jjhub.logs import kv
from jjhub.runtime.base import Runtime
from jjhub.runtime.select import make_runtime
from jjhub.services import Services
from jjhub.ssh.keys import GatewayKeys, ensure_keys
from jjhub.store.db import open_database
from jjhub.workspaces.events import EventHub
from jjhub.workspaces.lifecycle import LifecycleLoop
from jjhub.workspaces.service import WorkspaceService

log = logging.getLogger(__name__)


@dataclass
class Assembly:
    services: Services
    runtime: Runtime
    keys: GatewayKeys
    lifecycle: LifecycleLoop


def assemble(settings: Settings) -> Assembly:
    """Build every long-lived object; nothing is started yet."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = open_database(settings.data_dir, settings.database_url)
    keys = ensure_keys(settings.data_dir)
    runtime = make_runtime(settings)
    workspaces = WorkspaceService(
        settings, db, runtime, EventHub(), keys.client_public_key
    )
    services = Services(settings=settings, db=db, workspaces=workspaces)
    return Assembly(services, runtime, keys, LifecycleLoop(services))


async def serve(settings: Settings) -> None:
    assembly = assemble(settings)
    log.info(
        "starting server %s",
        kv(
            data_dir=settings.data_dir,
            api=f"{settings.api_host}:{settings.api_port}",
            ssh_port=settings.ssh_port,
            runtime=assembly.runtime.name,
        ),
    )
    await assembly.runtime.prepare()
    await assembly.lifecycle.reconcile()

    from jjhub.ssh.gateway import SshGateway
    from jjhub.ssh.workspace_backend import WorkspaceBackend

    gateway = SshGateway(
        WorkspaceBackend(assembly.services),
        assembly.keys,
        settings.ssh_listen_host,
        settings.ssh_port,
    )
    await gateway.start()
    config = uvicorn.Config(
        create_app(assembly.services),
        host=settings.api_host,
        port=settings.api_port,
        log_config=None,
        access_log=False,
        lifespan="off",
    )
    api = uvicorn.Server(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    lifecycle = asyncio.create_task(assembly.lifecycle.run())
    api_task = asyncio.create_task(api.serve())
    log.info(
        "server ready %s", kv(api_port=settings.api_port, ssh_port=settings.ssh_port)
    )
    await asyncio.wait(
        [asyncio.create_task(stop.wait()), api_task],
        return_when=asyncio.FIRST_COMPLETED,
    )
    log.info("stopping server; workspaces keep running")
    api.should_exit = True
    lifecycle.cancel()
    await gateway.stop()
    await asyncio.gather(api_task, lifecycle, return_exceptions=True)
    assembly.services.db.dispose()
