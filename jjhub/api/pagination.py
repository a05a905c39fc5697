"""Both pagination styles of the contract, and the headers lists carry."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode

from fastapi import Request, Response

from jjhub.errors import BadRequest

MAX_PER_PAGE = 100
DEFAULT_PER_PAGE = 30


class BadPagination(BadRequest):
    pass


@dataclass(frozen=True)
class Page:
    offset: int
    limit: int
    cursor_style: bool


def _int(raw: str | None, message: str) -> int | None:
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise BadPagination(message) from None


def page_from(request: Request) -> Page:
    query = request.query_params
    limit = _int(query.get("limit"), "invalid limit value")
    cursor = _int(query.get("cursor"), "invalid cursor value")
    if limit is not None or cursor is not None:
        if limit is not None and limit < 1:
            raise BadPagination("invalid limit value")
        if cursor is not None and cursor < 0:
            raise BadPagination("invalid cursor value")
        return Page(cursor or 0, min(limit or DEFAULT_PER_PAGE, MAX_PER_PAGE), True)
    page = _int(query.get("page"), "invalid page value")
    per_page = _int(query.get("per_page"), "invalid per_page value")
    if page is not None and page < 1:
        raise BadPagination("invalid page value")
    if per_page is not None and per_page < 1:
        raise BadPagination("invalid per_page value")
    if per_page is not None and per_page > MAX_PER_PAGE:
        raise BadPagination("per_page must not exceed 100")
    size = per_page or DEFAULT_PER_PAGE
    return Page(((page or 1) - 1) * size, size, False)


def set_headers(request: Request, response: Response, page: Page, total: int) -> None:
    """`X-Total-Count` and a `Link` header with first, prev, next and last."""
    response.headers["X-Total-Count"] = str(total)
    base = str(request.url).split("?")[0]
    others = {
        k: v
        for k, v in request.query_params.items()
        if k not in ("page", "per_page", "limit", "cursor")
    }

    def link(offset: int) -> str:
        if page.cursor_style:
            params = {**others, "limit": page.limit, "cursor": offset}
        else:
            params = {
                **others,
                "page": offset // page.limit + 1,
                "per_page": page.limit,
            }
        return f"{base}?{urlencode(params)}"

    last = max(0, (total - 1) // page.limit * page.limit)
    links = [f'<{link(0)}>; rel="first"']
    if page.offset > 0:
        links.append(f'<{link(max(0, page.offset - page.limit))}>; rel="prev"')
    if page.offset + page.limit < total:
        links.append(f'<{link(page.offset + page.limit)}>; rel="next"')
    links.append(f'<{link(last)}>; rel="last"')
    response.headers["Link"] = ", ".join(links)
