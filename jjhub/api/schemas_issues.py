"""Request and response shapes for issues and landing requests."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator

from jjhub.forge.landings import closes_issues
from jjhub.store.models import Issue, LandingRequest, User


class Label(BaseModel):
    name: str


class Author(BaseModel):
    id: int
    login: str

    @classmethod
    def of(cls, user: User | None, user_id: int) -> Author:
        return cls(id=user_id, login=user.username if user else "")


class IssueCreate(BaseModel):
    """Title is checked by the domain so a missing one is `validation failed`."""

    model_config = ConfigDict(extra="ignore")

    title: str | None = Field(default=None, max_length=1000)
    body: str | None = ""
    labels: list[str] = Field(default_factory=list, max_length=50)

    @field_validator("labels", mode="before")
    @classmethod
    def _label_names(cls, value: object) -> object:
        # Accept both ["bug"] and [{"name": "bug"}], as forge clients send either.
        if isinstance(value, list):
            return [v.get("name", "") if isinstance(v, dict) else v for v in value]
        return value


class IssueOut(BaseModel):
    id: int
    number: int
    title: str
    body: str
    state: str
    labels: list[Label]
    author: Author
    repository_id: int
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, issue: Issue, author: User | None) -> IssueOut:
        return cls(
            id=issue.id,
            number=issue.number,
            title=issue.title,
            body=issue.body,
            state=issue.state,
            labels=[Label(name=name) for name in issue.labels or []],
            author=Author.of(author, issue.author_id),
            repository_id=issue.repository_id,
            created_at=issue.created_at,
            updated_at=issue.updated_at,
        )


class LandingCreate(BaseModel):
    """Title and bookmark are checked by the domain, for per-field errors."""

    model_config = ConfigDict(extra="ignore")

    title: str | None = Field(default=None, max_length=1000)
    body: str | None = ""
    target_bookmark: str | None = Field(default=None, max_length=1000)
    change_ids: list[str] = Field(default_factory=list, max_length=500)
    draft: bool = False


class LandingOut(BaseModel):
    id: int
    number: int
    title: str
    body: str
    state: str
    draft: bool
    target_bookmark: str
    change_ids: list[str]
    closes_issues: list[int]
    author: Author
    repository_id: int
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, landing: LandingRequest, author: User | None) -> LandingOut:
        return cls(
            id=landing.id,
            number=landing.number,
            title=landing.title,
            body=landing.body,
            state=landing.state,
            draft=landing.draft,
            target_bookmark=landing.target_bookmark,
            change_ids=list(landing.change_ids or []),
            closes_issues=closes_issues(landing.body),
            author=Author.of(author, landing.author_id),
            repository_id=landing.repository_id,
            created_at=landing.created_at,
            updated_at=landing.updated_at,
        )
