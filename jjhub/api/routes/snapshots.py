"""Snapshot routes under `/api/repos/{owner}/{repo}/workspace-snapshots`."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from jjhub.api.deps import DB, CurrentUser, Repo, owned_workspace, services
from jjhub.api.pagination import page_from, set_headers
from jjhub.api.schemas import SnapshotCreateFor, SnapshotOut
from jjhub.errors import BadRequest
from jjhub.workspaces import copies

router = APIRouter(prefix="/api/repos/{owner}/{repo}", tags=["snapshots"])


@router.post("/workspace-snapshots", status_code=201, response_model=SnapshotOut)
async def create_snapshot(
    body: SnapshotCreateFor,
    request: Request,
    user: CurrentUser,
    repository: Repo,
) -> SnapshotOut:
    """Snapshot the workspace named by `workspace_id`."""
    if not body.workspace_id:
        raise BadRequest("workspace_id is required")
    svc = services(request)
    owned_workspace(body.workspace_id, request, user, repository)
    return SnapshotOut.of(
        await copies.snapshot(svc.workspaces, user, body.workspace_id, body.name)
    )


@router.get("/workspace-snapshots", response_model=list[SnapshotOut])
def list_snapshots(
    request: Request,
    response: Response,
    user: CurrentUser,
    repository: Repo,
    db: DB,
    workspace_id: str | None = None,
) -> list[SnapshotOut]:
    """The caller's snapshots in this repository, newest first."""
    page = page_from(request)
    rows, total = copies.list_snapshots(
        db, user, repository, page.offset, page.limit, workspace_id
    )
    set_headers(request, response, page, total)
    return [SnapshotOut.of(row) for row in rows]


@router.get("/workspace-snapshots/{snapshot_id}", response_model=SnapshotOut)
def get_snapshot(
    snapshot_id: str, user: CurrentUser, repository: Repo, db: DB
) -> SnapshotOut:
    """One snapshot."""
    return SnapshotOut.of(copies.get_snapshot(db, user, repository, snapshot_id))


@router.delete("/workspace-snapshots/{snapshot_id}", status_code=204)
async def delete_snapshot(
    snapshot_id: str, request: Request, user: CurrentUser, repository: Repo
) -> Response:
    """Delete a snapshot; workspaces restored from it are unaffected."""
    await copies.delete_snapshot(
        services(request).workspaces, user, repository, snapshot_id
    )
    return Response(status_code=204)
