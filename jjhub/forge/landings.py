"""Landing requests: proposals to land changes onto a target bookmark.

Numbers count per repository, separately from issues. A body line such as
`Closes #12` references issue 12; `closes_issues` reads those references.
"""

from __future__ import annotations

import re

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from jjhub.errors import NotFound, ValidationFailed
from jjhub.store.models import LandingRequest, Repository, User

LANDING_NOT_FOUND = "landing request not found"
MAX_TITLE = 255
CLOSING = re.compile(r"\b(?:close[sd]?|fix(?:e[sd])?|resolve[sd]?)\s+#(\d+)\b", re.I)
BOOKMARK = re.compile(r"^[^\s~^:?*\[\\]+$")
CHANGE_ID = re.compile(r"^[0-9a-z]{1,64}$")


def closes_issues(body: str) -> list[int]:
    """Issue numbers the body closes (`Closes #N`, `Fixes #N`), in order."""
    seen: list[int] = []
    for match in CLOSING.finditer(body or ""):
        number = int(match.group(1))
        if number not in seen:
            seen.append(number)
    return seen


def create_landing(
    db: Session,
    repo: Repository,
    author: User,
    *,
    title: str | None,
    target_bookmark: str | None,
    body: str | None = "",
    change_ids: list[str] | None = None,
    draft: bool = False,
) -> LandingRequest:
    """A new open landing request with the repository's next landing number.

    Raises `ValidationFailed` naming every missing or malformed field.
    """
    title = (title or "").strip()
    bookmark = (target_bookmark or "").strip()
    problems: list[tuple[str, str]] = []
    if not title:
        problems.append(("title", "missing_field"))
    elif len(title) > MAX_TITLE:
        problems.append(("title", "invalid"))
    if not bookmark:
        problems.append(("target_bookmark", "missing_field"))
    elif not BOOKMARK.match(bookmark) or len(bookmark) > 255:
        problems.append(("target_bookmark", "invalid"))
    changes = [c.strip() for c in change_ids or [] if c.strip()]
    if any(not CHANGE_ID.match(c) for c in changes):
        problems.append(("change_ids", "invalid"))
    if problems:
        raise ValidationFailed("LandingRequest", problems)

    highest = db.scalar(
        select(func.max(LandingRequest.number)).where(
            LandingRequest.repository_id == repo.id
        )
    )
    landing = LandingRequest(
        repository_id=repo.id,
        number=(highest or 0) + 1,
        title=title,
        body=body or "",
        state="open",
        draft=draft,
        target_bookmark=bookmark,
        change_ids=changes,
        author_id=author.id,
    )
    db.add(landing)
    db.flush()
    return landing


def get_landing(db: Session, repo: Repository, number: int) -> LandingRequest:
    landing = db.scalar(
        select(LandingRequest).where(
            LandingRequest.repository_id == repo.id, LandingRequest.number == number
        )
    )
    if landing is None:
        raise NotFound(LANDING_NOT_FOUND)
    return landing


def list_landings(
    db: Session, repo: Repository, state: str | None, offset: int, limit: int
) -> tuple[list[LandingRequest], int]:
    """Landing requests newest first, with the total count before paging."""
    where = [LandingRequest.repository_id == repo.id]
    if state:
        where.append(LandingRequest.state == state)
    total = db.scalar(select(func.count()).select_from(LandingRequest).where(*where))
    rows = db.scalars(
        select(LandingRequest)
        .where(*where)
        .order_by(LandingRequest.number.desc())
        .offset(offset)
        .limit(limit)
    ).all()
    return list(rows), int(total or 0)
