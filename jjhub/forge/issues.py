"""Issues: numbered per repository, with labels and an open or closed state."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from jjhub.errors import NotFound, ValidationFailed
from jjhub.store.models import Issue, Repository, User

ISSUE_NOT_FOUND = "issue not found"
STATES = ("open", "closed")
MAX_TITLE = 255


def check_state_filter(
    state: str | None, states: tuple[str, ...] = STATES, resource: str = "Issue"
) -> str | None:
    """One of `states`, or None for `all`; anything else is refused."""
    if state in (None, "", "all"):
        return None
    if state not in states:
        raise ValidationFailed(resource, [("state", "invalid")])
    return state


def create_issue(
    db: Session,
    repo: Repository,
    author: User,
    title: str | None,
    body: str | None = "",
    labels: list[str] | None = None,
) -> Issue:
    """A new open issue with the repository's next number.

    Raises `ValidationFailed` when the title is missing or too long.
    """
    title = (title or "").strip()
    if not title:
        raise ValidationFailed("Issue", [("title", "missing_field")])
    if len(title) > MAX_TITLE:
        raise ValidationFailed("Issue", [("title", "invalid")])
    clean_labels = sorted({label.strip() for label in labels or [] if label.strip()})

    # The counter and the row change in one transaction, so two creates
    # never share a number (SQLite serialises writers; elsewhere the
    # unique constraint on (repository_id, number) refuses a duplicate).
    locked = db.get(Repository, repo.id)
    assert locked is not None
    highest = db.scalar(
        select(func.max(Issue.number)).where(Issue.repository_id == repo.id)
    )
    number = max(locked.next_issue_number or 1, (highest or 0) + 1)
    locked.next_issue_number = number + 1
    issue = Issue(
        repository_id=repo.id,
        number=number,
        title=title,
        body=body or "",
        state="open",
        labels=clean_labels,
        author_id=author.id,
    )
    db.add(issue)
    db.flush()
    return issue


def get_issue(db: Session, repo: Repository, number: int) -> Issue:
    issue = db.scalar(
        select(Issue).where(Issue.repository_id == repo.id, Issue.number == number)
    )
    if issue is None:
        raise NotFound(ISSUE_NOT_FOUND)
    return issue


def list_issues(
    db: Session, repo: Repository, state: str | None, offset: int, limit: int
) -> tuple[list[Issue], int]:
    """Issues newest first, with the total count before paging."""
    where = [Issue.repository_id == repo.id]
    if state:
        where.append(Issue.state == state)
    total = db.scalar(select(func.count()).select_from(Issue).where(*where))
    rows = db.scalars(
        select(Issue)
        .where(*where)
        .order_by(Issue.number.desc())
        .offset(offset)
        .limit(limit)
    ).all()
    return list(rows), int(total or 0)
