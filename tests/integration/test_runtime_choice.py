"""`--runtime auto` picks QEMU only where a KVM guest really boots."""

from __future__ import annotations

import httpx

from jjhub.runtime import accel
from tests.support.server import JJHubServer


def test_auto_runtime_follows_the_kvm_probe_and_logs_its_choice(
    data_dir, shared_image_dir
):
    expected = "qemu" if accel.kvm_works(shared_image_dir) else "runc"
    with JJHubServer(data_dir, runtime="auto").start() as server:
        health = httpx.get(f"{server.url}/healthz").json()
        assert health["runtime"] == expected
        log = server.log_path.read_text()
        assert f"runtime chosen runtime={expected} reason=auto" in log
        assert "qemu accelerator" in log
