"""Workspace, snapshot, SSH and session shapes of the contract."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from jjhub.api.timestamps import Timestamp
from jjhub.runtime.base import Capabilities
from jjhub.store.models import Workspace, WorkspaceSession, WorkspaceSnapshot

Persistence = Literal["ephemeral", "sticky", "persistent"]
SizeName = Literal["small", "medium", "large"]


class WorkspaceCreate(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str | None = Field(default=None, max_length=100)
    snapshot_id: str | None = Field(default=None, max_length=64)
    persistence: Persistence | None = None
    idle_timeout_seconds: int | None = Field(default=None, ge=0, le=10**8)
    size: SizeName = "small"


class ForkCreate(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str | None = Field(default=None, max_length=100)
    count: int | None = Field(default=None, ge=1, le=10)


class SnapshotCreate(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str | None = Field(default=None, max_length=200)


class SnapshotCreateFor(SnapshotCreate):
    workspace_id: str | None = Field(default=None, max_length=64)


class CapabilitiesOut(BaseModel):
    driver: str
    suspend_keeps_memory: bool
    fork_keeps_memory: bool
    snapshot_keeps_memory: bool


class WorkspaceOut(BaseModel):
    id: str
    repository_id: int
    user_id: int
    name: str
    status: str
    status_reason: str
    is_fork: bool
    parent_workspace_id: str | None
    snapshot_id: str | None
    freestyle_vm_id: str
    persistence: str
    ssh_host: str
    idle_timeout_seconds: int | None
    size: str
    runtime: str
    capabilities: CapabilitiesOut
    last_activity_at: Timestamp
    last_activity_reason: str
    started_at: Timestamp | None
    created_at: Timestamp
    updated_at: Timestamp
    suspended_at: Timestamp | None

    @classmethod
    def of(cls, ws: Workspace, ssh_host: str, caps: Capabilities) -> WorkspaceOut:
        return cls(
            id=ws.id,
            repository_id=ws.repository_id,
            user_id=ws.user_id,
            name=ws.name,
            status=ws.status,
            status_reason=ws.status_reason,
            is_fork=ws.is_fork,
            parent_workspace_id=ws.parent_workspace_id,
            snapshot_id=ws.snapshot_id,
            freestyle_vm_id=ws.machine_id,
            persistence=ws.persistence,
            ssh_host=f"{ws.machine_id}@{ssh_host}",
            idle_timeout_seconds=ws.idle_timeout_seconds,
            size=ws.size,
            runtime=ws.runtime,
            capabilities=CapabilitiesOut.model_validate(caps.as_dict()),
            last_activity_at=ws.last_activity_at,
            last_activity_reason=ws.last_activity_reason,
            started_at=ws.started_at,
            created_at=ws.created_at,
            updated_at=ws.updated_at,
            suspended_at=ws.suspended_at,
        )


class ForkList(BaseModel):
    workspaces: list[WorkspaceOut]


class SnapshotOut(BaseModel):
    id: str
    repository_id: int
    user_id: int
    workspace_id: str
    name: str
    freestyle_snapshot_id: str
    runtime: str
    keeps_memory: bool
    size_bytes: int
    created_at: Timestamp
    updated_at: Timestamp

    @classmethod
    def of(cls, snap: WorkspaceSnapshot) -> SnapshotOut:
        return cls(
            id=snap.id,
            repository_id=snap.repository_id,
            user_id=snap.user_id,
            workspace_id=snap.workspace_id,
            name=snap.name,
            freestyle_snapshot_id=snap.id,
            runtime=snap.runtime,
            keeps_memory=snap.keeps_memory,
            size_bytes=snap.size_bytes,
            created_at=snap.created_at,
            updated_at=snap.updated_at,
        )


class SshInfo(BaseModel):
    workspace_id: str
    session_id: str
    vm_id: str
    host: str
    ssh_host: str
    username: str
    port: int
    access_token: str
    command: str

    @classmethod
    def build(
        cls,
        *,
        workspace_id: str,
        vm_id: str,
        host: str,
        port: int,
        token: str,
        session_id: str = "",
        username: str = "developer",
    ) -> SshInfo:
        port_flag = "" if port == 22 else f" -p {port}"
        return cls(
            workspace_id=workspace_id,
            session_id=session_id,
            vm_id=vm_id,
            host=host,
            ssh_host=f"{vm_id}+{username}@{host}",
            username=username,
            port=port,
            access_token=token,
            command=f"ssh{port_flag} {vm_id}+{username}:{token}@{host}",
        )


class SessionCreate(BaseModel):
    model_config = ConfigDict(extra="ignore")

    cols: int = Field(default=80, ge=1, le=1000)
    rows: int = Field(default=24, ge=1, le=1000)
    workspace_id: str | None = Field(default=None, max_length=64)


class SessionOut(BaseModel):
    id: str
    workspace_id: str
    repository_id: int
    user_id: int
    status: str
    cols: int
    rows: int
    last_activity_at: Timestamp
    idle_timeout_secs: int
    created_at: Timestamp
    updated_at: Timestamp

    @classmethod
    def of(cls, s: WorkspaceSession) -> SessionOut:
        return cls(
            id=s.id,
            workspace_id=s.workspace_id,
            repository_id=s.repository_id,
            user_id=s.user_id,
            status=s.status,
            cols=s.cols,
            rows=s.rows,
            last_activity_at=s.last_activity_at,
            idle_timeout_secs=s.idle_timeout_secs,
            created_at=s.created_at,
            updated_at=s.updated_at,
        )
