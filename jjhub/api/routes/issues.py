"""Issue routes under `/api/repos/{owner}/{repo}/issues`."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from jjhub.api.deps import DB, CurrentUser, Repo
from jjhub.api.pagination import page_from, set_headers
from jjhub.api.schemas_issues import IssueCreate, IssueOut
from jjhub.forge import issues
from jjhub.store.models import User

router = APIRouter(prefix="/api/repos/{owner}/{repo}", tags=["issues"])


@router.post("/issues", status_code=201, response_model=IssueOut)
def create_issue(
    body: IssueCreate, user: CurrentUser, repository: Repo, db: DB
) -> IssueOut:
    """Open an issue; its number is the repository's next."""
    issue = issues.create_issue(
        db, repository, user, body.title, body.body, body.labels
    )
    return IssueOut.of(issue, user)


@router.get("/issues", response_model=list[IssueOut])
def list_issues(
    request: Request,
    response: Response,
    repository: Repo,
    db: DB,
    state: str | None = "open",
) -> list[IssueOut]:
    """Issues newest first; `state` is open (default), closed or all."""
    page = page_from(request)
    rows, total = issues.list_issues(
        db, repository, issues.check_state_filter(state), page.offset, page.limit
    )
    set_headers(request, response, page, total)
    return [IssueOut.of(row, db.get(User, row.author_id)) for row in rows]


@router.get("/issues/{number}", response_model=IssueOut)
def get_issue(number: int, repository: Repo, db: DB) -> IssueOut:
    """One issue by its number."""
    issue = issues.get_issue(db, repository, number)
    return IssueOut.of(issue, db.get(User, issue.author_id))
