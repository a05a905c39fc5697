"""The gateway backend backed by the workspace domain."""

from __future__ import annotations

from jjhub.errors import DomainError
from jjhub.runtime.base import SshStream
from jjhub.runtime.errors import RuntimeFailure
from jjhub.services import Services
from jjhub.ssh.backend import AccessDenied, NotConnectable, Target
from jjhub.workspaces import access_tokens


class WorkspaceBackend:
    def __init__(self, services: Services) -> None:
        self.services = services

    def authenticate(self, machine_id: str, linux_user: str, token: str) -> Target:
        try:
            with self.services.db.session() as db:
                grant = access_tokens.check(db, machine_id, linux_user, token)
        except access_tokens.TokenRefused as refused:
            raise AccessDenied(str(refused)) from None
        return Target(grant.workspace_id, grant.machine_id, grant.linux_user)

    async def ensure_running(self, target: Target) -> None:
        try:
            await self.services.workspaces.ensure_running(
                target.workspace_id, cause="ssh_wake"
            )
        except DomainError as error:
            raise NotConnectable(error.message) from None

    async def open_ssh(self, target: Target) -> SshStream:
        try:
            return await self.services.workspaces.runtime.open_ssh(target.machine_id)
        except RuntimeFailure as error:
            raise NotConnectable(f"cannot reach the workspace: {error}") from None

    def record_activity(self, target: Target) -> None:
        self.services.workspaces.touch(target.workspace_id, "ssh")
