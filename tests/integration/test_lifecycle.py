"""The lifecycle loop, streams, sessions and concurrency, on real machines."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.server import JJHubServer
from tests.support.sse import SseStream

REPO = "/api/repos/ivy/life"


@pytest.fixture(scope="module")
def server(xfs_root: Path) -> Iterator[JJHubServer]:
    data_dir = xfs_root / "lifecycle"
    data_dir.mkdir()
    srv = JJHubServer(data_dir, env={"JJHUB_LIFECYCLE_INTERVAL": "0.5"}).start()
    yield srv
    srv.stop()
    srv.cleanup_machines()


@pytest.fixture(scope="module")
def token(server: JJHubServer) -> str:
    token = server.create_user("ivy")
    with server.client(token) as api:
        assert api.post("/api/user/repos", json={"name": "life"}).status_code == 201
    return token


@pytest.fixture
def api(server: JJHubServer, token: str) -> Iterator[httpx.Client]:
    with server.client(token) as client:
        yield client


def _fork(api: httpx.Client, **extra: object) -> dict:
    primary = api.post(f"{REPO}/workspaces", json={}).json()
    body = {"name": "f"}
    response = api.post(f"{REPO}/workspaces/{primary['id']}/fork", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def _wait_status(
    api: httpx.Client, ws_id: str, status: str, timeout: float = 60
) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        workspace = api.get(f"{REPO}/workspaces/{ws_id}").json()
        if workspace["status"] == status:
            return workspace
        time.sleep(0.3)
    raise AssertionError(f"workspace {ws_id} never became {status}: {workspace}")


def test_an_idle_workspace_is_suspended_and_its_stream_says_why(server, token, api):
    created = api.post(
        f"{REPO}/workspaces",
        json={"name": "idle", "idle_timeout_seconds": 3, "snapshot_id": None},
    )
    primary = created.json()
    assert primary["idle_timeout_seconds"] == 3
    stream = SseStream(
        server.api_port, f"{REPO}/workspaces/{primary['id']}/stream", token
    )
    try:
        assert stream.status == 200
        first = stream.next_event()
        assert first.id == "1"
        assert first.event == "workspace.status"
        assert first.data == {"workspace_id": primary["id"], "status": "running"}
        suspended = stream.next_matching("suspended")
        assert suspended.data["cause"] == "idle_timeout"
        assert int(suspended.id) > 1
    finally:
        stream.close()
    workspace = api.get(f"{REPO}/workspaces/{primary['id']}").json()
    assert workspace["status"] == "suspended"
    assert workspace["last_activity_reason"] in ("create", "ssh_info", "resume")
    # The resume counts as activity, so the workspace runs again for a while.
    resumed = api.post(f"{REPO}/workspaces/{primary['id']}/resume").json()
    assert resumed["status"] == "running"
    assert resumed["last_activity_reason"] == "user"


def test_persistence_tiers_decide_between_delete_and_suspend(api):
    primary = api.post(f"{REPO}/workspaces", json={}).json()
    url = f"{REPO}/workspaces/{primary['id']}/fork"
    ephemeral = api.post(url, json={"name": "e"}).json()
    persistent = api.post(url, json={"name": "p"}).json()
    # Forks inherit the source's settings; set the tiers through the database
    # of record the way a repository default would, via fresh workspaces.
    del ephemeral, persistent
    snapshot = api.post(f"{REPO}/workspaces/{primary['id']}/snapshot", json={}).json()
    eph = api.post(
        f"{REPO}/workspaces",
        json={
            "snapshot_id": snapshot["id"],
            "persistence": "ephemeral",
            "idle_timeout_seconds": 1,
        },
    ).json()
    per = api.post(
        f"{REPO}/workspaces",
        json={
            "snapshot_id": snapshot["id"],
            "persistence": "persistent",
            "idle_timeout_seconds": 1,
        },
    ).json()
    assert eph["persistence"] == "ephemeral"
    assert per["persistence"] == "persistent"
    assert _wait_status(api, eph["id"], "stopped")["status"] == "stopped"
    assert _wait_status(api, per["id"], "suspended")["status"] == "suspended"
    api.delete(f"{REPO}/workspaces/{per['id']}")


def test_a_null_idle_timeout_means_never(api):
    primary = api.post(f"{REPO}/workspaces", json={}).json()
    snapshot = api.post(f"{REPO}/workspaces/{primary['id']}/snapshot", json={}).json()
    forever = api.post(
        f"{REPO}/workspaces",
        json={"snapshot_id": snapshot["id"], "idle_timeout_seconds": None},
    ).json()
    assert forever["idle_timeout_seconds"] is None
    time.sleep(2)
    assert api.get(f"{REPO}/workspaces/{forever['id']}").json()["status"] == "running"
    api.delete(f"{REPO}/workspaces/{forever['id']}")


def test_destroying_the_last_session_suspends_the_workspace(server, token, api):
    primary = api.post(f"{REPO}/workspaces", json={}).json()
    if primary["status"] != "running":
        primary = api.post(f"{REPO}/workspaces/{primary['id']}/resume").json()
    first = api.post(f"{REPO}/workspace/sessions", json={"workspace_id": primary["id"]})
    assert first.status_code == 201, first.text
    second = api.post(f"{REPO}/workspace/sessions", json={"cols": 120, "rows": 40})
    assert second.status_code == 201
    session = second.json()
    assert (session["cols"], session["rows"]) == (120, 40)
    assert session["workspace_id"] == primary["id"]
    assert session["status"] == "running"

    info = api.get(f"{REPO}/workspace/sessions/{session['id']}/ssh").json()
    assert info["session_id"] == session["id"]
    assert info["access_token"].startswith("ws_")
    assert api.get(f"{REPO}/workspace/sessions").headers["X-Total-Count"] == "2"

    stream = SseStream(
        server.api_port, f"{REPO}/workspace/sessions/{session['id']}/stream", token
    )
    try:
        assert stream.next_event().data == {
            "session_id": session["id"],
            "status": "running",
        }
        assert (
            api.post(
                f"{REPO}/workspace/sessions/{first.json()['id']}/destroy"
            ).status_code
            == 204
        )
        assert (
            api.get(f"{REPO}/workspaces/{primary['id']}").json()["status"] == "running"
        )
        assert (
            api.post(f"{REPO}/workspace/sessions/{session['id']}/destroy").status_code
            == 204
        )
        assert stream.next_event().data["status"] == "stopped"
    finally:
        stream.close()
    assert api.get(f"{REPO}/workspaces/{primary['id']}").json()["status"] == "suspended"
    assert (
        api.get(f"{REPO}/workspace/sessions/{session['id']}").json()["status"]
        == "stopped"
    )
    assert api.get(f"{REPO}/workspace/sessions/nope").json() == {
        "message": "workspace session not found"
    }


def test_ten_concurrent_creates_give_one_primary_workspace(server):
    token = server.create_user("rush")
    with server.client(token) as api:
        api.post("/api/user/repos", json={"name": "r"})

    async def create_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(
            base_url=server.url,
            headers={"Authorization": f"token {token}"},
            timeout=120,
        ) as client:
            return await asyncio.gather(
                *[
                    client.post("/api/repos/rush/r/workspaces", json={})
                    for _ in range(10)
                ]
            )

    responses = asyncio.run(create_all())
    assert sorted(r.status_code for r in responses) == [200] * 9 + [201]
    assert len({r.json()["id"] for r in responses}) == 1
    with server.client(token) as api:
        listed = api.get("/api/repos/rush/r/workspaces").json()
        assert len(listed) == 1
        api.delete(f"/api/repos/rush/r/workspaces/{listed[0]['id']}")


def test_a_suspend_and_a_resume_fired_together_end_running(server, token, api):
    primary = api.post(f"{REPO}/workspaces", json={}).json()
    url = f"{REPO}/workspaces/{primary['id']}"
    address = httpx.URL(server.url)

    def request(verb: str) -> bytes:
        return (
            f"POST {url}/{verb} HTTP/1.1\r\nHost: {address.host}\r\n"
            f"Authorization: token {token}\r\nContent-Length: 0\r\n"
            "Connection: close\r\n\r\n"
        ).encode()

    async def race() -> list[tuple[int, dict]]:
        # Raw sockets, both connected first: the suspend's bytes are with the
        # server before the resume is written (an HTTP client task may send
        # later than it was started, which once let the resume arrive first).
        ends = [await asyncio.open_connection(address.host, address.port) for _ in "ab"]
        for (_, writer), verb in zip(ends, ["suspend", "resume"], strict=True):
            writer.write(request(verb))
            await writer.drain()
            # A moment later, so the resume lands during or just after the suspend.
            await asyncio.sleep(0.005)
        answers = []
        for reader, writer in ends:
            head, _, body = (await reader.read()).partition(b"\r\n\r\n")
            writer.close()
            answers.append((int(head.split()[1]), json.loads(body)))
        return answers

    for _ in range(5):
        (suspend_status, _), (resume_status, resumed) = asyncio.run(race())
        assert suspend_status == 200
        assert resume_status == 200
        assert resumed["status"] == "running"
        assert api.get(url).json()["status"] == "running"


def _open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_fifty_stream_clients_come_and_go_without_leaking(server, token, api):
    primary = api.post(f"{REPO}/workspaces", json={}).json()
    path = f"{REPO}/workspaces/{primary['id']}/stream"
    pid = server.process.pid
    warm = SseStream(server.api_port, path, token)
    warm.next_event()
    warm.close()
    time.sleep(0.5)
    before = _open_fds(pid)
    streams = [SseStream(server.api_port, path, token) for _ in range(50)]
    for stream in streams:
        assert stream.next_event().event == "workspace.status"
    during = _open_fds(pid)
    for stream in streams:
        stream.close()
    # Closed clients are noticed at the next write or keep-alive; a status
    # change writes to all of them.
    api.post(f"{REPO}/workspaces/{primary['id']}/suspend")
    api.post(f"{REPO}/workspaces/{primary['id']}/resume")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and _open_fds(pid) > before + 2:
        time.sleep(0.5)
    # Other connections may close meanwhile; most of the 50 must have shown.
    assert during >= before + 45
    assert _open_fds(pid) <= before + 2


def test_an_ssh_session_moving_bytes_keeps_the_workspace_running(api):
    primary = api.post(f"{REPO}/workspaces", json={}).json()
    snapshot = api.post(f"{REPO}/workspaces/{primary['id']}/snapshot", json={}).json()
    busy = api.post(
        f"{REPO}/workspaces",
        json={"snapshot_id": snapshot["id"], "idle_timeout_seconds": 2},
    ).json()
    info = api.get(f"{REPO}/workspaces/{busy['id']}/ssh").json()
    # Printing once a second for 8 s, four idle timeouts long.
    result = subprocess.run(
        [
            *shlex.split(info["command"]),
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "for i in 1 2 3 4 5 6 7 8; do echo tick $i; sleep 1; done",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[-2] == "tick 8"
    during = api.get(f"{REPO}/workspaces/{busy['id']}").json()
    assert during["status"] == "running"
    assert during["last_activity_reason"] == "ssh"
    # Once the session ends, the idle timeout applies again.
    assert _wait_status(api, busy["id"], "suspended")["status"] == "suspended"
    api.delete(f"{REPO}/workspaces/{busy['id']}")


def test_the_loop_never_reverts_a_change_made_while_it_looked(xfs_root: Path):
    """Reconcile lists machines, then acts: a change in between must win.

    Nothing here happens behind the server's back, so reconciliation should
    never change a status; with the loop running every 20 ms it sees many
    suspends and resumes mid-flight.
    """
    data_dir = xfs_root / "reconcile-race"
    data_dir.mkdir()
    with JJHubServer(
        data_dir, env={"JJHUB_LIFECYCLE_INTERVAL": "0.02"}
    ).start() as server:
        token = server.create_user("rita")
        with server.client(token) as api:
            api.post("/api/user/repos", json={"name": "r"})
            ws = api.post("/api/repos/rita/r/workspaces", json={}).json()
            url = f"/api/repos/rita/r/workspaces/{ws['id']}"
            for _ in range(25):
                for verb, status in (("suspend", "suspended"), ("resume", "running")):
                    assert api.post(f"{url}/{verb}").json()["status"] == status
            time.sleep(0.5)
            assert api.get(url).json()["status"] == "running"
            api.delete(url)
        assert "cause=reconcile" not in server.log_path.read_text()
