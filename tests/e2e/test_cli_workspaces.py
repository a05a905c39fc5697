"""The `jjhub` binary against a real server with real runc workspaces.

One server serves the whole module; every workspace made here is deleted at
the end of the module, and the machines are wiped with the data directory.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.server import JJHubServer

JJHUB = str(Path(sys.executable).parent / "jjhub")


@pytest.fixture(scope="module")
def server(xfs_root: Path) -> Iterator[JJHubServer]:
    data_dir = xfs_root / "cli-e2e"
    data_dir.mkdir()
    srv = JJHubServer(data_dir, env={"JJHUB_RATE_LIMIT": "100000"}).start()
    yield srv
    srv.stop()
    srv.cleanup_machines()


class Cli:
    """Runs `jjhub` as a subprocess with its own XDG directories and token."""

    def __init__(self, server: JJHubServer, home: Path, token: str | None) -> None:
        self.server = server
        self.env = {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / "config"),
            "XDG_STATE_HOME": str(home / "state"),
            "JJHUB_API_URL": server.url,
            "NO_COLOR": "1",
        }
        if token:
            self.env["JJHUB_TOKEN"] = token
        self.token = token

    def run(
        self, *args: str, stdin: str | None = None, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [JJHUB, *args],
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=None if stdin is not None else subprocess.DEVNULL,
        )

    def json(self, *args: str) -> Any:
        done = self.run(*args, "--json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [JJHUB, *args],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )


def _user(
    server: JJHubServer, tmp_path_factory: pytest.TempPathFactory, name: str
) -> Iterator[Cli]:
    token = server.create_user(name)
    cli = Cli(server, tmp_path_factory.mktemp(name), token)
    assert cli.json("repo", "create", "app")["full_name"] == f"{name}/app"
    yield cli
    with server.client(token) as api:
        for ws in api.get(f"/api/repos/{name}/app/workspaces?per_page=100").json():
            if ws["status"] != "stopped":
                api.delete(f"/api/repos/{name}/app/workspaces/{ws['id']}")


@pytest.fixture(scope="module")
def alice(
    server: JJHubServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cli]:
    yield from _user(server, tmp_path_factory, "alice")


@pytest.fixture(scope="module")
def primary(alice: Cli) -> dict[str, Any]:
    ws = alice.json("workspace", "create", "-R", "alice/app")
    assert ws["status"] == "running"
    return ws  # type: ignore[no-any-return]


# -- the lifecycle -----------------------------------------------------------------


def test_workspace_lifecycle_with_json_output(alice: Cli, primary: dict) -> None:
    repo = ["-R", "alice/app"]
    ws_id = primary["id"]

    listed = alice.json("workspace", "list", *repo)
    assert ws_id in [w["id"] for w in listed]
    status = alice.json("workspace", "status", ws_id, *repo)
    assert status["id"] == ws_id
    assert status["status"] == "running"
    assert isinstance(status["uptime_seconds"], int)
    assert alice.json("workspace", "view", ws_id, *repo)["name"] == primary["name"]

    assert alice.json("workspace", "suspend", ws_id, *repo)["status"] == "suspended"
    assert alice.json("workspace", "status", ws_id, *repo) == {
        "id": ws_id,
        "status": "suspended",
        "uptime_seconds": 0,
    }
    assert alice.json("workspace", "resume", ws_id, *repo)["status"] == "running"

    fork = alice.json("workspace", "fork", ws_id, "--name", "experiment", *repo)
    assert fork["is_fork"] is True
    assert fork["parent_workspace_id"] == ws_id
    assert fork["name"] == "experiment"
    assert fork["status"] == "running"

    snap = alice.json("workspace", "snapshot", ws_id, "--name", "deps", *repo)
    assert snap["workspace_id"] == ws_id
    assert snap["name"] == "deps"
    of_ws = alice.json("workspace", "snapshots", ws_id, *repo)
    assert [s["id"] for s in of_ws] == [snap["id"]]
    assert snap["id"] in [s["id"] for s in alice.json("workspace", "snapshots", *repo)]

    restored = alice.json("workspace", "create", "--snapshot", snap["id"], *repo)
    assert restored["snapshot_id"] == snap["id"]
    assert restored["status"] == "running"
    assert restored["id"] not in (ws_id, fork["id"])

    for made in (fork, restored):
        deleted = alice.json("workspace", "delete", made["id"], "--yes", *repo)
        assert deleted == {"status": "deleted", "id": made["id"]}
    statuses = {w["id"]: w["status"] for w in alice.json("workspace", "list", *repo)}
    assert statuses[fork["id"]] == statuses[restored["id"]] == "stopped"
    assert statuses[ws_id] == "running"


def test_list_prints_a_table(alice: Cli, primary: dict) -> None:
    done = alice.run("workspace", "list", "-R", "alice/app")

    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["ID", "NAME", "STATUS", "RUNTIME", "CREATED"]
    assert any(line.startswith(primary["id"]) for line in lines[1:])


def test_delete_without_yes_refuses_when_it_cannot_ask(
    alice: Cli, primary: dict
) -> None:
    done = alice.run("workspace", "delete", primary["id"], "-R", "alice/app")

    assert done.returncode == 2
    assert "--yes" in done.stderr
    assert (
        alice.json("workspace", "status", primary["id"], "-R", "alice/app")["status"]
        == "running"
    )


def test_a_workspace_is_named_by_id_prefix_or_name(alice: Cli, primary: dict) -> None:
    repo = ["-R", "alice/app"]
    by_prefix = alice.json("workspace", "status", primary["id"][:8], *repo)
    assert by_prefix["id"] == primary["id"]
    by_name = alice.json("workspace", "view", primary["name"], *repo)
    assert by_name["id"] == primary["id"]
    shown = alice.run("workspace", "snapshots", primary["name"], *repo)
    assert shown.returncode == 0, shown.stderr

    twins = [
        alice.json("workspace", "fork", primary["id"], "--name", "twin", *repo)
        for _ in range(2)
    ]
    ambiguous = alice.run("workspace", "suspend", "twin", *repo)
    assert ambiguous.returncode == 1
    assert "matches several workspaces" in ambiguous.stderr
    assert all(t["id"] in ambiguous.stderr for t in twins)
    assert all(
        alice.json("workspace", "status", t["id"], *repo)["status"] == "running"
        for t in twins
    )
    for twin in twins:
        gone = alice.json("workspace", "delete", twin["id"][:13], "--yes", *repo)
        assert gone == {"status": "deleted", "id": twin["id"]}


def test_unknown_workspace_prints_the_server_message(alice: Cli) -> None:
    done = alice.run("workspace", "view", "no-such-id", "-R", "alice/app")

    assert done.returncode == 1
    assert done.stderr.strip() == "Error: workspace not found"


# -- ssh and watch -------------------------------------------------------------------


def test_ssh_runs_a_command_through_the_gateway(alice: Cli, primary: dict) -> None:
    done = alice.run(
        "workspace", "ssh", primary["id"], "-R", "alice/app", "--", "echo", "hi"
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout == "hi\n"
    known_hosts = Path(alice.env["XDG_STATE_HOME"]) / "jjhub" / "known_hosts"
    assert known_hosts.read_text().strip()


def test_ssh_returns_the_remote_exit_code(alice: Cli, primary: dict) -> None:
    done = alice.run(
        "workspace", "ssh", primary["id"], "-R", "alice/app", "--", "sh", "-c", "exit 3"
    )

    assert done.returncode == 3


def test_ssh_without_an_id_picks_the_running_workspace(
    alice: Cli, primary: dict
) -> None:
    done = alice.run("workspace", "ssh", "-R", "alice/app", "--", "hostname")

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()
    listed = alice.json("workspace", "list", "-R", "alice/app")
    assert [w["id"] for w in listed if w["status"] == "running"] == [primary["id"]]


def test_ssh_wakes_a_suspended_workspace(alice: Cli, primary: dict) -> None:
    alice.json("workspace", "suspend", primary["id"], "-R", "alice/app")

    done = alice.run(
        "workspace", "ssh", primary["id"], "-R", "alice/app", "--", "echo up"
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout == "up\n"
    status = alice.json("workspace", "status", primary["id"], "-R", "alice/app")
    assert status["status"] == "running"


def _lines(stream: Any) -> queue.Queue[str]:
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in stream:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def test_watch_prints_the_change_a_parallel_suspend_causes(alice: Cli) -> None:
    repo = ["-R", "alice/app"]
    ws = alice.json("workspace", "fork", _primary_id(alice), "--name", "watched", *repo)
    watcher = alice.popen("workspace", "watch", ws["id"], "--json", *repo)
    try:
        assert watcher.stdout is not None
        lines = _lines(watcher.stdout)
        assert json.loads(lines.get(timeout=60))["status"] == "running"

        alice.json("workspace", "suspend", ws["id"], *repo)
        changed = json.loads(lines.get(timeout=60))
        assert changed == {**changed, "workspace_id": ws["id"], "status": "suspended"}

        alice.json("workspace", "delete", ws["id"], "--yes", *repo)
        assert json.loads(lines.get(timeout=60))["status"] == "stopped"
        assert watcher.wait(timeout=60) == 0
    finally:
        watcher.kill()
        watcher.wait()


def _primary_id(cli: Cli) -> str:
    rows = cli.json("workspace", "list", "-R", "alice/app")
    return next(w["id"] for w in rows if w["status"] == "running")


# -- starting work on an issue ---------------------------------------------------------


@pytest.fixture(scope="module")
def carol(
    server: JJHubServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cli]:
    yield from _user(server, tmp_path_factory, "carol")


def test_workspace_issue_makes_the_workspace_and_a_draft_landing(carol: Cli) -> None:
    repo = ["-R", "carol/app"]
    carol.json("issue", "create", "-t", "Warm-up", *repo)
    issue = carol.json("issue", "create", "-t", "Login page crashes", *repo)
    number = str(issue["number"])

    made = carol.json("workspace", "issue", number, "--no-connect", *repo)

    assert made["issue"]["number"] == issue["number"]
    assert made["workspace"]["name"] == f"issue-{number}"
    assert made["workspace"]["status"] == "running"
    landing = made["landing_request"]
    assert landing["draft"] is True
    assert landing["title"] == "Login page crashes"
    assert landing["target_bookmark"] == "main"
    assert f"Closes #{number}" in landing["body"]
    assert landing["closes_issues"] == [issue["number"]]
    fetched = carol.json("land", "view", str(landing["number"]), *repo)
    assert fetched["body"] == landing["body"]
    names = [w["name"] for w in carol.json("workspace", "list", *repo)]
    assert names.count(f"issue-{number}") == 1


def test_workspace_issue_again_resumes_and_connects(carol: Cli) -> None:
    repo = ["-R", "carol/app"]
    issue = carol.json("issue", "create", "-t", "Second issue", *repo)
    number = str(issue["number"])
    first = carol.json(
        "workspace", "issue", number, "--target", "dev", "--no-connect", *repo
    )
    carol.json("workspace", "suspend", first["workspace"]["id"], *repo)

    done = carol.run(
        "workspace", "issue", number, "--target", "dev", *repo,
        stdin="echo connected-$((40 + 2))\nexit\n",
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    assert "connected-42" in done.stdout
    assert f"issue-{number}" in done.stdout
    assert "onto dev" in done.stdout
    workspaces = carol.json("workspace", "list", *repo)
    named = [w for w in workspaces if w["name"] == f"issue-{number}"]
    assert [w["id"] for w in named] == [first["workspace"]["id"]]
    assert named[0]["status"] == "running"
    drafts = [
        land
        for land in carol.json("land", "list", *repo)
        if issue["number"] in land["closes_issues"]
    ]
    assert [d["number"] for d in drafts] == [first["landing_request"]["number"]]


def test_workspace_issue_beside_a_primary_gets_its_own_workspace(
    alice: Cli, primary: dict
) -> None:
    """A named create makes a fresh workspace beside the live primary."""
    repo = ["-R", "alice/app"]
    issue = alice.json("issue", "create", "-t", "Docs typo", *repo)

    made = alice.json("workspace", "issue", str(issue["number"]), "--no-connect", *repo)

    ws = made["workspace"]
    assert ws["name"] == f"issue-{issue['number']}"
    assert ws["id"] != primary["id"]
    assert ws["parent_workspace_id"] is None
    assert ws["is_fork"] is False
    alice.json("workspace", "delete", ws["id"], "--yes", *repo)


def test_workspace_issue_of_a_missing_issue_fails(carol: Cli) -> None:
    done = carol.run("workspace", "issue", "999", "--no-connect", "-R", "carol/app")

    assert done.returncode == 1
    assert done.stderr.strip() == "Error: issue not found"


# -- authentication ------------------------------------------------------------------


def test_login_with_a_wrong_token_fails_clearly(
    server: JJHubServer, tmp_path: Path
) -> None:
    cli = Cli(server, tmp_path, None)

    done = cli.run("auth", "login", "--url", server.url, stdin="jjhub_" + "f" * 40)

    assert done.returncode == 1
    assert "rejected this token" in done.stderr
    assert not (tmp_path / "config" / "jjhub" / "config.json").exists()


def test_login_then_commands_use_the_saved_token(
    server: JJHubServer, alice: Cli, tmp_path: Path
) -> None:
    cli = Cli(server, tmp_path, None)

    login = cli.run("auth", "login", "--url", server.url, stdin=f"{alice.token}\n")

    assert login.returncode == 0, login.stderr
    del cli.env["JJHUB_API_URL"]
    assert cli.json("auth", "status")["username"] == "alice"
    assert cli.json("repo", "view", "alice/app")["full_name"] == "alice/app"


def test_no_token_hints_at_login(server: JJHubServer, tmp_path: Path) -> None:
    cli = Cli(server, tmp_path, None)

    done = cli.run("workspace", "list", "-R", "alice/app")

    assert done.returncode == 4
    assert done.stderr.strip() == (
        "Error: not logged in: run `jjhub auth login` (or set JJHUB_TOKEN)"
    )


def test_a_token_the_server_rejects_says_to_log_in(
    server: JJHubServer, tmp_path: Path
) -> None:
    cli = Cli(server, tmp_path, "jjhub_" + "0" * 40)

    done = cli.run("workspace", "list", "-R", "alice/app")

    assert done.returncode == 1
    assert "authentication required" in done.stderr
    assert "jjhub auth login" in done.stderr


@pytest.mark.parametrize(
    "command",
    [
        ["auth", "login"],
        ["repo", "create"],
        ["workspace", "create"],
        ["workspace", "ssh"],
        ["workspace", "issue"],
        ["workspace", "watch"],
        ["issue", "create"],
        ["land", "create"],
    ],
    ids=" ".join,
)
def test_help_of_the_binary_lists_options(
    server: JJHubServer, tmp_path: Path, command: list[str]
) -> None:
    done = Cli(server, tmp_path, None).run(*command, "--help")

    assert done.returncode == 0
    assert "--json" in done.stdout
    assert "--help" in done.stdout


def test_http_client_sees_the_workspaces_deleted(server: JJHubServer) -> None:
    """Sanity: the module's server is the one the CLI talked to."""
    assert httpx.get(f"{server.url}/healthz").status_code == 200
