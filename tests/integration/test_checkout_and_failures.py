"""A repository's clone URL becomes the checkout; a broken image fails cleanly."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.machines import host_leftovers, runc_exec
from tests.support.server import JJHubServer, free_port


@pytest.fixture
def git_http_server(tmp_path: Path) -> Iterator[str]:
    """A bare repository served over git's dumb HTTP protocol on 0.0.0.0."""
    work = tmp_path / "src"
    work.mkdir()
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q", "-b", "main", str(work)], check=True)
    (work / "README.md").write_text("hello from the host\n")
    subprocess.run([*git, "-C", str(work), "add", "."], check=True)
    subprocess.run([*git, "-C", str(work), "commit", "-qm", "first"], check=True)
    served = tmp_path / "served"
    served.mkdir()
    bare = served / "proj.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(bare)], check=True)
    subprocess.run(["git", "-C", str(bare), "update-server-info"], check=True)
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "0.0.0.0"],
        cwd=served,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield f"http://127.0.0.1:{port}/proj.git"
    finally:
        process.terminate()
        process.wait()


def test_a_clone_url_on_the_hosts_loopback_gives_a_checkout_owned_by_developer(
    data_dir, git_http_server
):
    with JJHubServer(data_dir).start() as server:
        token = server.create_user("gus")
        with server.client(token) as api:
            created = api.post(
                "/api/user/repos", json={"name": "proj", "clone_url": git_http_server}
            )
            assert created.status_code == 201
            broken = api.post(
                "/api/user/repos",
                json={"name": "broken", "clone_url": git_http_server + "-missing"},
            )
            assert broken.status_code == 201
            workspace = api.post("/api/repos/gus/proj/workspaces", json={}).json()
            assert workspace["status"] == "running"
            assert workspace["status_reason"] == ""
            failed_clone = api.post("/api/repos/gus/broken/workspaces", json={}).json()
        out = runc_exec(
            data_dir,
            workspace["freestyle_vm_id"],
            "cat ~/workspace/README.md; stat -c %U ~/workspace ~/workspace/README.md",
        ).split("\n")
        assert out[0] == "hello from the host"
        assert out[1:3] == ["developer", "developer"]
        assert failed_clone["status"] == "running"
        assert "checkout of" in failed_clone["status_reason"]
        assert "failed" in failed_clone["status_reason"]
        assert "clone failed" in server.log_path.read_text()


def test_a_create_on_a_broken_base_image_ends_failed_and_leaves_nothing(data_dir):
    """An image whose root has no init: runc cannot start the machine."""
    from jjhub.runtime import images

    image_dir = data_dir / "broken-images"
    base = images.base_rootfs_path(image_dir)
    (base.parent / "rootfs-shift-100000").mkdir(parents=True)
    base.mkdir()
    for marker in ("ready", "ready-shift-100000"):
        (base.parent / marker).touch()
    with JJHubServer(
        data_dir, env={"JJHUB_IMAGE_DIR": str(image_dir)}
    ).start() as server:
        token = server.create_user("hal")
        with server.client(token) as api:
            api.post("/api/user/repos", json={"name": "p"})
            response = api.post("/api/repos/hal/p/workspaces", json={})
            assert response.status_code == 503, response.text
            assert response.json()["message"].startswith("create failed:")
            listed = api.get("/api/repos/hal/p/workspaces").json()
        assert len(listed) == 1
        assert listed[0]["status"] == "failed"
        assert listed[0]["status_reason"]
        machine = listed[0]["freestyle_vm_id"]
        assert "create failed" in server.log_path.read_text()
        assert host_leftovers(machine) == []
        assert not (data_dir / "machines" / machine).exists()
