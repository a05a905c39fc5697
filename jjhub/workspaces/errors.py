"""Messages the contract fixes, and the mapping from runtime failures."""

from __future__ import annotations

from jjhub.errors import Conflict, NotFound, Unavailable
from jjhub.runtime.errors import IncompatibleSnapshot, RuntimeFailure

WORKSPACE_NOT_FOUND = "workspace not found"
SNAPSHOT_NOT_FOUND = "workspace snapshot not found"
SESSION_NOT_FOUND = "workspace session not found"


def workspace_not_found() -> NotFound:
    return NotFound(WORKSPACE_NOT_FOUND)


def snapshot_not_found() -> NotFound:
    return NotFound(SNAPSHOT_NOT_FOUND)


def not_allowed(action: str, status: str) -> Conflict:
    hint = {
        "stopped": "it was deleted; create a new workspace",
        "failed": "it failed; POST .../recover to restart it from its disk",
    }.get(status, "wait for the current operation to finish and retry")
    return Conflict(f"cannot {action} a workspace that is {status}: {hint}")


def from_runtime(action: str, error: RuntimeFailure) -> Unavailable | Conflict:
    if isinstance(error, IncompatibleSnapshot):
        return Conflict(f"cannot {action}: {error}")
    return Unavailable(f"{action} failed: {error}")
