"""The loop that looks after workspaces when nobody is calling the API.

Each pass: reconcile the database with the runtime, fail workspaces stuck in
`starting`, suspend (or delete, when ephemeral) idle ones through the same
code path as an explicit call, end idle legacy sessions, purge expired SSH
tokens. A pass that fails is logged and the next one runs anyway.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from sqlalchemy import select

from jjhub.errors import DomainError
from jjhub.logs import kv
from jjhub.runtime.base import MachineState
from jjhub.runtime.errors import RuntimeFailure
from jjhub.services import Services
from jjhub.store.models import Workspace, utcnow
from jjhub.workspaces import access_tokens
from jjhub.workspaces.states import LIVE, Status

log = logging.getLogger(__name__)

# Database status and listed machine state that need no second look.
AGREEING = {
    (Status.RUNNING, MachineState.RUNNING),
    (Status.SUSPENDED, MachineState.SUSPENDED),
}


class LifecycleLoop:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.workspaces = services.workspaces
        # Machines the database does not know, already logged: each pass would
        # otherwise repeat the same warning every few seconds.
        self._reported_unknown: set[str] = set()

    async def run(self) -> None:
        interval = self.services.settings.lifecycle_interval_seconds
        while True:
            await asyncio.sleep(interval)
            try:
                await self.tick()
            except Exception:
                log.exception("lifecycle pass failed; retrying next interval")

    async def tick(self) -> None:
        await self.reconcile()
        await self.fail_stuck()
        await self.suspend_idle()
        await self.end_idle_sessions()
        with self.services.db.session() as db:
            purged = access_tokens.purge_expired(db)
        if purged:
            log.info("purged expired ssh tokens %s", kv(count=purged))

    def _live(self) -> list[Workspace]:
        with self.services.db.session() as db:
            return list(
                db.scalars(
                    select(Workspace).where(
                        Workspace.status.in_([s.value for s in LIVE])
                    )
                ).all()
            )

    async def reconcile(self) -> None:
        """Make the database agree with what the runtime reports."""
        try:
            machines = {m.machine_id: m for m in await self.workspaces.runtime.list()}
        except RuntimeFailure as error:
            log.error("reconcile skipped: runtime list failed %s", kv(error=error))
            return
        known = set()
        for workspace in self._live():
            known.add(workspace.machine_id)
            if workspace.status == Status.STARTING:
                continue
            machine = machines.get(workspace.machine_id)
            listed = machine.state if machine else MachineState.MISSING
            # A workspace in the middle of an operation is looked at next pass.
            busy = self.workspaces.locks.busy(workspace.id)
            if (workspace.status, listed) not in AGREEING and not busy:
                await self.workspaces.reconcile(workspace.id)
        unknown = {m for m in machines.keys() - known if not self._is_known(m)}
        for machine_id in sorted(unknown - self._reported_unknown):
            log.warning(
                "runtime has a machine the database does not know; left alone %s",
                kv(machine=machine_id, state=machines[machine_id].state),
            )
        self._reported_unknown = unknown

    def _is_known(self, machine_id: str) -> bool:
        with self.services.db.session() as db:
            return (
                db.scalar(
                    select(Workspace.id).where(Workspace.machine_id == machine_id)
                )
                is not None
            )

    async def fail_stuck(self) -> None:
        limit = timedelta(seconds=self.services.settings.starting_timeout_seconds)
        now = utcnow()
        for workspace in self._live():
            if (
                workspace.status != Status.STARTING
                or workspace.updated_at + limit >= now
                # A create or fork in this process holds the lock and ends the
                # workspace `running` or `failed` itself; waiting for it here
                # would stall the loop for every other workspace.
                or self.workspaces.locks.busy(workspace.id)
            ):
                continue
            await self.workspaces.mark_failed(
                workspace.id,
                "starting_timeout",
                f"still starting after {limit.total_seconds():.0f} s",
                only_if=Status.STARTING,
            )

    async def suspend_idle(self) -> None:
        now = utcnow()
        for workspace in self._live():
            if workspace.status != Status.RUNNING:
                continue
            if self.workspaces.locks.busy(workspace.id):
                continue  # an operation under way is not idleness
            deadline = self.workspaces.idle_deadline(workspace)
            if deadline is None or deadline > now:
                continue
            try:
                await self.workspaces.suspend_if_idle(workspace.id)
            except DomainError as error:
                log.warning(
                    "idle action failed %s",
                    kv(workspace=workspace.id, error=error.message),
                )

    async def end_idle_sessions(self) -> None:
        from jjhub.workspaces import sessions

        await sessions.end_idle(self.services)
