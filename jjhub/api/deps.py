"""FastAPI dependencies: the database session, the caller, the repository."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from jjhub.errors import Unauthenticated
from jjhub.forge import accounts, repos
from jjhub.services import Services
from jjhub.store.models import Repository, User, Workspace, WorkspaceSession


def services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


def db_session(request: Request) -> Iterator[Session]:
    with services(request).db.session() as session:
        yield session


DB = Annotated[Session, Depends(db_session)]


def token_from(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() not in ("token", "bearer") or not value.strip():
        raise Unauthenticated()
    return value.strip()


def current_user(request: Request) -> User:
    """The caller, loaded in a unit of work of its own.

    Authentication writes `last_used_at`; committing it here, rather than in
    the route's session, keeps SQLite's write lock from being held while the
    route waits on a machine (which would block every other writer).
    """
    with services(request).db.session() as db:
        user = accounts.authenticate(db, token_from(request))
    request.state.user_id = user.id
    return user


CurrentUser = Annotated[User, Depends(current_user)]


def repository(
    owner: str, repo: str, request: Request, user: CurrentUser
) -> Repository:
    with services(request).db.session() as db:
        return repos.readable_repository(db, user, owner, repo)


Repo = Annotated[Repository, Depends(repository)]


def owned_workspace(
    workspace_id: str, request: Request, user: CurrentUser, repository: Repo
) -> Workspace:
    """The caller's workspace, loaded in a short unit of work.

    Routes that wait on a machine, and streams that stay open, must not hold
    a database connection while they wait, so they take this instead of DB.
    """
    svc = services(request)
    with svc.db.session() as db:
        return svc.workspaces.get(db, user, repository, workspace_id)


OwnedWorkspace = Annotated[Workspace, Depends(owned_workspace)]


def owned_session(
    session_id: str, request: Request, user: CurrentUser, repository: Repo
) -> WorkspaceSession:
    from jjhub.workspaces import sessions

    with services(request).db.session() as db:
        return sessions.get(db, user, repository, session_id)


OwnedSession = Annotated[WorkspaceSession, Depends(owned_session)]
