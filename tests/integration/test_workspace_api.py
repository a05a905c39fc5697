"""The workspace API against a real server with real runc machines."""

from __future__ import annotations

import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.machines import (
    host_leftovers,
    read_machine_file,
    runc_exec,
    runc_state,
)
from tests.support.server import JJHubServer


@pytest.fixture(scope="module")
def server(xfs_root: Path) -> Iterator[JJHubServer]:
    data_dir = xfs_root / "workspace-api"
    data_dir.mkdir()
    srv = JJHubServer(data_dir, env={"JJHUB_LIFECYCLE_INTERVAL": "1"}).start()
    yield srv
    srv.stop()
    srv.cleanup_machines()


@pytest.fixture(scope="module")
def alice(server: JJHubServer) -> dict[str, str]:
    token = server.create_user("alice")
    with server.client(token) as api:
        assert api.post("/api/user/repos", json={"name": "app"}).status_code == 201
    return {"token": token, "repo": "/api/repos/alice/app"}


@pytest.fixture(scope="module")
def primary(server: JJHubServer, alice: dict[str, str]) -> dict:
    with server.client(alice["token"]) as api:
        response = api.post(f"{alice['repo']}/workspaces", json={"name": "primary"})
    assert response.status_code == 201, response.text
    return response.json()


def test_create_returns_a_running_workspace_with_the_contract_fields(primary):
    for key in (
        "id", "repository_id", "user_id", "name", "status", "is_fork",
        "freestyle_vm_id", "persistence", "ssh_host", "idle_timeout_seconds",
        "created_at", "updated_at", "suspended_at",
    ):  # fmt: skip
        assert key in primary
    assert primary["status"] == "running"
    assert primary["persistence"] == "sticky"
    assert primary["idle_timeout_seconds"] == 1800
    assert primary["freestyle_vm_id"].startswith("vm_")
    assert primary["capabilities"]["driver"] == "runc"
    assert primary["capabilities"]["fork_keeps_memory"] is False


def test_second_create_by_the_same_user_returns_the_same_workspace(
    server, alice, primary
):
    with server.client(alice["token"]) as api:
        again = api.post(f"{alice['repo']}/workspaces", json={})
    assert again.status_code == 200
    assert again.json()["id"] == primary["id"]


def test_inside_the_machine_developer_has_sudo_and_the_machine_id_as_hostname(
    server, primary
):
    machine = primary["freestyle_vm_id"]
    out = runc_exec(
        server.data_dir, machine, "whoami; sudo -n true && echo sudo-ok; hostname"
    )
    assert out.split() == ["developer", "sudo-ok", machine]


def test_suspend_freezes_processes_and_resume_continues_them(server, alice, primary):
    machine = primary["freestyle_vm_id"]
    runc_exec(
        server.data_dir,
        machine,
        "echo kept > ~/before.txt; "
        "nohup sh -c 'i=0; while :; do i=$((i+1)); echo $i > /tmp/count; sleep 0.2; done'"
        " >/dev/null 2>&1 & echo $! > /tmp/counter.pid",
    )
    time.sleep(1)
    pid_before = runc_exec(server.data_dir, machine, "cat /tmp/counter.pid").strip()
    url = f"{alice['repo']}/workspaces/{primary['id']}"
    with server.client(alice["token"]) as api:
        suspended = api.post(f"{url}/suspend")
        assert suspended.status_code == 200
        assert suspended.json()["status"] == "suspended"
        assert suspended.json()["suspended_at"] is not None
        assert runc_state(server.data_dir, machine) == "paused"
        before = int(read_machine_file(server.data_dir, machine, "/tmp/count"))
        time.sleep(1.5)
        during = int(read_machine_file(server.data_dir, machine, "/tmp/count"))
        resumed = api.post(f"{url}/resume")
        assert resumed.status_code == 200
        assert resumed.json()["status"] == "running"
        assert resumed.json()["suspended_at"] is None
    time.sleep(0.6)
    out = runc_exec(
        server.data_dir,
        machine,
        "cat ~/before.txt; cat /tmp/counter.pid; cat /tmp/count",
    ).split()
    assert out[0] == "kept"
    assert out[1] == pid_before
    assert during == before
    assert int(out[2]) > during


