"""Issues and landing requests through the real API app and a real database."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace

import httpx
import pytest

from tests.support.forge_api import serve_forge_api


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    """The API on a fresh database, users alice and bob, three repositories."""
    with serve_forge_api(tmp_path_factory.mktemp("issues")) as forge:
        tokens = {name: forge.create_user(name) for name in ("alice", "bob")}
        forge.create_repo("alice", "one")
        forge.create_repo("alice", "two")
        forge.create_repo("bob", "private")
        with httpx.Client(base_url=forge.url) as client:
            yield SimpleNamespace(client=client, tokens=tokens)


def _headers(api: SimpleNamespace, user: str = "alice") -> dict[str, str]:
    return {"Authorization": f"token {api.tokens[user]}"}


def _post(api: SimpleNamespace, path: str, body: object, user: str = "alice"):  # type: ignore[no-untyped-def]
    return api.client.post(path, json=body, headers=_headers(api, user))


def _get(api: SimpleNamespace, path: str, user: str = "alice"):  # type: ignore[no-untyped-def]
    return api.client.get(path, headers=_headers(api, user))


def test_issue_numbers_count_per_repository(api: SimpleNamespace) -> None:
    first = _post(api, "/api/repos/alice/one/issues", {"title": "First"})
    second = _post(api, "/api/repos/alice/one/issues", {"title": "Second"})
    other = _post(api, "/api/repos/alice/two/issues", {"title": "Elsewhere"})

    assert first.status_code == second.status_code == other.status_code == 201
    assert second.json()["number"] == first.json()["number"] + 1
    assert other.json()["number"] == 1


def test_issue_create_returns_contract_fields(api: SimpleNamespace) -> None:
    answer = _post(
        api,
        "/api/repos/alice/one/issues",
        {"title": "Crash on start", "body": "Steps", "labels": ["bug", {"name": "p1"}]},
    )

    assert answer.status_code == 201
    issue = answer.json()
    assert issue["title"] == "Crash on start"
    assert issue["body"] == "Steps"
    assert issue["state"] == "open"
    assert issue["labels"] == [{"name": "bug"}, {"name": "p1"}]
    assert issue["author"]["login"] == "alice"
    assert {"id", "number", "created_at", "updated_at"} <= issue.keys()
    fetched = _get(api, f"/api/repos/alice/one/issues/{issue['number']}")
    assert fetched.json() == issue


def test_issue_create_without_title_is_validation_failed(api: SimpleNamespace) -> None:
    answer = _post(api, "/api/repos/alice/one/issues", {"body": "no title"})

    assert answer.status_code == 422
    assert answer.json()["message"] == "validation failed"
    assert answer.json()["errors"] == [
        {"resource": "Issue", "field": "title", "code": "missing_field"}
    ]


def test_issue_list_is_newest_first_with_total(api: SimpleNamespace) -> None:
    _post(api, "/api/repos/alice/two/issues", {"title": "Later"})

    answer = _get(api, "/api/repos/alice/two/issues?per_page=1")

    assert answer.status_code == 200
    assert [i["title"] for i in answer.json()] == ["Later"]
    assert int(answer.headers["X-Total-Count"]) >= 2
    assert 'rel="next"' in answer.headers["Link"]


def test_issue_not_found(api: SimpleNamespace) -> None:
    answer = _get(api, "/api/repos/alice/one/issues/9999")

    assert answer.status_code == 404
    assert answer.json() == {"message": "issue not found"}


def test_issues_of_a_foreign_repository_are_not_found(api: SimpleNamespace) -> None:
    create = _post(api, "/api/repos/bob/private/issues", {"title": "x"})
    listing = _get(api, "/api/repos/bob/private/issues")
    landing = _post(
        api,
        "/api/repos/bob/private/landings",
        {"title": "x", "target_bookmark": "main"},
    )

    for answer in (create, listing, landing):
        assert answer.status_code == 404
        assert answer.json()["message"] == "repository not found"


def test_issues_need_a_token(api: SimpleNamespace) -> None:
    answer = api.client.get("/api/repos/alice/one/issues")

    assert answer.status_code == 401
    assert answer.json()["message"] == "authentication required"


def test_landing_draft_references_the_issue(api: SimpleNamespace) -> None:
    answer = _post(
        api,
        "/api/repos/alice/one/landings",
        {
            "title": "Fix crash on start",
            "body": "Closes #1",
            "target_bookmark": "main",
            "change_ids": ["kxyzqvwn"],
            "draft": True,
        },
    )

    assert answer.status_code == 201
    landing = answer.json()
    assert landing["draft"] is True
    assert landing["state"] == "open"
    assert landing["target_bookmark"] == "main"
    assert landing["change_ids"] == ["kxyzqvwn"]
    assert landing["closes_issues"] == [1]
    fetched = _get(api, f"/api/repos/alice/one/landings/{landing['number']}")
    assert fetched.json() == landing


def test_landing_numbers_count_per_repository_apart_from_issues(
    api: SimpleNamespace,
) -> None:
    body = {"title": "t", "target_bookmark": "main"}
    first = _post(api, "/api/repos/alice/two/landings", body).json()
    second = _post(api, "/api/repos/alice/two/landings", body).json()

    assert second["number"] == first["number"] + 1
    listing = _get(api, "/api/repos/alice/two/landings").json()
    assert [row["number"] for row in listing][:2] == [second["number"], first["number"]]


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"target_bookmark": "main"}, ["title"]),
        ({"title": "t"}, ["target_bookmark"]),
        ({"title": " ", "target_bookmark": ""}, ["title", "target_bookmark"]),
    ],
)
def test_landing_without_title_or_bookmark_is_validation_failed(
    api: SimpleNamespace, body: dict[str, str], fields: list[str]
) -> None:
    answer = _post(api, "/api/repos/alice/one/landings", body)

    assert answer.status_code == 422
    assert answer.json()["message"] == "validation failed"
    assert [e["field"] for e in answer.json()["errors"]] == fields


def test_landing_not_found(api: SimpleNamespace) -> None:
    answer = _get(api, "/api/repos/alice/one/landings/777")

    assert answer.status_code == 404
    assert answer.json() == {"message": "landing request not found"}


def test_list_with_unknown_state_is_validation_failed(api: SimpleNamespace) -> None:
    answer = _get(api, "/api/repos/alice/one/issues?state=weird")

    assert answer.status_code == 422
