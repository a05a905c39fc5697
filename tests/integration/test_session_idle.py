"""Idle legacy sessions end by themselves; stuck creates fail, slow ones do not."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator

import pytest

from tests.support.server import JJHubServer


def test_an_idle_session_ends_and_suspends_its_workspace(data_dir):
    with JJHubServer(
        data_dir,
        env={"JJHUB_LIFECYCLE_INTERVAL": "0.5", "JJHUB_SESSION_IDLE_TIMEOUT": "2"},
    ).start() as server:
        token = server.create_user("sid")
        with server.client(token) as api:
            api.post("/api/user/repos", json={"name": "r"})
            session = api.post("/api/repos/sid/r/workspace/sessions", json={}).json()
            assert session["idle_timeout_secs"] == 2
            url = f"/api/repos/sid/r/workspace/sessions/{session['id']}"
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if api.get(url).json()["status"] == "stopped":
                    break
                time.sleep(0.3)
            assert api.get(url).json()["status"] == "stopped"
            workspace = api.get(
                f"/api/repos/sid/r/workspaces/{session['workspace_id']}"
            ).json()
            assert workspace["status"] == "suspended"
        log = server.log_path.read_text()
        assert (
            f"session status id={session['id']} status=stopped cause=idle_timeout"
            in log
        )
        assert "status=suspended cause=session_end" in log


def test_a_workspace_stuck_in_starting_becomes_failed(data_dir):
    """A server killed mid-create leaves `starting`; the loop fails it later."""
    import sqlite3

    with JJHubServer(
        data_dir,
        env={"JJHUB_LIFECYCLE_INTERVAL": "0.5", "JJHUB_STARTING_TIMEOUT": "1"},
    ).start() as server:
        token = server.create_user("stu")
        with server.client(token) as api:
            api.post("/api/user/repos", json={"name": "r"})
            workspace = api.post("/api/repos/stu/r/workspaces", json={}).json()
            with sqlite3.connect(data_dir / "jjhub.db") as db:
                db.execute(
                    "UPDATE workspaces SET status = 'starting' WHERE id = ?",
                    (workspace["id"],),
                )
            url = f"/api/repos/stu/r/workspaces/{workspace['id']}"
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if api.get(url).json()["status"] == "failed":
                    break
                time.sleep(0.3)
            failed = api.get(url).json()
        assert failed["status"] == "failed"
        assert "still starting" in failed["status_reason"]


class _SlowNotFound(http.server.BaseHTTPRequestHandler):
    """Answers 404 after 3 s, so a checkout keeps a create busy that long."""

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        time.sleep(3)
        self.send_error(404)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture
def slow_git_url() -> Iterator[str]:
    """A clone URL on the host's loopback that answers 404 after 3 s."""
    slow = http.server.ThreadingHTTPServer(("0.0.0.0", 0), _SlowNotFound)
    threading.Thread(target=slow.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{slow.server_address[1]}/slow.git"
    slow.shutdown()


def test_a_create_slower_than_the_starting_timeout_is_not_failed(
    data_dir, slow_git_url
):
    """The stuck-create check leaves a create that is still working alone."""
    with JJHubServer(
        data_dir,
        env={"JJHUB_LIFECYCLE_INTERVAL": "0.3", "JJHUB_STARTING_TIMEOUT": "1"},
    ).start() as server:
        token = server.create_user("sam")
        with server.client(token) as api:
            repo = {"name": "r", "clone_url": slow_git_url}
            api.post("/api/user/repos", json=repo)
            created = api.post("/api/repos/sam/r/workspaces", json={})
            assert created.status_code == 201, created.text
            workspace = created.json()
            assert workspace["status"] == "running"
            assert "checkout" in workspace["status_reason"]
            time.sleep(1)
            url = f"/api/repos/sam/r/workspaces/{workspace['id']}"
            assert api.get(url).json()["status"] == "running"
        assert "cause=starting_timeout" not in server.log_path.read_text()
