"""Bad input answers a clear 4xx and changes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.server import JJHubServer


@pytest.fixture(scope="module")
def server(xfs_root: Path) -> Iterator[JJHubServer]:
    data_dir = xfs_root / "bad-input"
    data_dir.mkdir()
    srv = JJHubServer(data_dir, env={"JJHUB_RATE_LIMIT": "40"}).start()
    yield srv
    srv.stop()
    srv.cleanup_machines()


@pytest.fixture(scope="module")
def api(server: JJHubServer) -> Iterator[httpx.Client]:
    token = server.create_user("dora")
    with server.client(token) as client:
        assert client.post("/api/user/repos", json={"name": "r"}).status_code == 201
        yield client


WORKSPACES = "/api/repos/dora/r/workspaces"


def _count(api: httpx.Client) -> int:
    return int(api.get(WORKSPACES).headers["X-Total-Count"])


@pytest.mark.parametrize(
    ("request_kwargs", "status", "message"),
    [
        ({"content": b"{not json", "headers": {"Content-Type": "application/json"}}, 400, "invalid request body"),
        ({"content": b"name=x", "headers": {"Content-Type": "text/plain"}}, 415, "Content-Type must be application/json"),
        ({"json": {"size": "huge"}}, 422, "validation failed"),
        ({"json": {"persistence": "forever"}}, 422, "validation failed"),
        ({"json": {"idle_timeout_seconds": -5}}, 422, "validation failed"),
        ({"json": {"snapshot_id": "snap_doesnotexist"}}, 404, "workspace snapshot not found"),
    ],
)  # fmt: skip
def test_bad_create_requests_answer_4xx_and_create_nothing(
    api, request_kwargs, status, message
):
    before = _count(api)
    response = api.post(WORKSPACES, **request_kwargs)
    assert response.status_code == status, response.text
    assert response.json()["message"] == message
    assert _count(api) == before


def test_missing_or_wrong_token_is_401(server):
    for headers in (
        {},
        {"Authorization": "token jjhub_" + "0" * 40},
        {"Authorization": "Basic abc"},
    ):
        response = httpx.get(f"{server.url}{WORKSPACES}", headers=headers)
        assert response.status_code == 401
        assert response.json() == {"message": "authentication required"}


def test_bearer_scheme_is_accepted_in_any_case(server, api):
    token = api.headers["Authorization"].split()[1]
    response = httpx.get(
        f"{server.url}/api/user", headers={"Authorization": f"BEARER {token}"}
    )
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"page": "0"}, "invalid page value"),
        ({"page": "x"}, "invalid page value"),
        ({"per_page": "0"}, "invalid per_page value"),
        ({"per_page": "101"}, "per_page must not exceed 100"),
        ({"limit": "-1"}, "invalid limit value"),
        ({"limit": "ten"}, "invalid limit value"),
    ],
)
def test_bad_pagination_is_400(api, params, message):
    response = api.get(WORKSPACES, params=params)
    assert response.status_code == 400
    assert response.json() == {"message": message}


def test_limit_above_100_is_clamped(api):
    response = api.get(WORKSPACES, params={"limit": 500})
    assert response.status_code == 200


def test_request_id_is_echoed(api):
    response = api.get(WORKSPACES, headers={"X-Request-Id": "trace-me-123"})
    assert response.headers["X-Request-Id"] == "trace-me-123"
    assert api.get(WORKSPACES).headers["X-Request-Id"]


def test_over_the_rate_limit_is_429_with_retry_after(server):
    token = server.create_user("hasty")
    with server.client(token) as client:
        statuses = [client.get("/api/user").status_code for _ in range(45)]
        limited = client.get("/api/user")
    assert statuses[:40] == [200] * 40
    assert limited.status_code == 429
    assert limited.json() == {"message": "rate limit exceeded"}
    assert int(limited.headers["Retry-After"]) >= 1
    assert limited.headers["X-RateLimit-Remaining"] == "0"
    assert limited.headers["X-RateLimit-Limit"] == "40"


def test_openapi_schema_is_served(server):
    schema = httpx.get(f"{server.url}/openapi.json").json()
    assert "/api/repos/{owner}/{repo}/workspaces" in schema["paths"]
