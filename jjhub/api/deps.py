"""FastAPI dependencies: the database session, the caller, the repository."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from jjhub.errors import Unauthenticated
from jjhub.forge import accounts, repos
from jjhub.services import Services
from jjhub.store.models import Repository, User


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
