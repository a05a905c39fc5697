"""Legacy terminal sessions: JJHub's older way to reach a workspace.

A session belongs to one workspace; creating one without a workspace uses
(or creates) the caller's primary workspace. When the last active session of
a workspace ends, the workspace is suspended, as JJHub does.
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from jjhub.errors import NotFound
from jjhub.logs import kv
from jjhub.services import Services
from jjhub.store.models import Repository, User, WorkspaceSession, utcnow
from jjhub.workspaces.errors import SESSION_NOT_FOUND
from jjhub.workspaces.events import Event
from jjhub.workspaces.service import CreateRequest
from jjhub.workspaces.states import ENDED, Status

log = logging.getLogger(__name__)

ACTIVE = ("pending", "running")


async def create(
    services: Services,
    user: User,
    repo: Repository,
    cols: int,
    rows: int,
    workspace_id: str | None,
) -> WorkspaceSession:
    workspaces = services.workspaces
    if workspace_id:
        with services.db.session() as db:
            workspace = workspaces.get(db, user, repo, workspace_id)
        workspace = await workspaces.ensure_running(workspace.id, cause="session")
    else:
        workspace, _ = await workspaces.create_or_resume(user, repo, CreateRequest())
    session = WorkspaceSession(
        id=str(uuid.uuid4()),
        workspace_id=workspace.id,
        repository_id=repo.id,
        user_id=user.id,
        status="running",
        cols=cols,
        rows=rows,
        idle_timeout_secs=services.settings.session_idle_seconds,
    )
    with services.db.session() as db:
        db.add(session)
    workspaces.touch(workspace.id, "session", force=True)
    workspaces.events.publish(Event("session", session.id, "running", "user"))
    return session


def get(db: Session, user: User, repo: Repository, session_id: str) -> WorkspaceSession:
    row = db.get(WorkspaceSession, session_id)
    if row is None or row.user_id != user.id or row.repository_id != repo.id:
        raise NotFound(SESSION_NOT_FOUND)
    return row


def list_for(
    db: Session, user: User, repo: Repository, offset: int, limit: int
) -> tuple[list[WorkspaceSession], int]:
    where = (
        WorkspaceSession.user_id == user.id,
        WorkspaceSession.repository_id == repo.id,
    )
    total = db.scalar(select(func.count()).select_from(WorkspaceSession).where(*where))
    rows = db.scalars(
        select(WorkspaceSession)
        .where(*where)
        .order_by(WorkspaceSession.created_at.desc(), WorkspaceSession.id)
        .offset(offset)
        .limit(limit)
    ).all()
    return list(rows), int(total or 0)


def touch(services: Services, session_id: str) -> None:
    with services.db.session() as db:
        row = db.get(WorkspaceSession, session_id)
        if row is not None:
            row.last_activity_at = utcnow()


async def destroy(services: Services, session_id: str, cause: str = "user") -> None:
    """End a session; suspend its workspace if no other session is active."""
    with services.db.session() as db:
        row = db.get(WorkspaceSession, session_id)
        if row is None or row.status not in ACTIVE:
            return
        row.status = "stopped"
        workspace_id = row.workspace_id
        others = db.scalar(
            select(func.count())
            .select_from(WorkspaceSession)
            .where(
                WorkspaceSession.workspace_id == workspace_id,
                WorkspaceSession.status.in_(ACTIVE),
                WorkspaceSession.id != session_id,
            )
        )
    services.workspaces.events.publish(Event("session", session_id, "stopped", cause))
    if others:
        return
    workspace = services.workspaces._load(workspace_id)
    if workspace.status == Status.RUNNING:
        log.info(
            "last session ended; suspending %s",
            kv(workspace=workspace_id, session=session_id),
        )
        await services.workspaces.suspend(workspace_id, cause="session_end")


async def end_idle(services: Services) -> None:
    now = utcnow()
    with services.db.session() as db:
        rows = db.scalars(
            select(WorkspaceSession).where(WorkspaceSession.status.in_(ACTIVE))
        ).all()
    for row in rows:
        if row.last_activity_at + timedelta(seconds=row.idle_timeout_secs) < now:
            await destroy(services, row.id, cause="idle_timeout")
        elif services.workspaces._load(row.workspace_id).status in ENDED:
            await destroy(services, row.id, cause="workspace_ended")
