"""Legacy session routes under `/api/repos/{owner}/{repo}/workspace/sessions`."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from jjhub.api.deps import DB, CurrentUser, OwnedSession, Repo, services
from jjhub.api.pagination import page_from, set_headers
from jjhub.api.routes.workspaces import ssh_info
from jjhub.api.schemas import SessionCreate, SessionOut, SshInfo
from jjhub.workspaces import sessions

router = APIRouter(prefix="/api/repos/{owner}/{repo}", tags=["sessions"])


@router.post("/workspace/sessions", status_code=201, response_model=SessionOut)
async def create_session(
    body: SessionCreate, request: Request, user: CurrentUser, repository: Repo
) -> SessionOut:
    """Start a terminal session; without `workspace_id` the primary workspace."""
    row = await sessions.create(
        services(request), user, repository, body.cols, body.rows, body.workspace_id
    )
    return SessionOut.of(row)


@router.get("/workspace/sessions", response_model=list[SessionOut])
def list_sessions(
    request: Request, response: Response, user: CurrentUser, repository: Repo, db: DB
) -> list[SessionOut]:
    """The caller's sessions in this repository, newest first."""
    page = page_from(request)
    rows, total = sessions.list_for(db, user, repository, page.offset, page.limit)
    set_headers(request, response, page, total)
    return [SessionOut.of(row) for row in rows]


@router.get("/workspace/sessions/{session_id}", response_model=SessionOut)
def get_session(
    session_id: str, user: CurrentUser, repository: Repo, db: DB
) -> SessionOut:
    """One session."""
    return SessionOut.of(sessions.get(db, user, repository, session_id))


@router.get("/workspace/sessions/{session_id}/ssh", response_model=SshInfo)
async def get_session_ssh(row: OwnedSession, request: Request) -> SshInfo:
    """SSH info for the session's workspace, resuming it if suspended."""
    svc = services(request)
    workspace = await svc.workspaces.ensure_running(row.workspace_id, cause="session")
    sessions.touch(svc, row.id)
    return ssh_info(svc, workspace, session_id=row.id)


@router.post("/workspace/sessions/{session_id}/destroy", status_code=204)
async def destroy_session(row: OwnedSession, request: Request) -> Response:
    """End the session; the last one to end suspends its workspace."""
    await sessions.destroy(services(request), row.id)
    return Response(status_code=204)
