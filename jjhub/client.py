"""A typed client for the jjhub API, shared by the CLI and the tests.

Every call returns the decoded JSON body. A non-2xx answer raises `ApiError`
with the server's own message; a server that cannot be reached raises
`Unreachable` naming the URL, so callers can tell the two apart.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import quote

import httpx

JSON = dict[str, Any]
RATE_LIMIT_RETRIES = 3


class ClientError(Exception):
    """Base class of the errors this client raises."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ApiError(ClientError):
    """The server answered with an error status; `message` is its own text."""

    def __init__(
        self, status: int, message: str, errors: list[JSON] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.errors = errors or []

    def __str__(self) -> str:
        return f"{self.message} (HTTP {self.status})"


class Unreachable(ClientError):
    """No answer from the server at `url`."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot reach the jjhub server at {url}: {reason}")
        self.url = url


@dataclass(frozen=True)
class Event:
    """One server-sent event: its name and decoded `data`."""

    id: str
    event: str
    data: JSON


def _repo_path(repo: str) -> str:
    owner, _, name = repo.partition("/")
    return f"/api/repos/{quote(owner, safe='')}/{quote(name, safe='')}"


def _error_from(response: httpx.Response) -> ApiError:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        errors = body.get("errors")
        return ApiError(
            response.status_code,
            body["message"],
            errors if isinstance(errors, list) else None,
        )
    text = response.text.strip() or response.reason_phrase
    return ApiError(response.status_code, text[:200])


class Client:
    """Synchronous API client; `repo` arguments are `OWNER/REPO`."""

    def __init__(
        self,
        base_url: str,
        token: str | None,
        *,
        timeout: float = 600.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"User-Agent": "jjhub-cli", "Accept": "application/json"}
        if token:
            headers["Authorization"] = f"token {token}"
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=10.0),
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing --------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        body: JSON | None = None,
        params: dict[str, Any] | None = None,
    ) -> Any:
        """One call; the decoded body, or None for an empty answer."""
        return self.request_with_status(method, path, body=body, params=params)[1]

    def request_with_status(
        self,
        method: str,
        path: str,
        *,
        body: JSON | None = None,
        params: dict[str, Any] | None = None,
    ) -> tuple[int, Any]:
        """The status and decoded body; waits out a rate limit a few times."""
        for attempt in range(RATE_LIMIT_RETRIES + 1):
            try:
                response = self._http.request(
                    method,
                    path,
                    json=body if body is not None or method == "GET" else {},
                    params={k: v for k, v in (params or {}).items() if v is not None},
                )
            except httpx.TransportError as error:
                raise Unreachable(self.base_url, _reason(error)) from error
            if response.status_code != 429 or attempt == RATE_LIMIT_RETRIES:
                break
            time.sleep(_retry_after(response))
        if response.status_code >= 400:
            raise _error_from(response)
        return response.status_code, response.json() if response.content else None

    # -- users and repositories ------------------------------------------------

    def current_user(self) -> JSON:
        return self._obj("GET", "/api/user")

    def create_repo(
        self,
        name: str,
        *,
        org: str | None = None,
        description: str = "",
        clone_url: str | None = None,
    ) -> JSON:
        body: JSON = {"name": name, "description": description}
        if clone_url:
            body["clone_url"] = clone_url
        path = f"/api/orgs/{quote(org, safe='')}/repos" if org else "/api/user/repos"
        return self._obj("POST", path, body=body)

    def get_repo(self, repo: str) -> JSON:
        return self._obj("GET", _repo_path(repo))

    def list_repos(self) -> list[JSON]:
        return cast(list[JSON], self.request("GET", "/api/user/repos"))

    # -- workspaces ------------------------------------------------------------

    def create_workspace(
        self,
        repo: str,
        *,
        name: str | None = None,
        snapshot_id: str | None = None,
        size: str | None = None,
        persistence: str | None = None,
        idle_timeout_seconds: int | None = None,
    ) -> tuple[JSON, bool]:
        """The new workspace and True, or the existing primary one and False."""
        fields = {
            "name": name,
            "snapshot_id": snapshot_id,
            "size": size,
            "persistence": persistence,
            "idle_timeout_seconds": idle_timeout_seconds,
        }
        body = {k: v for k, v in fields.items() if v is not None}
        status, workspace = self.request_with_status(
            "POST", f"{_repo_path(repo)}/workspaces", body=body
        )
        return workspace, status == 201

    def list_workspaces(self, repo: str, *, limit: int = 100) -> list[JSON]:
        return self._all(f"{_repo_path(repo)}/workspaces", limit)

    def get_workspace(self, repo: str, workspace_id: str) -> JSON:
        return self._obj("GET", self._ws(repo, workspace_id))

    def delete_workspace(self, repo: str, workspace_id: str) -> None:
        self.request("DELETE", self._ws(repo, workspace_id))

    def ssh_info(self, repo: str, workspace_id: str) -> JSON:
        return self._obj("GET", f"{self._ws(repo, workspace_id)}/ssh")

    def suspend_workspace(self, repo: str, workspace_id: str) -> JSON:
        return self._action(repo, workspace_id, "suspend")

    def resume_workspace(self, repo: str, workspace_id: str) -> JSON:
        return self._action(repo, workspace_id, "resume")

    def recover_workspace(self, repo: str, workspace_id: str) -> JSON:
        return self._action(repo, workspace_id, "recover")

    def fork_workspace(
        self,
        repo: str,
        workspace_id: str,
        *,
        name: str | None = None,
        count: int | None = None,
    ) -> list[JSON]:
        """The forks made; always a list, whether or not `count` was given."""
        body = {k: v for k, v in {"name": name, "count": count}.items() if v}
        answer = self.request("POST", f"{self._ws(repo, workspace_id)}/fork", body=body)
        if isinstance(answer, dict) and "workspaces" in answer:
            return list(answer["workspaces"])
        return [answer]

    def snapshot_workspace(
        self, repo: str, workspace_id: str, *, name: str | None = None
    ) -> JSON:
        body = {"name": name} if name else {}
        return self._obj("POST", f"{self._ws(repo, workspace_id)}/snapshot", body=body)

    def list_snapshots(
        self, repo: str, *, workspace_id: str | None = None, limit: int = 100
    ) -> list[JSON]:
        return self._all(
            f"{_repo_path(repo)}/workspace-snapshots",
            limit,
            {"workspace_id": workspace_id},
        )

    def get_snapshot(self, repo: str, snapshot_id: str) -> JSON:
        path = f"{_repo_path(repo)}/workspace-snapshots/{quote(snapshot_id, safe='')}"
        return self._obj("GET", path)

    def delete_snapshot(self, repo: str, snapshot_id: str) -> None:
        path = f"{_repo_path(repo)}/workspace-snapshots/{quote(snapshot_id, safe='')}"
        self.request("DELETE", path)

    def stream_workspace(
        self, repo: str, workspace_id: str, *, keepalive: float | None = None
    ) -> Iterator[Event]:
        """Status events as they come; ends when the server closes the stream."""
        params = {"keepalive": keepalive} if keepalive else {}
        path = f"{self._ws(repo, workspace_id)}/stream"
        timeout = httpx.Timeout(10.0, read=None)
        try:
            with self._http.stream(
                "GET", path, params=params, timeout=timeout
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    raise _error_from(response)
                yield from parse_events(response.iter_lines())
        except httpx.TransportError as error:
            raise Unreachable(self.base_url, _reason(error)) from error

    # -- issues and landing requests ---------------------------------------------

    def create_issue(
        self, repo: str, title: str, body: str = "", labels: list[str] | None = None
    ) -> JSON:
        payload: JSON = {"title": title, "body": body, "labels": labels or []}
        return self._obj("POST", f"{_repo_path(repo)}/issues", body=payload)

    def get_issue(self, repo: str, number: int) -> JSON:
        return self._obj("GET", f"{_repo_path(repo)}/issues/{number}")

    def list_issues(
        self, repo: str, *, state: str | None = None, limit: int = 100
    ) -> list[JSON]:
        return self._all(f"{_repo_path(repo)}/issues", limit, {"state": state})

    def create_landing(
        self,
        repo: str,
        title: str,
        *,
        target_bookmark: str,
        body: str = "",
        change_ids: list[str] | None = None,
        draft: bool = False,
    ) -> JSON:
        payload: JSON = {
            "title": title,
            "body": body,
            "target_bookmark": target_bookmark,
            "change_ids": change_ids or [],
            "draft": draft,
        }
        return self._obj("POST", f"{_repo_path(repo)}/landings", body=payload)

    def get_landing(self, repo: str, number: int) -> JSON:
        return self._obj("GET", f"{_repo_path(repo)}/landings/{number}")

    def list_landings(
        self, repo: str, *, state: str | None = None, limit: int = 100
    ) -> list[JSON]:
        return self._all(f"{_repo_path(repo)}/landings", limit, {"state": state})

    # -- helpers ---------------------------------------------------------------

    def _obj(self, method: str, path: str, *, body: JSON | None = None) -> JSON:
        """A call that answers with one JSON object."""
        return cast(JSON, self.request(method, path, body=body))

    def _ws(self, repo: str, workspace_id: str) -> str:
        return f"{_repo_path(repo)}/workspaces/{quote(workspace_id, safe='')}"

    def _action(self, repo: str, workspace_id: str, action: str) -> JSON:
        return self._obj("POST", f"{self._ws(repo, workspace_id)}/{action}", body={})

    def _all(
        self, path: str, limit: int, params: dict[str, Any] | None = None
    ) -> list[JSON]:
        """Up to `limit` rows, following pages of 100."""
        rows: list[JSON] = []
        page = 1
        while len(rows) < limit:
            batch = self.request(
                "GET", path, params={**(params or {}), "page": page, "per_page": 100}
            )
            rows.extend(batch)
            if len(batch) < 100:
                break
            page += 1
        return rows[:limit]


def parse_events(lines: Iterator[str]) -> Iterator[Event]:
    """Server-sent events from text lines; comments (keep-alives) are skipped."""
    event_id, name = "", "message"
    data: list[str] = []
    for line in lines:
        if line == "":
            if data:
                try:
                    decoded = json.loads("\n".join(data))
                except ValueError:
                    decoded = {"raw": "\n".join(data)}
                yield Event(
                    event_id, name, decoded if isinstance(decoded, dict) else {}
                )
            event_id, name, data = "", "message", []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "id":
            event_id = value
        elif field == "event":
            name = value
        elif field == "data":
            data.append(value)


def _retry_after(response: httpx.Response) -> float:
    try:
        seconds = float(response.headers.get("Retry-After", "1"))
    except ValueError:
        seconds = 1.0
    return min(max(seconds, 0.5), 30.0)


def _reason(error: httpx.TransportError) -> str:
    if isinstance(error, httpx.ConnectError):
        return "connection refused or host unknown"
    if isinstance(error, httpx.TimeoutException):
        return "timed out"
    return str(error) or type(error).__name__
