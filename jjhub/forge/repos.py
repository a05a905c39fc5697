"""Repositories and who may use them.

Reading a repository needs ownership, membership of the owning organisation or
a collaborator entry. Anything else looks exactly like a repository that does
not exist, so names of private repositories do not leak.
"""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.orm import Session

from jjhub.errors import Conflict, Invalid, NotFound
from jjhub.forge.accounts import check_name, get_org, get_user, is_org_member
from jjhub.store.models import Collaborator, Repository, User

REPOSITORY_NOT_FOUND = "repository not found"
PERSISTENCE = ("ephemeral", "sticky", "persistent")
CLONE_URL = re.compile(r"^(https?|git|ssh|file)://\S+$")


def _check_clone_url(clone_url: str | None) -> None:
    if clone_url and not CLONE_URL.match(clone_url):
        raise Invalid(
            "clone_url must be an http(s)://, git://, ssh:// or file:// URL",
            field="clone_url",
        )


def create_repository(
    db: Session,
    creator: User,
    name: str,
    *,
    org: str | None = None,
    description: str = "",
    clone_url: str | None = None,
    default_persistence: str | None = None,
    default_idle_timeout_seconds: int | None = None,
) -> Repository:
    check_name(name, "repository")
    _check_clone_url(clone_url)
    if default_persistence and default_persistence not in PERSISTENCE:
        raise Invalid("persistence must be ephemeral, sticky or persistent")
    owner_org = get_org(db, org) if org else None
    if owner_org and not (
        creator.is_admin or is_org_member(db, owner_org.id, creator.id)
    ):
        raise NotFound(f"organisation {org!r} not found")
    owner = owner_org.name if owner_org else creator.username
    if db.scalar(
        select(Repository).where(Repository.owner == owner, Repository.name == name)
    ):
        raise Conflict(f"repository {owner}/{name} already exists")
    repo = Repository(
        owner=owner,
        owner_user_id=None if owner_org else creator.id,
        owner_org_id=owner_org.id if owner_org else None,
        name=name,
        description=description,
        clone_url=clone_url,
        default_persistence=default_persistence,
        default_idle_timeout_seconds=default_idle_timeout_seconds,
    )
    db.add(repo)
    db.flush()
    return repo


def can_read(db: Session, user: User, repo: Repository) -> bool:
    if user.is_admin or repo.owner_user_id == user.id:
        return True
    if repo.owner_org_id is not None and is_org_member(db, repo.owner_org_id, user.id):
        return True
    return db.get(Collaborator, (repo.id, user.id)) is not None


def readable_repository(db: Session, user: User, owner: str, name: str) -> Repository:
    """The repository if `user` may use it; 404 in every other case."""
    repo = db.scalar(
        select(Repository).where(Repository.owner == owner, Repository.name == name)
    )
    if repo is None or not can_read(db, user, repo):
        raise NotFound(REPOSITORY_NOT_FOUND)
    return repo


def list_repositories(db: Session, user: User) -> list[Repository]:
    rows = db.scalars(select(Repository).order_by(Repository.id)).all()
    return [repo for repo in rows if can_read(db, user, repo)]


def add_collaborator(db: Session, repo: Repository, username: str) -> None:
    user = get_user(db, username)
    if db.get(Collaborator, (repo.id, user.id)) is None:
        db.add(Collaborator(repository_id=repo.id, user_id=user.id))
        db.flush()


def set_defaults(
    repo: Repository,
    *,
    persistence: str | None = None,
    idle_timeout_seconds: int | None = None,
) -> None:
    if persistence is not None:
        if persistence not in PERSISTENCE:
            raise Invalid("persistence must be ephemeral, sticky or persistent")
        repo.default_persistence = persistence
    if idle_timeout_seconds is not None:
        repo.default_idle_timeout_seconds = idle_timeout_seconds