def test_other_users_get_their_own_workspace_and_404_on_every_route(
    server, alice, primary
):
    bob = server.create_user("bob")
    server.admin("collaborator", "alice/app", "bob")
    url = f"{alice['repo']}/workspaces/{primary['id']}"
    with server.client(bob) as api:
        for method, path in [
            ("GET", url),
            ("GET", f"{url}/ssh"),
            ("POST", f"{url}/suspend"),
            ("POST", f"{url}/resume"),
            ("POST", f"{url}/fork"),
            ("POST", f"{url}/snapshot"),
            ("POST", f"{url}/recover"),
            ("GET", f"{url}/stream"),
            ("DELETE", url),
        ]:
            response = api.request(method, path)
            assert response.status_code == 404, (method, path, response.text)
            assert response.json() == {"message": "workspace not found"}
        own = api.post(f"{alice['repo']}/workspaces", json={})
        assert own.status_code == 201
        assert own.json()["id"] != primary["id"]
        assert (
            api.delete(f"{alice['repo']}/workspaces/{own.json()['id']}").status_code
            == 204
        )
    carol = server.create_user("carol")
    with server.client(carol) as api:
        response = api.get(f"{alice['repo']}/workspaces")
        assert response.status_code == 404
        assert response.json() == {"message": "repository not found"}


def test_ssh_info_mints_a_fresh_token_and_a_pasteable_command(server, alice, primary):
    url = f"{alice['repo']}/workspaces/{primary['id']}/ssh"
    with server.client(alice["token"]) as api:
        first, second = api.get(url).json(), api.get(url).json()
    assert first["access_token"].startswith("ws_")
    assert first["access_token"] != second["access_token"]
    vm = primary["freestyle_vm_id"]
    assert first["command"] == (
        f"ssh -p {server.ssh_port} {vm}+developer:{first['access_token']}@127.0.0.1"
    )
    assert first["ssh_host"] == f"{vm}+developer@127.0.0.1"
    assert first["port"] == server.ssh_port


def test_list_is_paginated_with_total_and_links(server, alice, primary):
    with server.client(alice["token"]) as api:
        url = f"{alice['repo']}/workspaces/{primary['id']}/fork"
        assert api.post(url, json={"name": "second"}).status_code == 201
        response = api.get(f"{alice['repo']}/workspaces", params={"per_page": 1})
        assert response.status_code == 200
        total = int(response.headers["X-Total-Count"])
        assert total >= 2
        assert len(response.json()) == 1
        assert 'rel="next"' in response.headers["Link"]
        by_cursor = api.get(
            f"{alice['repo']}/workspaces", params={"limit": 1, "cursor": 1}
        )
        assert by_cursor.status_code == 200
        assert len(by_cursor.json()) == 1
        assert 'rel="prev"' in by_cursor.headers["Link"]


def test_delete_removes_the_machine_and_keeps_the_row_stopped(server, alice):
    with server.client(alice["token"]) as api:
        primary_id = api.post(f"{alice['repo']}/workspaces", json={}).json()["id"]
        ws = api.post(
            f"{alice['repo']}/workspaces/{primary_id}/fork", json={"name": "to-delete"}
        )
        assert ws.status_code == 201, ws.text
        workspace = ws.json()
        machine = workspace["freestyle_vm_id"]
        assert (
            api.delete(f"{alice['repo']}/workspaces/{workspace['id']}").status_code
            == 204
        )
        after = api.get(f"{alice['repo']}/workspaces/{workspace['id']}").json()
    assert after["status"] == "stopped"
    assert runc_state(server.data_dir, machine) == "missing"
    assert host_leftovers(machine) == []
    assert not (server.data_dir / "machines" / machine).exists()


