"""Request and response shapes for users and repositories."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from jjhub.api.timestamps import Timestamp
from jjhub.store.models import Repository, User


class UserOut(BaseModel):
    id: int
    login: str
    username: str
    is_admin: bool
    created_at: Timestamp

    @classmethod
    def of(cls, user: User) -> UserOut:
        return cls(
            id=user.id,
            login=user.username,
            username=user.username,
            is_admin=user.is_admin,
            created_at=user.created_at,
        )


class RepositoryCreate(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str = Field(min_length=1, max_length=100)
    description: str = ""
    clone_url: str | None = None
    default_persistence: Literal["ephemeral", "sticky", "persistent"] | None = None
    default_idle_timeout_seconds: int | None = Field(default=None, ge=0)


class RepositoryOut(BaseModel):
    id: int
    owner: str
    name: str
    full_name: str
    description: str
    clone_url: str | None
    private: bool
    default_persistence: str | None
    default_idle_timeout_seconds: int | None
    created_at: Timestamp
    updated_at: Timestamp

    @classmethod
    def of(cls, repo: Repository) -> RepositoryOut:
        return cls(
            id=repo.id,
            owner=repo.owner,
            name=repo.name,
            full_name=f"{repo.owner}/{repo.name}",
            description=repo.description,
            clone_url=repo.clone_url,
            private=repo.is_private,
            default_persistence=repo.default_persistence,
            default_idle_timeout_seconds=repo.default_idle_timeout_seconds,
            created_at=repo.created_at,
            updated_at=repo.updated_at,
        )
