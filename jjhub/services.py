"""The objects one server process shares between the API, gateway and loop."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from jjhub.config import Settings
from jjhub.store.db import Database

if TYPE_CHECKING:
    from jjhub.workspaces.service import WorkspaceService


@dataclass
class Services:
    settings: Settings
    db: Database
    workspaces: WorkspaceService
