"""Workspace routes under `/api/repos/{owner}/{repo}/workspaces`."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from jjhub.api.deps import DB, CurrentUser, OwnedWorkspace, Repo, services
from jjhub.api.pagination import page_from, set_headers
from jjhub.api.schemas import (
    ForkCreate,
    ForkList,
    SnapshotCreate,
    SnapshotOut,
    SshInfo,
    WorkspaceCreate,
    WorkspaceOut,
)
from jjhub.services import Services
from jjhub.store.models import Workspace
from jjhub.workspaces import copies
from jjhub.workspaces.service import CreateRequest

router = APIRouter(prefix="/api/repos/{owner}/{repo}", tags=["workspaces"])


def view(svc: Services, workspace: Workspace) -> WorkspaceOut:
    return WorkspaceOut.of(
        workspace,
        svc.settings.ssh_public_host,
        svc.workspaces.runtime.capabilities,
    )


def ssh_info(svc: Services, workspace: Workspace, session_id: str = "") -> SshInfo:
    token = svc.workspaces.ssh_access(workspace.id)
    return SshInfo.build(
        workspace_id=workspace.id,
        vm_id=workspace.machine_id,
        host=svc.settings.ssh_public_host,
        port=svc.settings.advertised_ssh_port,
        token=token,
        session_id=session_id,
    )


@router.post("/workspaces", status_code=201, response_model=WorkspaceOut)
async def create_workspace(
    body: WorkspaceCreate,
    request: Request,
    response: Response,
    user: CurrentUser,
    repository: Repo,
) -> WorkspaceOut:
    """Create a workspace, or return and resume the caller's primary one."""
    svc = services(request)
    create = CreateRequest(
        name=body.name,
        snapshot_id=body.snapshot_id,
        persistence=body.persistence,
        idle_timeout_seconds=body.idle_timeout_seconds,
        idle_timeout_given="idle_timeout_seconds" in body.model_fields_set,
        size=body.size,
    )
    workspace, created = await svc.workspaces.create_or_resume(user, repository, create)
    if not created:
        response.status_code = 200
    return view(svc, workspace)


@router.get("/workspaces", response_model=list[WorkspaceOut])
def list_workspaces(
    request: Request, response: Response, user: CurrentUser, repository: Repo, db: DB
) -> list[WorkspaceOut]:
    """The caller's workspaces in this repository, newest first."""
    svc = services(request)
    page = page_from(request)
    rows, total = svc.workspaces.list(db, user, repository, page.offset, page.limit)
    set_headers(request, response, page, total)
    return [view(svc, row) for row in rows]


@router.get("/workspaces/{workspace_id}", response_model=WorkspaceOut)
def get_workspace(workspace: OwnedWorkspace, request: Request) -> WorkspaceOut:
    """One workspace."""
    svc = services(request)
    return view(svc, workspace)


@router.delete("/workspaces/{workspace_id}", status_code=204)
async def delete_workspace(workspace: OwnedWorkspace, request: Request) -> Response:
    """Delete the machine; the workspace stays listed as `stopped`."""
    svc = services(request)
    await svc.workspaces.delete(workspace.id)
    return Response(status_code=204)


@router.get("/workspaces/{workspace_id}/ssh", response_model=SshInfo)
def get_ssh_info(workspace: OwnedWorkspace, request: Request) -> SshInfo:
    """SSH connection info with a fresh access token."""
    svc = services(request)
    return ssh_info(svc, workspace)


@router.post("/workspaces/{workspace_id}/suspend", response_model=WorkspaceOut)
async def suspend_workspace(
    workspace: OwnedWorkspace, request: Request
) -> WorkspaceOut:
    """Suspend, keeping what the driver keeps (see `capabilities`)."""
    svc = services(request)
    received = request.state.received_at
    return view(svc, await svc.workspaces.suspend(workspace.id, requested_at=received))


@router.post("/workspaces/{workspace_id}/resume", response_model=WorkspaceOut)
async def resume_workspace(workspace: OwnedWorkspace, request: Request) -> WorkspaceOut:
    """Resume a suspended workspace."""
    svc = services(request)
    received = request.state.received_at
    return view(svc, await svc.workspaces.resume(workspace.id, requested_at=received))


@router.post("/workspaces/{workspace_id}/recover", response_model=WorkspaceOut)
async def recover_workspace(
    workspace: OwnedWorkspace, request: Request
) -> WorkspaceOut:
    """Restart a failed workspace from its own disk, keeping its files."""
    svc = services(request)
    return view(svc, await svc.workspaces.recover(workspace.id))


@router.post(
    "/workspaces/{workspace_id}/fork",
    status_code=201,
    response_model=WorkspaceOut | ForkList,
)
async def fork_workspace(
    workspace: OwnedWorkspace,
    body: ForkCreate,
    request: Request,
    user: CurrentUser,
    repository: Repo,
) -> WorkspaceOut | ForkList:
    """Running copies of this workspace; `count` returns `{"workspaces": [...]}`."""
    svc = services(request)
    forks = await copies.fork(
        svc.workspaces, user, repository, workspace.id, body.name, body.count or 1
    )
    if body.count is None:
        return view(svc, forks[0])
    return ForkList(workspaces=[view(svc, row) for row in forks])


@router.post(
    "/workspaces/{workspace_id}/snapshot", status_code=201, response_model=SnapshotOut
)
async def snapshot_workspace(
    workspace: OwnedWorkspace,
    body: SnapshotCreate,
    request: Request,
    user: CurrentUser,
) -> SnapshotOut:
    """A durable snapshot that outlives the workspace."""
    svc = services(request)
    return SnapshotOut.of(
        await copies.snapshot(svc.workspaces, user, workspace.id, body.name)
    )
