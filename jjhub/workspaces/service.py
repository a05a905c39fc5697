"""The workspace lifecycle: create, suspend, resume, delete, recover.

Every status change goes through `_set_status`, which stores the change and
its cause, and publishes it as an event. Runtime calls happen under the
workspace's lock, so one lifecycle operation runs at a time per workspace;
a resume that arrives during a suspend waits for it and then resumes.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import string
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from jjhub.config import Settings
from jjhub.errors import Conflict, Invalid, Unavailable
from jjhub.logs import kv
from jjhub.runtime.base import SIZES, MachineSpec, MachineState, Runtime
from jjhub.runtime.errors import RuntimeFailure
from jjhub.store.db import Database
from jjhub.store.models import (
    Repository,
    User,
    Workspace,
    WorkspaceEvent,
    WorkspaceSnapshot,
    utcnow,
)
from jjhub.workspaces import access_tokens, checkout
from jjhub.workspaces.errors import (
    from_runtime,
    not_allowed,
    snapshot_not_found,
    workspace_not_found,
)
from jjhub.workspaces.events import Event, EventHub
from jjhub.workspaces.locks import KeyedLocks
from jjhub.workspaces.states import ENDED, LIVE, Persistence, Status

log = logging.getLogger(__name__)

ID_ALPHABET = string.ascii_lowercase + string.digits
ACTIVITY_WRITE_INTERVAL = 5.0


def new_machine_id() -> str:
    return "vm_" + "".join(secrets.choice(ID_ALPHABET) for _ in range(12))


def owned_snapshot(
    db: Session, user: User, repo: Repository, snapshot_id: str
) -> WorkspaceSnapshot:
    """The caller's live snapshot in this repository; 404 for anything else."""
    row = db.get(WorkspaceSnapshot, snapshot_id)
    if (
        row is None
        or row.deleted_at is not None
        or row.user_id != user.id
        or row.repository_id != repo.id
    ):
        raise snapshot_not_found()
    return row


@dataclass(frozen=True)
class CreateRequest:
    name: str | None = None
    snapshot_id: str | None = None
    persistence: str | None = None
    idle_timeout_seconds: int | None = None
    idle_timeout_given: bool = False
    size: str = "small"


