"""Fork, snapshot and restore copy real state (runc keeps files, not memory)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.machines import runc_exec
from tests.support.server import JJHubServer

REPO = "/api/repos/erin/proj"


@pytest.fixture(scope="module")
def server(xfs_root: Path) -> Iterator[JJHubServer]:
    data_dir = xfs_root / "fork-snapshot"
    data_dir.mkdir()
    srv = JJHubServer(data_dir).start()
    yield srv
    srv.stop()
    srv.cleanup_machines()


@pytest.fixture(scope="module")
def api(server: JJHubServer):
    token = server.create_user("erin")
    with server.client(token) as client:
        assert client.post("/api/user/repos", json={"name": "proj"}).status_code == 201
        yield client


@pytest.fixture(scope="module")
def source(api) -> dict:
    response = api.post(f"{REPO}/workspaces", json={})
    assert response.status_code == 201, response.text
    return response.json()


def sh(server: JJHubServer, workspace: dict, script: str) -> str:
    return runc_exec(server.data_dir, workspace["freestyle_vm_id"], script)


def test_fork_copies_files_and_then_diverges_while_the_source_keeps_its_process(
    server, api, source
):
    sh(
        server,
        source,
        "echo before > ~/shared.txt; "
        "nohup sleep 10000 >/dev/null 2>&1 & echo $! > ~/sleeper.pid",
    )
    pid = sh(server, source, "cat ~/sleeper.pid").strip()

    response = api.post(f"{REPO}/workspaces/{source['id']}/fork", json={"name": "copy"})
    assert response.status_code == 201, response.text
    fork = response.json()
    assert fork["is_fork"] is True
    assert fork["parent_workspace_id"] == source["id"]
    assert fork["status"] == "running"
    assert fork["name"] == "copy"

    assert sh(server, fork, "cat ~/shared.txt").strip() == "before"
    sh(server, fork, "echo fork-only > ~/fork.txt")
    sh(server, source, "echo source-only > ~/source.txt")
    assert sh(server, source, "ls ~").split().count("fork.txt") == 0
    assert sh(server, fork, "ls ~").split().count("source.txt") == 0
    assert sh(server, source, f"kill -0 {pid} && echo alive").strip() == "alive"
    assert api.get(f"{REPO}/workspaces/{source['id']}").json()["status"] == "running"
    api.delete(f"{REPO}/workspaces/{fork['id']}")


def test_fork_with_count_returns_a_list_and_a_suspended_source_stays_suspended(
    api, source
):
    url = f"{REPO}/workspaces/{source['id']}"
    assert api.post(f"{url}/suspend").status_code == 200
    response = api.post(f"{url}/fork", json={"count": 2})
    assert response.status_code == 201, response.text
    forks = response.json()["workspaces"]
    assert len(forks) == 2
    assert {f["status"] for f in forks} == {"running"}
    assert api.get(url).json()["status"] == "suspended"
    assert api.post(f"{url}/resume").status_code == 200
    for fork in forks:
        assert api.delete(f"{REPO}/workspaces/{fork['id']}").status_code == 204


def test_snapshot_of_a_busy_writer_restores_only_whole_files(server, api, source):
    # Each pass overwrites every file with one write() of a new generation;
    # the snapshot must never hold a file mixing two generations.
    writer = (
        "import os, itertools\n"
        "os.makedirs('/home/developer/data', exist_ok=True)\n"
        "for gen in itertools.count():\n"
        "    for n in range(8):\n"
        "        fd = os.open(f'/home/developer/data/f{n}', os.O_WRONLY | os.O_CREAT)\n"
        "        os.pwrite(fd, bytes([65 + gen % 26]) * 262144, 0)\n"
        "        os.close(fd)\n"
    )
    sh(server, source, f"cat > ~/writer.py <<'PY'\n{writer}PY\n")
    sh(server, source, "nohup python3 ~/writer.py >/dev/null 2>&1 &")
    time.sleep(1)

    response = api.post(
        f"{REPO}/workspaces/{source['id']}/snapshot", json={"name": "busy"}
    )
    assert response.status_code == 201, response.text
    snapshot = response.json()
    assert snapshot["name"] == "busy"
    assert snapshot["size_bytes"] > 0
    assert snapshot["keeps_memory"] is False

    restored = api.post(f"{REPO}/workspaces", json={"snapshot_id": snapshot["id"]})
    assert restored.status_code == 201, restored.text
    workspace = restored.json()
    assert workspace["snapshot_id"] == snapshot["id"]
    assert workspace["is_fork"] is True
    check = (
        "import os\n"
        "for n in range(8):\n"
        "    data = open(f'/home/developer/data/f{n}', 'rb').read()\n"
        "    print(len(data), len(set(data)))\n"
    )
    out = sh(server, workspace, f"python3 - <<'PY'\n{check}PY\n").split("\n")
    for line in filter(None, out):
        assert line.split() == ["262144", "1"], out
    assert (
        sh(server, workspace, "pgrep -f 'writer[.]py' || echo none").strip() == "none"
    )
    sh(server, source, "pkill -f 'writer[.]py' || true")
    api.delete(f"{REPO}/workspaces/{workspace['id']}")


def test_three_restores_from_one_snapshot_are_independent_and_outlive_the_source(
    server, api
):
    base = api.post(f"{REPO}/workspaces/{api.post(f'{REPO}/workspaces', json={}).json()['id']}/fork", json={"name": "to-snapshot"}).json()  # fmt: skip
    sh(server, base, "echo original > ~/note.txt")
    snapshot = api.post(f"{REPO}/workspace-snapshots", json={"workspace_id": base["id"]}).json()  # fmt: skip
    assert snapshot["name"].startswith("snapshot-")
    assert api.delete(f"{REPO}/workspaces/{base['id']}").status_code == 204
    assert api.get(f"{REPO}/workspace-snapshots/{snapshot['id']}").status_code == 200

    restores = []
    for n in range(3):
        response = api.post(f"{REPO}/workspaces", json={"snapshot_id": snapshot["id"], "name": f"r{n}"})  # fmt: skip
        assert response.status_code == 201, response.text
        restores.append(response.json())
    for n, workspace in enumerate(restores):
        assert sh(server, workspace, "cat ~/note.txt").strip() == "original"
        sh(server, workspace, f"echo {n} > ~/note.txt")
    for n, workspace in enumerate(restores):
        assert sh(server, workspace, "cat ~/note.txt").strip() == str(n)

    # Deleting the snapshot never breaks a workspace made from it.
    assert api.delete(f"{REPO}/workspace-snapshots/{snapshot['id']}").status_code == 204
    assert api.get(f"{REPO}/workspace-snapshots/{snapshot['id']}").status_code == 404
    assert sh(server, restores[0], "cat ~/note.txt").strip() == "0"
    gone = api.post(f"{REPO}/workspaces", json={"snapshot_id": snapshot["id"]})
    assert gone.status_code == 404
    assert gone.json() == {"message": "workspace snapshot not found"}
    for workspace in restores:
        api.delete(f"{REPO}/workspaces/{workspace['id']}")


def test_snapshots_are_listed_with_pagination(api, source):
    for name in ("one", "two"):
        api.post(f"{REPO}/workspaces/{source['id']}/snapshot", json={"name": name})
    response = api.get(f"{REPO}/workspace-snapshots", params={"per_page": 1})
    assert response.status_code == 200
    assert len(response.json()) == 1
    assert int(response.headers["X-Total-Count"]) >= 2
    by_workspace = api.get(
        f"{REPO}/workspace-snapshots", params={"workspace_id": source["id"]}
    )
    assert {s["workspace_id"] for s in by_workspace.json()} == {source["id"]}


def test_fork_and_snapshot_of_a_stopped_or_failed_workspace_answer_409_and_change_nothing(
    server, api, source
):
    stopped = api.post(f"{REPO}/workspaces/{source['id']}/fork", json={}).json()
    api.delete(f"{REPO}/workspaces/{stopped['id']}")
    failed = api.post(f"{REPO}/workspaces/{source['id']}/fork", json={}).json()
    remove_machine_behind_the_servers_back(server, failed)
    wait_for_status(api, failed, "failed")

    total = api.get(f"{REPO}/workspaces").headers["X-Total-Count"]
    snapshots = api.get(f"{REPO}/workspace-snapshots").headers["X-Total-Count"]
    for workspace, status in ((stopped, "stopped"), (failed, "failed")):
        for verb in ("fork", "snapshot"):
            response = api.post(f"{REPO}/workspaces/{workspace['id']}/{verb}", json={})
            assert response.status_code == 409
            assert status in response.json()["message"]
    assert api.get(f"{REPO}/workspaces").headers["X-Total-Count"] == total
    assert api.get(f"{REPO}/workspace-snapshots").headers["X-Total-Count"] == snapshots
    api.delete(f"{REPO}/workspaces/{failed['id']}")


def remove_machine_behind_the_servers_back(
    server: JJHubServer, workspace: dict
) -> None:
    machine = workspace["freestyle_vm_id"]
    runc_root = str(server.data_dir / "runc")
    subprocess.run(
        ["runc", "--root", runc_root, "delete", "--force", machine], check=True
    )


def wait_for_status(api, workspace: dict, status: str) -> None:
    """Poll until the server's reconciliation sets `status`."""
    url = f"{REPO}/workspaces/{workspace['id']}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if api.get(url).json()["status"] == status:
            return
        time.sleep(0.5)
    raise AssertionError(f"{workspace['id']} never became {status}")


def test_a_fork_that_fails_midway_leaves_no_half_made_workspace(xfs_root):
    """A /29 has room for five machines: a fork of five after one must fail."""
    data_dir = xfs_root / "fork-fails"
    data_dir.mkdir()
    with JJHubServer(data_dir, network_cidr="10.199.7.0/29").start() as server:
        token = server.create_user("fay")
        with server.client(token) as api:
            api.post("/api/user/repos", json={"name": "p"})
            first = api.post("/api/repos/fay/p/workspaces", json={}).json()
            response = api.post(
                f"/api/repos/fay/p/workspaces/{first['id']}/fork", json={"count": 5}
            )
            assert response.status_code == 503, response.text
            assert "fork failed" in response.json()["message"]
            listed = api.get("/api/repos/fay/p/workspaces").json()
            assert [w["id"] for w in listed] == [first["id"]]
            machines = sorted(p.name for p in (data_dir / "machines").iterdir())
            assert machines == [first["freestyle_vm_id"]]
            assert (
                api.get(f"/api/repos/fay/p/workspaces/{first['id']}").json()["status"]
                == "running"
            )
