"""Repositories: create for a user or an organisation, read, list."""

from fastapi import APIRouter

from jjhub.api.deps import DB, CurrentUser, Repo
from jjhub.api.schemas_forge import RepositoryCreate, RepositoryOut
from jjhub.forge import repos

router = APIRouter(tags=["repositories"])


def _create(db, user, body: RepositoryCreate, org: str | None) -> RepositoryOut:  # type: ignore[no-untyped-def]
    repo = repos.create_repository(
        db,
        user,
        body.name,
        org=org,
        description=body.description,
        clone_url=body.clone_url,
        default_persistence=body.default_persistence,
        default_idle_timeout_seconds=body.default_idle_timeout_seconds,
    )
    return RepositoryOut.of(repo)


@router.post("/api/user/repos", status_code=201, response_model=RepositoryOut)
def create_user_repository(
    body: RepositoryCreate, user: CurrentUser, db: DB
) -> RepositoryOut:
    """Create a repository owned by the caller."""
    return _create(db, user, body, None)


@router.post("/api/orgs/{org}/repos", status_code=201, response_model=RepositoryOut)
def create_org_repository(
    org: str, body: RepositoryCreate, user: CurrentUser, db: DB
) -> RepositoryOut:
    """Create a repository owned by an organisation the caller belongs to."""
    return _create(db, user, body, org)


@router.get("/api/user/repos", response_model=list[RepositoryOut])
def list_repositories(user: CurrentUser, db: DB) -> list[RepositoryOut]:
    """Repositories the caller can use."""
    return [RepositoryOut.of(r) for r in repos.list_repositories(db, user)]


@router.get("/api/repos/{owner}/{repo}", response_model=RepositoryOut)
def read_repository(repository: Repo) -> RepositoryOut:
    """One repository, if the caller may use it."""
    return RepositoryOut.of(repository)
