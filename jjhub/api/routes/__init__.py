"""Every router of the API, one module per resource."""

from fastapi import APIRouter

from jjhub.api.routes import (
    issues,
    landings,
    repos,
    sessions,
    snapshots,
    streams,
    users,
    workspaces,
)

ROUTERS: list[APIRouter] = [
    users.router,
    repos.router,
    workspaces.router,
    snapshots.router,
    sessions.router,
    streams.router,
    issues.router,
    landings.router,
]