def test_kill_9_of_the_server_leaves_machines_running_and_restart_reports_them(
    server, alice, primary
):
    with server.client(alice["token"]) as api:
        fork = api.post(
            f"{alice['repo']}/workspaces/{primary['id']}/fork", json={}
        ).json()
        api.post(f"{alice['repo']}/workspaces/{fork['id']}/suspend")
    server.kill9()
    assert runc_state(server.data_dir, primary["freestyle_vm_id"]) == "running"
    assert runc_state(server.data_dir, fork["freestyle_vm_id"]) == "paused"
    server.start()
    with server.client(alice["token"]) as api:
        assert (
            api.get(f"{alice['repo']}/workspaces/{primary['id']}").json()["status"]
            == "running"
        )
        assert (
            api.get(f"{alice['repo']}/workspaces/{fork['id']}").json()["status"]
            == "suspended"
        )
        assert (
            api.post(f"{alice['repo']}/workspaces/{fork['id']}/resume").json()["status"]
            == "running"
        )
        api.delete(f"{alice['repo']}/workspaces/{fork['id']}")


def test_a_machine_removed_behind_the_servers_back_fails_and_recover_brings_it_back(
    server, alice, primary
):
    machine = primary["freestyle_vm_id"]
    runc_exec(server.data_dir, machine, "echo survives > ~/recover.txt")
    subprocess.run(
        ["runc", "--root", str(server.data_dir / "runc"), "delete", "--force", machine],
        check=True,
    )
    url = f"{alice['repo']}/workspaces/{primary['id']}"
    with server.client(alice["token"]) as api:
        deadline = time.monotonic() + 60
        status = ""
        while time.monotonic() < deadline:
            status = api.get(url).json()["status"]
            if status == "failed":
                break
            time.sleep(0.5)
        assert status == "failed"
        assert "recover" in api.get(url).json()["status_reason"]
        recovered = api.post(f"{url}/recover")
        assert recovered.status_code == 200, recovered.text
        assert recovered.json()["status"] == "running"
    assert (
        runc_exec(server.data_dir, machine, "cat ~/recover.txt").strip() == "survives"
    )


def test_a_machine_the_database_does_not_know_is_reported_once_and_left_alone(
    server, alice
):
    with server.client(alice["token"]) as api:
        assert api.post("/api/user/repos", json={"name": "stray"}).status_code == 201
        stray = api.post("/api/repos/alice/stray/workspaces", json={}).json()
    machine = stray["freestyle_vm_id"]
    runc_exec(server.data_dir, machine, "echo mine > ~/keep.txt")
    # The row now names another machine: the real one is unknown to the server.
    with sqlite3.connect(server.data_dir / "jjhub.db") as db:
        db.execute(
            "UPDATE workspaces SET machine_id = 'vm_elsewhere', status = 'stopped'"
            " WHERE id = ?",
            (stray["id"],),
        )
    try:
        message = f"database does not know; left alone machine={machine}"
        deadline = time.monotonic() + 60
        while message not in server.log_path.read_text():
            assert time.monotonic() < deadline, "the unknown machine was not reported"
            time.sleep(0.5)
        time.sleep(3)  # three more passes of the loop
        assert server.log_path.read_text().count(message) == 1
        assert runc_state(server.data_dir, machine) == "running"
        assert runc_exec(server.data_dir, machine, "cat ~/keep.txt").strip() == "mine"
    finally:
        # Hand the machine back, so that the server's delete removes all of it.
        with sqlite3.connect(server.data_dir / "jjhub.db") as db:
            db.execute(
                "UPDATE workspaces SET machine_id = ?, status = 'running' WHERE id = ?",
                (machine, stray["id"]),
            )
        with server.client(alice["token"]) as api:
            url = f"/api/repos/alice/stray/workspaces/{stray['id']}"
            assert api.delete(url).status_code == 204
        assert runc_state(server.data_dir, machine) == "missing"
