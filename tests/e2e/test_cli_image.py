"""`jjhub image build` builds (or finds) the base image ahead of time."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.support.server import jjhub_argv


def test_image_build_prints_the_ready_image_and_logs_progress(shared_image_dir):
    result = subprocess.run(
        [*jjhub_argv(), "image", "build", "--runtime", "runc", "--json"],
        capture_output=True,
        text=True,
        env={**os.environ, "JJHUB_IMAGE_DIR": str(shared_image_dir)},
        timeout=900,
    )
    assert result.returncode == 0, result.stderr
    built = json.loads(result.stdout)
    rootfs = Path(built["runc"]["path"])
    assert rootfs.is_relative_to(shared_image_dir)
    assert (rootfs / "usr/sbin/sshd").exists()
    assert (rootfs / "home/developer").stat().st_uid == 100000 + 1000


def test_image_build_refuses_an_unknown_runtime():
    result = subprocess.run(
        [*jjhub_argv(), "image", "build", "--runtime", "docker"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "'docker' is not one of" in result.stderr
