"""Directory copies for fork and snapshot: reflink when the disk can, else full.

On XFS (reflink=1) and btrfs a reflink copy shares extents, so its time and
extra disk depend on the number of files, not on how much data they hold. On
other file systems the copy falls back to a full one and says so in the log,
since a slow fork the operator cannot explain is worse than a warning.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import shutil
import time
from pathlib import Path

from jjhub.logs import kv
from jjhub.runtime.errors import RuntimeFailure

log = logging.getLogger(__name__)
_libc = ctypes.CDLL(None, use_errno=True)


async def _cp(source: Path, target: Path, reflink: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        "cp", "-a", f"--reflink={reflink}", "--", str(source), str(target),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, err.decode(errors="replace").strip()


async def copy_tree(source: Path, target: Path) -> bool:
    """Copy `source` to the new path `target`; returns whether it reflinked.

    Ownership, modes, xattrs (overlayfs keeps whiteout and opaque markers
    there) and hard links are kept, as `cp -a` does.
    """
    if target.exists():
        raise RuntimeFailure(f"copy target {target} already exists")
    started = time.monotonic()
    code, err = await _cp(source, target, "always")
    if code == 0:
        return True
    await asyncio.to_thread(shutil.rmtree, target, True)
    log.warning(
        "reflink copy not possible, making a full copy %s",
        kv(source=source, reason=err.splitlines()[-1] if err else code),
    )
    code, err = await _cp(source, target, "auto")
    if code != 0:
        await asyncio.to_thread(shutil.rmtree, target, True)
        raise RuntimeFailure(f"copying {source} to {target} failed: {err}")
    log.info(
        "full copy done %s",
        kv(source=source, seconds=round(time.monotonic() - started, 3)),
    )
    return False


async def sync_filesystem(path: Path) -> None:
    """Flush the file system holding `path` (syncfs), so a copy is durable."""
    await asyncio.to_thread(_syncfs, path)


def _syncfs(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _libc.syncfs(fd) != 0:
            errno = ctypes.get_errno()
            raise RuntimeFailure(f"syncfs {path} failed: {os.strerror(errno)}")
    finally:
        os.close(fd)


async def disk_usage(path: Path) -> int:
    """Bytes of disk a tree uses, like `du -s` (hard links counted once)."""
    return await asyncio.to_thread(_disk_usage, path)


def _disk_usage(path: Path) -> int:
    seen: set[tuple[int, int]] = set()
    total = 0
    for directory, dirnames, filenames in os.walk(path):
        for name in [*dirnames, *filenames]:
            info = os.lstat(os.path.join(directory, name))
            key = (info.st_dev, info.st_ino)
            if key in seen:
                continue
            seen.add(key)
            total += info.st_blocks * 512
    return total + os.lstat(path).st_blocks * 512


async def remove_tree(path: Path) -> None:
    """Delete a tree without crossing into other mounts."""
    if not path.exists() and not path.is_symlink():
        return
    proc = await asyncio.create_subprocess_exec(
        "rm", "-rf", "--one-file-system", "--", str(path),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeFailure(f"removing {path} failed: {err.decode().strip()}")
