"""Fork and snapshot: copies of a workspace's state, and restores from them.

What a copy keeps depends on the driver and is stated by its capabilities
(runc keeps files; QEMU keeps memory too), never guessed here.
"""

from __future__ import annotations

import logging
import secrets
import time

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from jjhub.errors import Invalid
from jjhub.logs import kv
from jjhub.runtime.errors import RuntimeFailure
from jjhub.store.models import (
    Repository,
    User,
    Workspace,
    WorkspaceSnapshot,
    utcnow,
)
from jjhub.workspaces.errors import from_runtime, not_allowed
from jjhub.workspaces.service import ID_ALPHABET, CreateRequest, WorkspaceService
from jjhub.workspaces.service import owned_snapshot as get_snapshot
from jjhub.workspaces.states import COPYABLE, Status

log = logging.getLogger(__name__)

MAX_FORKS = 10


def new_snapshot_id() -> str:
    return "snap_" + "".join(secrets.choice(ID_ALPHABET) for _ in range(12))


async def fork(
    service: WorkspaceService,
    user: User,
    repo: Repository,
    source_id: str,
    name: str | None,
    count: int = 1,
) -> list[Workspace]:
    """Running copies of a running or suspended workspace.

    The rows are made `starting` first so that a failure marks them `failed`
    with a reason, and the driver removes every machine it made.
    """
    if not 1 <= count <= MAX_FORKS:
        raise Invalid(f"count must be between 1 and {MAX_FORKS}", field="count")
    started = time.monotonic()
    async with service.locks.hold(source_id):
        source = service._load(source_id)
        if source.status not in COPYABLE:
            raise not_allowed("fork", source.status)
        base_name = name or f"{source.name}-fork"
        forks = []
        for index in range(count):
            request = CreateRequest(
                name=base_name if count == 1 else f"{base_name}-{index + 1}"
            )
            row = service._new_row(user, repo, request, parent=source)
            service._insert(row)
            forks.append(row)
        try:
            await service.runtime.fork(
                source.machine_id, [service.spec_for(row) for row in forks]
            )
        except RuntimeFailure as error:
            # The driver removed every machine it made; the rows go too, so
            # a failed fork leaves nothing half made behind.
            service.discard(row.id for row in forks)
            raise from_runtime("fork", error) from error
    result = [
        service._set_status(row.id, Status.RUNNING, "fork", started=True)
        for row in forks
    ]
    log.info(
        "forked workspace %s",
        kv(
            source=source_id,
            count=count,
            seconds=round(time.monotonic() - started, 3),
        ),
    )
    return result


async def snapshot(
    service: WorkspaceService, user: User, workspace_id: str, name: str | None
) -> WorkspaceSnapshot:
    async with service.locks.hold(workspace_id):
        workspace = service._load(workspace_id)
        if workspace.status not in COPYABLE:
            raise not_allowed("snapshot", workspace.status)
        snapshot_id = new_snapshot_id()
        try:
            info = await service.runtime.snapshot(workspace.machine_id, snapshot_id)
        except RuntimeFailure as error:
            raise from_runtime("snapshot", error) from error
    with service.db.session() as db:
        row = WorkspaceSnapshot(
            id=snapshot_id,
            repository_id=workspace.repository_id,
            user_id=user.id,
            workspace_id=workspace.id,
            name=name or f"snapshot-{int(time.time() * 1000)}",
            runtime=service.runtime.name,
            keeps_memory=info.keeps_memory,
            size_bytes=info.size_bytes,
        )
        db.add(row)
    log.info(
        "snapshot taken %s",
        kv(workspace=workspace_id, snapshot=snapshot_id, bytes=info.size_bytes),
    )
    return row


def list_snapshots(
    db: Session,
    user: User,
    repo: Repository,
    offset: int,
    limit: int,
    workspace_id: str | None = None,
) -> tuple[list[WorkspaceSnapshot], int]:
    where = [
        WorkspaceSnapshot.user_id == user.id,
        WorkspaceSnapshot.repository_id == repo.id,
        WorkspaceSnapshot.deleted_at.is_(None),
    ]
    if workspace_id:
        where.append(WorkspaceSnapshot.workspace_id == workspace_id)
    total = db.scalar(select(func.count()).select_from(WorkspaceSnapshot).where(*where))
    rows = db.scalars(
        select(WorkspaceSnapshot)
        .where(*where)
        .order_by(WorkspaceSnapshot.created_at.desc(), WorkspaceSnapshot.id)
        .offset(offset)
        .limit(limit)
    ).all()
    return list(rows), int(total or 0)


async def delete_snapshot(
    service: WorkspaceService, user: User, repo: Repository, snapshot_id: str
) -> None:
    """Remove a snapshot's files; workspaces restored from it keep their own."""
    with service.db.session() as db:
        row = get_snapshot(db, user, repo, snapshot_id)
        row.deleted_at = utcnow()
    try:
        await service.runtime.delete_snapshot(snapshot_id)
    except RuntimeFailure as error:
        log.warning(
            "snapshot files not removed %s", kv(snapshot=snapshot_id, error=error)
        )
    log.info("snapshot deleted %s", kv(snapshot=snapshot_id))


__all__ = ["fork", "snapshot", "get_snapshot", "list_snapshots", "delete_snapshot"]
