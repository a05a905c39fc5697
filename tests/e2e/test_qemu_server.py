"""The whole server on the QEMU driver: API, gateway and memory-keeping verbs."""

from __future__ import annotations

import shlex
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.server import JJHubServer

pytestmark = pytest.mark.qemu
REPO = "/api/repos/quinn/vm"


@pytest.fixture(scope="module")
def server(xfs_root: Path) -> Iterator[JJHubServer]:
    data_dir = xfs_root / "qemu-server"
    data_dir.mkdir()
    srv = JJHubServer(data_dir, runtime="qemu").start(timeout=600)
    yield srv
    srv.stop()
    srv.cleanup_machines()


@pytest.fixture(scope="module")
def api(server: JJHubServer) -> Iterator[httpx.Client]:
    token = server.create_user("quinn")
    with server.client(token) as client:
        client.timeout = httpx.Timeout(600)
        assert client.post("/api/user/repos", json={"name": "vm"}).status_code == 201
        yield client


def ssh(api: httpx.Client, workspace: dict, command: str) -> str:
    info = api.get(f"{REPO}/workspaces/{workspace['id']}/ssh").json()
    argv = [
        *shlex.split(info["command"]),
        *("-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"),
        command,
    ]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _qemu_processes_for(machine_id: str) -> int:
    ps = subprocess.run(["ps", "axo", "args"], capture_output=True, text=True).stdout
    return sum(
        1 for line in ps.splitlines() if "qemu-system" in line and machine_id in line
    )


def test_a_qemu_workspace_keeps_its_processes_through_suspend_and_fork(api):
    created = api.post(f"{REPO}/workspaces", json={})
    assert created.status_code == 201, created.text
    workspace = created.json()
    assert workspace["runtime"] == "qemu"
    assert workspace["capabilities"] == {
        "driver": "qemu",
        "suspend_keeps_memory": True,
        "fork_keeps_memory": True,
        "snapshot_keeps_memory": True,
    }
    assert (
        ssh(api, workspace, "echo hi through the gateway").strip()
        == "hi through the gateway"
    )
    pid = ssh(
        api,
        workspace,
        "setsid sh -c 'i=0; while :; do i=$((i+1)); echo $i > /tmp/n; sleep 0.2; done'"
        " >/dev/null 2>&1 < /dev/null & echo $!",
    ).strip()
    time.sleep(1)

    url = f"{REPO}/workspaces/{workspace['id']}"
    info = api.get(f"{url}/ssh").json()
    open_session = subprocess.Popen(
        [
            *shlex.split(info["command"]),
            *("-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"),
            "echo open; sleep 600",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert open_session.stdout is not None
    assert open_session.stdout.readline() == "open\n"
    assert api.post(f"{url}/suspend").json()["status"] == "suspended"
    assert _qemu_processes_for(workspace["freestyle_vm_id"]) == 0
    # QEMU exited, and with it the connection (docs/ssh-gateway.md says so).
    assert open_session.wait(timeout=60) == 255
    # Connecting wakes it; the counter's process is the same one.
    out = ssh(api, workspace, f"kill -0 {pid} && echo alive; cat /tmp/n").split()
    assert out[0] == "alive"
    assert api.get(url).json()["status"] == "running"

    fork = api.post(f"{url}/fork", json={"name": "vm-fork"})
    assert fork.status_code == 201, fork.text
    copy = fork.json()
    assert (
        ssh(api, copy, f"kill -0 {pid} && echo alive-in-fork").strip()
        == "alive-in-fork"
    )
    assert ssh(api, copy, "hostname").strip() == copy["freestyle_vm_id"]

    snapshot = api.post(f"{url}/snapshot", json={}).json()
    assert snapshot["keeps_memory"] is True
    for ws in (copy, workspace):
        assert api.delete(f"{REPO}/workspaces/{ws['id']}").status_code == 204
