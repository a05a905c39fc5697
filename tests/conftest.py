"""Fixtures shared by every test: a reflink XFS scratch area and the image cache.

Workspaces need real storage: the suite makes one XFS file system with reflink
on a loop device per test session, so fork and snapshot run the fast path, and
shares one base image cache across sessions so mmdebstrap runs once per machine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

# Shared between runs so mmdebstrap runs once per machine; override to test a
# cold cache (what CI on a fresh machine sees).
IMAGE_CACHE = Path(
    os.environ.get("JJHUB_TEST_IMAGE_CACHE", "/var/tmp/jjhub-test-images")
)


@pytest.fixture(scope="session", autouse=True)
def shared_image_dir() -> Path:
    IMAGE_CACHE.mkdir(parents=True, exist_ok=True)
    os.environ["JJHUB_IMAGE_DIR"] = str(IMAGE_CACHE)
    return IMAGE_CACHE


@pytest.fixture(scope="session")
def xfs_root() -> Iterator[Path]:
    """A fresh reflink-capable XFS mounted for this session, removed after."""
    base = Path(f"/var/tmp/jjhub-test-xfs-{os.getpid()}")
    image = base.with_suffix(".img")
    base.mkdir(parents=True, exist_ok=True)
    with open(image, "wb") as handle:
        handle.truncate(16 * 1024**3)
    subprocess.run(["mkfs.xfs", "-q", "-f", "-m", "reflink=1", str(image)], check=True)
    subprocess.run(["mount", "-o", "loop", str(image), str(base)], check=True)
    try:
        yield base
    finally:
        subprocess.run(["umount", "-l", str(base)], check=False)
        image.unlink(missing_ok=True)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def data_dir(xfs_root: Path) -> Path:
    """A new data directory on the session's XFS for one test."""
    path = xfs_root / f"data-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    return path
