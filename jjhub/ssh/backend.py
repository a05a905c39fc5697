"""What the SSH gateway needs from the rest of the server, and nothing more."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from jjhub.runtime.base import SshStream


class AccessDenied(Exception):
    """Authentication failed. `reason` goes to the log only, never to the client."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class NotConnectable(Exception):
    """The workspace exists but cannot take connections; one line for the user."""


@dataclass(frozen=True)
class Target:
    workspace_id: str
    machine_id: str
    linux_user: str


class GatewayBackend(Protocol):
    def authenticate(self, machine_id: str, linux_user: str, token: str) -> Target:
        """The target a token grants, or `AccessDenied`."""

    async def ensure_running(self, target: Target) -> None:
        """Resume a suspended workspace; `NotConnectable` for ended ones."""

    async def open_ssh(self, target: Target) -> SshStream:
        """A byte stream to the machine's own sshd."""

    def record_activity(self, target: Target) -> None:
        """Called on traffic; must be cheap (the backend throttles writes)."""
