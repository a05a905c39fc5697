"""Landing request routes under `/api/repos/{owner}/{repo}/landings`."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from jjhub.api.deps import DB, CurrentUser, Repo
from jjhub.api.pagination import page_from, set_headers
from jjhub.api.schemas_issues import LandingCreate, LandingOut
from jjhub.forge import landings
from jjhub.forge.issues import check_state_filter
from jjhub.store.models import User

router = APIRouter(prefix="/api/repos/{owner}/{repo}", tags=["landings"])

STATES = ("open", "closed", "merged")


@router.post("/landings", status_code=201, response_model=LandingOut)
def create_landing(
    body: LandingCreate, user: CurrentUser, repository: Repo, db: DB
) -> LandingOut:
    """Open a landing request (a draft with `draft: true`) onto a bookmark."""
    landing = landings.create_landing(
        db,
        repository,
        user,
        title=body.title,
        target_bookmark=body.target_bookmark,
        body=body.body,
        change_ids=body.change_ids,
        draft=body.draft,
    )
    return LandingOut.of(landing, user)


@router.get("/landings", response_model=list[LandingOut])
def list_landings(
    request: Request,
    response: Response,
    repository: Repo,
    db: DB,
    state: str | None = "open",
) -> list[LandingOut]:
    """Landing requests newest first; `state`: open (default), closed, merged, all."""
    page = page_from(request)
    wanted = check_state_filter(state, STATES, "LandingRequest")
    rows, total = landings.list_landings(
        db, repository, wanted, page.offset, page.limit
    )
    set_headers(request, response, page, total)
    return [LandingOut.of(row, db.get(User, row.author_id)) for row in rows]


@router.get("/landings/{number}", response_model=LandingOut)
def get_landing(number: int, repository: Repo, db: DB) -> LandingOut:
    """One landing request by its number."""
    landing = landings.get_landing(db, repository, number)
    return LandingOut.of(landing, db.get(User, landing.author_id))