class WorkspaceService:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        runtime: Runtime,
        events: EventHub,
        gateway_public_key: str,
    ) -> None:
        self.settings = settings
        self.db = db
        self.runtime = runtime
        self.events = events
        self.gateway_public_key = gateway_public_key
        self.locks = KeyedLocks()
        self._activity_written: dict[str, float] = {}
        # Newest activity per workspace, including touches not yet written.
        self._activity_seen: dict[str, datetime] = {}
        self._resume_requested: dict[str, float] = {}

    # -- reading -------------------------------------------------------------

    def get(self, db: Session, user: User, repo: Repository, ws_id: str) -> Workspace:
        """The caller's workspace in this repository; 404 for anyone else's."""
        workspace = db.get(Workspace, ws_id)
        if (
            workspace is None
            or workspace.user_id != user.id
            or workspace.repository_id != repo.id
        ):
            raise workspace_not_found()
        return workspace

    def list(
        self, db: Session, user: User, repo: Repository, offset: int, limit: int
    ) -> tuple[list[Workspace], int]:
        where = (Workspace.user_id == user.id, Workspace.repository_id == repo.id)
        total = db.scalar(select(func.count()).select_from(Workspace).where(*where))
        rows = db.scalars(
            select(Workspace)
            .where(*where)
            .order_by(Workspace.created_at.desc(), Workspace.id)
            .offset(offset)
            .limit(limit)
        ).all()
        return list(rows), int(total or 0)

    # -- create --------------------------------------------------------------

    async def create_or_resume(
        self, user: User, repo: Repository, request: CreateRequest
    ) -> tuple[Workspace, bool]:
        """The caller's live primary workspace (resumed), or a new one.

        With a `name`, the caller's live workspace of that name is returned
        instead, and a new one is made if there is none. Restoring from a
        snapshot always makes a new, non-primary workspace.
        Returns the workspace and whether it was created.
        """
        if request.size not in SIZES:
            raise Invalid("size must be small, medium or large", field="size")
        if request.snapshot_id:
            with self.db.session() as db:
                snapshot = owned_snapshot(db, user, repo, request.snapshot_id)
            workspace = await self._create(user, repo, request, snapshot=snapshot)
            return workspace, True
        async with self.locks.hold(f"primary:{repo.id}:{user.id}"):
            primary = self._live(user, repo, primary=True)
            named = self._live(user, repo, name=request.name) if request.name else None
            existing = named or (primary if not request.name else None)
            if existing is None:
                # A named create makes a second workspace once a primary exists.
                make_primary = primary is None
                workspace = await self._create(
                    user, repo, request, primary=make_primary
                )
                return workspace, True
        workspace = await self.resume(existing.id, cause="create")
        return workspace, False

    def _live(
        self,
        user: User,
        repo: Repository,
        *,
        primary: bool = False,
        name: str | None = None,
    ) -> Workspace | None:
        """The newest live workspace that is the primary, or has this name."""
        query = select(Workspace).where(
            Workspace.user_id == user.id,
            Workspace.repository_id == repo.id,
            Workspace.status.in_([s.value for s in LIVE]),
        )
        if primary:
            query = query.where(Workspace.is_primary.is_(True))
        if name is not None:
            query = query.where(Workspace.name == name)
        with self.db.session() as db:
            return db.scalar(query.order_by(Workspace.created_at.desc()).limit(1))

    def _defaults(
        self, repo: Repository, request: CreateRequest
    ) -> tuple[str, int | None]:
        persistence = (
            request.persistence or repo.default_persistence or Persistence.STICKY
        )
        if request.idle_timeout_given:
            idle = request.idle_timeout_seconds
        elif repo.default_idle_timeout_seconds is not None:
            idle = repo.default_idle_timeout_seconds
        else:
            idle = self.settings.idle_timeout_seconds
        return str(persistence), idle

    def _new_row(
        self,
        user: User,
        repo: Repository,
        request: CreateRequest,
        *,
        primary: bool = False,
        parent: Workspace | None = None,
        snapshot: WorkspaceSnapshot | None = None,
    ) -> Workspace:
        persistence, idle = self._defaults(repo, request)
        if parent is not None:
            persistence, idle = parent.persistence, parent.idle_timeout_seconds
        return Workspace(
            id=str(uuid.uuid4()),
            repository_id=repo.id,
            user_id=user.id,
            name=request.name or ("primary" if primary else "workspace"),
            status=Status.STARTING,
            is_primary=primary,
            is_fork=parent is not None or snapshot is not None,
            parent_workspace_id=parent.id if parent else None,
            snapshot_id=snapshot.id if snapshot else None,
            machine_id=new_machine_id(),
            runtime=self.runtime.name,
            size=parent.size if parent else request.size,
            persistence=persistence,
            idle_timeout_seconds=idle,
            last_activity_reason="create",
        )

    def spec_for(self, workspace: Workspace) -> MachineSpec:
        return MachineSpec(
            machine_id=workspace.machine_id,
            size=SIZES.get(workspace.size, SIZES["small"]),
            gateway_public_key=self.gateway_public_key,
        )

    def _insert(self, workspace: Workspace) -> None:
        try:
            with self.db.session() as db:
                db.add(workspace)
                db.add(
                    WorkspaceEvent(
                        workspace_id=workspace.id, status=workspace.status, cause="user"
                    )
                )
        except IntegrityError:
            raise Conflict(
                "a primary workspace for this repository is already being created; "
                "retry in a moment"
            ) from None
        self.events.publish(Event("workspace", workspace.id, workspace.status, "user"))

    def discard(self, ws_ids: Iterable[str]) -> None:
        """Forget rows whose machines were never made (a failed fork)."""
        ids = list(ws_ids)
        with self.db.session() as db:
            db.execute(
                delete(WorkspaceEvent).where(WorkspaceEvent.workspace_id.in_(ids))
            )
            db.execute(delete(Workspace).where(Workspace.id.in_(ids)))
        for ws_id in ids:
            self.events.publish(
                Event("workspace", ws_id, Status.STOPPED, "fork_failed")
            )

    async def _create(
        self,
        user: User,
        repo: Repository,
        request: CreateRequest,
        *,
        primary: bool = False,
        snapshot: WorkspaceSnapshot | None = None,
    ) -> Workspace:
        workspace = self._new_row(
            user, repo, request, primary=primary, snapshot=snapshot
        )
        self._insert(workspace)
        started = time.monotonic()
        async with self.locks.hold(workspace.id):
            try:
                await self.runtime.create(
                    self.spec_for(workspace),
                    snapshot_id=snapshot.id if snapshot else None,
                )
            except RuntimeFailure as error:
                self._set_status(
                    workspace.id, Status.FAILED, "create_failed", str(error)
                )
                log.error(
                    "create failed %s",
                    kv(
                        workspace=workspace.id,
                        machine=workspace.machine_id,
                        error=error,
                    ),
                )
                raise from_runtime("create", error) from error
            reason = ""
            if repo.clone_url and snapshot is None:
                problem = await checkout.clone(
                    self.runtime,
                    workspace.machine_id,
                    repo.clone_url,
                    self.runtime.host_address,
                )
                if problem:
                    reason = f"checkout of {repo.clone_url} failed: {problem}"
            updated = self._set_status(
                workspace.id, Status.RUNNING, "user", reason, started=True
            )
        log.info(
            "created workspace %s",
            kv(
                workspace=workspace.id,
                machine=workspace.machine_id,
                runtime=self.runtime.name,
                seconds=round(time.monotonic() - started, 3),
            ),
        )
        return updated

    # -- status changes --------------------------------------------------------

    def _set_status(
        self,
        ws_id: str,
        status: Status,
        cause: str,
        reason: str | None = None,
        *,
        started: bool = False,
    ) -> Workspace:
        with self.db.session() as db:
            workspace = db.get(Workspace, ws_id)
            if workspace is None:
                raise workspace_not_found()
            changed = workspace.status != status
            workspace.status = status
            if reason is not None:
                workspace.status_reason = reason
            now = utcnow()
            if status == Status.SUSPENDED:
                workspace.suspended_at = now
            elif status == Status.RUNNING:
                workspace.suspended_at = None
                if started or changed:
                    workspace.started_at = now
            if changed:
                db.add(WorkspaceEvent(workspace_id=ws_id, status=status, cause=cause))
        if changed:
            self.events.publish(Event("workspace", ws_id, status, cause))
        return workspace

    def _load(self, ws_id: str) -> Workspace:
        with self.db.session() as db:
            workspace = db.get(Workspace, ws_id)
            if workspace is None:
                raise workspace_not_found()
            return workspace

    async def suspend(
        self, ws_id: str, cause: str = "user", requested_at: float | None = None
    ) -> Workspace:
        """Suspend, unless a resume was asked for after this suspend was.

        Requests are served out of order (each waits for the workspace lock),
        so a suspend and a resume sent together could otherwise end
        `suspended`; the later request's intent wins instead.
        """
        requested_at = time.monotonic() if requested_at is None else requested_at
        async with self.locks.hold(ws_id):
            workspace = self._load(ws_id)
            if self._resume_requested.get(ws_id, 0.0) > requested_at:
                log.info("suspend superseded by a later resume %s", kv(workspace=ws_id))
                return workspace
            if workspace.status == Status.SUSPENDED:
                return workspace
            if workspace.status != Status.RUNNING:
                raise not_allowed("suspend", workspace.status)
            try:
                await self.runtime.suspend(workspace.machine_id)
            except RuntimeFailure as error:
                raise from_runtime("suspend", error) from error
            return self._set_status(ws_id, Status.SUSPENDED, cause)

    async def resume(
        self, ws_id: str, cause: str = "user", requested_at: float | None = None
    ) -> Workspace:
        requested_at = time.monotonic() if requested_at is None else requested_at
        previous = self._resume_requested.get(ws_id, 0.0)
        self._resume_requested[ws_id] = max(previous, requested_at)
        async with self.locks.hold(ws_id):
            workspace = self._load(ws_id)
            if workspace.status == Status.RUNNING:
                self.touch(ws_id, cause, force=True)
                return self._load(ws_id)
            if workspace.status != Status.SUSPENDED:
                raise not_allowed("resume", workspace.status)
            try:
                await self.runtime.resume(workspace.machine_id)
            except RuntimeFailure as error:
                raise from_runtime("resume", error) from error
            self.touch(ws_id, cause, force=True)
            return self._set_status(ws_id, Status.RUNNING, cause)

    async def delete(self, ws_id: str, cause: str = "user") -> Workspace:
        """Remove the machine; the row stays, `stopped`, and tokens are revoked."""
        async with self.locks.hold(ws_id):
            workspace = self._load(ws_id)
            if workspace.status == Status.STOPPED:
                return workspace
            try:
                await self.runtime.delete(workspace.machine_id)
            except RuntimeFailure as error:
                raise from_runtime("delete", error) from error
            with self.db.session() as db:
                access_tokens.revoke_all(db, ws_id)
            self._activity_written.pop(ws_id, None)
            self._activity_seen.pop(ws_id, None)
            self._resume_requested.pop(ws_id, None)
            return self._set_status(ws_id, Status.STOPPED, cause)

    async def recover(self, ws_id: str) -> Workspace:
        """Boot a failed workspace again from its own disk, keeping its files."""
        async with self.locks.hold(ws_id):
            workspace = self._load(ws_id)
            if workspace.status != Status.FAILED:
                raise Conflict(
                    f"only a failed workspace can be recovered; this one is {workspace.status}"
                )
            self._set_status(ws_id, Status.STARTING, "recover")
            try:
                await self.runtime.restart(self.spec_for(workspace))
            except RuntimeFailure as error:
                self._set_status(
                    ws_id, Status.FAILED, "recover", f"recover failed: {error}"
                )
                raise Unavailable(f"recover failed: {error}") from error
            self.touch(ws_id, "recover", force=True)
            return self._set_status(ws_id, Status.RUNNING, "recover", "", started=True)

    async def mark_failed(
        self, ws_id: str, cause: str, reason: str, *, only_if: Status | None = None
    ) -> None:
        """Fail a workspace, unless it ended, or is no longer `only_if` by now."""
        async with self.locks.hold(ws_id):
            workspace = self._load(ws_id)
            if workspace.status in ENDED:
                return
            if only_if is not None and workspace.status != only_if:
                return
            self._set_status(ws_id, Status.FAILED, cause, reason)

    async def reconcile(self, ws_id: str) -> None:
        """Adopt what the runtime reports about one workspace's machine.

        The loop's listing can be stale by the time this workspace's lock is
        free (a create, fork or resume may finish in between), so the machine
        is inspected again under the lock and only that answer counts.
        """
        async with self.locks.hold(ws_id):
            workspace = self._load(ws_id)
            if workspace.status not in (Status.RUNNING, Status.SUSPENDED):
                return
            try:
                state = (await self.runtime.inspect(workspace.machine_id)).state
            except RuntimeFailure as error:
                log.warning(
                    "reconcile skipped %s", kv(workspace=ws_id, error=str(error))
                )
                return
            if state in (MachineState.MISSING, MachineState.STOPPED):
                log.warning(
                    "machine vanished %s",
                    kv(workspace=ws_id, machine=workspace.machine_id, state=state),
                )
                reason = (
                    f"machine {workspace.machine_id} is {state} in the runtime; "
                    "POST .../recover restarts it from its disk"
                )
                self._set_status(ws_id, Status.FAILED, "reconcile", reason)
                return
            wanted = {
                MachineState.RUNNING: Status.RUNNING,
                MachineState.SUSPENDED: Status.SUSPENDED,
            }[state]
            if workspace.status != wanted:
                self._set_status(ws_id, wanted, "reconcile")

    # -- activity --------------------------------------------------------------

    def touch(self, ws_id: str, reason: str, *, force: bool = False) -> None:
        """Record activity, writing at most once every few seconds per workspace.

        Every touch is remembered in memory, so the idle check sees activity
        that has not been written yet (an SSH session moving bytes).
        """
        self._activity_seen[ws_id] = utcnow()
        now = time.monotonic()
        if not force and now - self._activity_written.get(ws_id, 0.0) < (
            ACTIVITY_WRITE_INTERVAL
        ):
            return
        self._activity_written[ws_id] = now
        with self.db.session() as db:
            workspace = db.get(Workspace, ws_id)
            if workspace is not None:
                workspace.last_activity_at = utcnow()
                workspace.last_activity_reason = reason

    def idle_deadline(self, workspace: Workspace) -> datetime | None:
        """When the workspace counts as idle; None when it never does."""
        if workspace.idle_timeout_seconds is None:
            return None
        last = workspace.last_activity_at
        seen = self._activity_seen.get(workspace.id)
        if seen is not None and seen > last:
            last = seen
        return last + timedelta(seconds=workspace.idle_timeout_seconds)

    async def suspend_if_idle(self, ws_id: str) -> Workspace | None:
        """The idle timeout's action: suspend, or delete when ephemeral.

        Checked again under the lock, so activity that arrives while the loop
        decides still keeps the workspace running.
        """
        async with self.locks.hold(ws_id):
            workspace = self._load(ws_id)
            deadline = self.idle_deadline(workspace)
            if workspace.status != Status.RUNNING or deadline is None:
                return None
            if deadline > utcnow():
                return None
        if workspace.persistence == Persistence.EPHEMERAL:
            return await self.delete(ws_id, cause="idle_timeout")
        return await self.suspend(ws_id, cause="idle_timeout")

    # -- SSH access ------------------------------------------------------------

    def ssh_access(self, ws_id: str, linux_user: str = "developer") -> str:
        workspace = self._load(ws_id)
        if workspace.status in ENDED:
            raise not_allowed("connect to", workspace.status)
        self.touch(ws_id, "ssh_info", force=True)
        with self.db.session() as db:
            return access_tokens.mint(
                db, ws_id, linux_user, self.settings.ssh_token_ttl_seconds
            )

    async def ensure_running(self, ws_id: str, cause: str) -> Workspace:
        """Wake a suspended workspace for a connection; refuse ended ones."""
        workspace = self._load(ws_id)
        if workspace.status == Status.RUNNING and self.locks.busy(ws_id):
            # An operation is under way, perhaps a suspend: let it finish first.
            async with self.locks.hold(ws_id):
                pass
            workspace = self._load(ws_id)
        if workspace.status in ENDED:
            raise not_allowed("connect to", workspace.status)
        if workspace.status == Status.SUSPENDED:
            # Shielded: a client that goes away mid-wake must not cut the
            # resume between the machine and the row (running, but listed
            # as suspended).
            return await asyncio.shield(self.resume(ws_id, cause=cause))
        return workspace
