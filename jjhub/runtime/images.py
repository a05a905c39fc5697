"""The Debian base image every machine starts from, built once and cached.

`mmdebstrap` builds a bookworm root from the Debian mirror (about 30 s). The
result is keyed by a hash of the recipe, so changing the package list builds a
new image beside the old one instead of mutating what machines run on. A file
lock lets several servers share one image directory without building twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from jjhub.logs import kv
from jjhub.runtime.errors import RuntimeFailure

log = logging.getLogger(__name__)

SUITE = "bookworm"
MIRROR = os.environ.get("JJHUB_DEBIAN_MIRROR", "http://deb.debian.org/debian")
PACKAGES = [
    "openssh-server",
    "git",
    "curl",
    "ca-certificates",
    "sudo",
    "procps",
    "iproute2",
    "less",
    "python3",
    "tini",
    "netbase",
]
LINUX_USER = "developer"
RECIPE_VERSION = "3"

# Run inside the new root by mmdebstrap; "$1" is the root directory.
CUSTOMIZE_HOOKS = [
    f'chroot "$1" useradd --create-home --shell /bin/bash --uid 1000 {LINUX_USER}',
    f'echo "{LINUX_USER} ALL=(ALL) NOPASSWD:ALL" > "$1/etc/sudoers.d/{LINUX_USER}"',
    f'chmod 440 "$1/etc/sudoers.d/{LINUX_USER}"',
    'rm -f "$1"/etc/ssh/ssh_host_*',
    'mkdir -p "$1/etc/ssh/authorized_keys"',
    "printf 'AuthorizedKeysFile .ssh/authorized_keys /etc/ssh/authorized_keys/%%u\\n"
    "PermitRootLogin prohibit-password\\nPasswordAuthentication no\\n"
    "KbdInteractiveAuthentication no\\nUseDNS no\\nAcceptEnv LANG LC_* *\\n'"
    ' > "$1/etc/ssh/sshd_config.d/jjhub.conf"',
    # sshd -i (how the gateway reaches sshd) reports its peer as "UNKNOWN",
    # and PAM's audit records resolve that name; answering it locally spares
    # every login a DNS query, which under concurrent logins timed out (5 s).
    'echo "127.0.0.1 UNKNOWN" >> "$1/etc/hosts"',
    'echo "nameserver 1.1.1.1" > "$1/etc/resolv.conf"',
    'rm -rf "$1"/var/cache/apt/archives/*.deb "$1"/var/lib/apt/lists/*',
]


def recipe_key() -> str:
    text = "\n".join([RECIPE_VERSION, SUITE, MIRROR, *PACKAGES, *CUSTOMIZE_HOOKS])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def base_rootfs_path(image_dir: Path) -> Path:
    return image_dir / f"debian-{SUITE}-{recipe_key()}" / "rootfs"


async def ensure_base_rootfs(image_dir: Path) -> Path:
    """The unshifted base root (uid 0 is root), building it on first need."""
    return await asyncio.to_thread(_ensure_base_rootfs, image_dir)


def _ensure_base_rootfs(image_dir: Path) -> Path:
    rootfs = base_rootfs_path(image_dir)
    ready = rootfs.parent / "ready"
    if ready.exists():
        return rootfs
    with _file_lock(image_dir / ".build.lock"):
        if ready.exists():
            return rootfs
        _build(rootfs)
        ready.touch()
    return rootfs


def _build(rootfs: Path) -> None:
    import subprocess
    import time

    if shutil.which("mmdebstrap") is None:
        raise RuntimeFailure(
            "mmdebstrap is not installed; run `apt-get install mmdebstrap` "
            "to let jjhub build its base image"
        )
    staging = rootfs.with_name("rootfs.building")
    shutil.rmtree(staging, ignore_errors=True)
    staging.parent.mkdir(parents=True, exist_ok=True)
    argv = [
        "mmdebstrap",
        "--mode=root",
        "--variant=minbase",
        "--include=" + ",".join(PACKAGES),
        *[f"--customize-hook={hook}" for hook in CUSTOMIZE_HOOKS],
        SUITE,
        str(staging),
        MIRROR,
    ]
    log.info("building base image %s", kv(path=rootfs, packages=len(PACKAGES)))
    started = time.monotonic()
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        tail = "\n".join(result.stderr.strip().splitlines()[-15:])
        raise RuntimeFailure(
            f"building the base image with mmdebstrap failed: {tail}; "
            f"check that {MIRROR} is reachable or set JJHUB_DEBIAN_MIRROR"
        )
    shutil.rmtree(rootfs, ignore_errors=True)
    staging.rename(rootfs)
    log.info(
        "built base image %s",
        kv(path=rootfs, seconds=round(time.monotonic() - started, 1)),
    )


async def ensure_shifted_rootfs(image_dir: Path, uid_offset: int) -> Path:
    """A copy of the base root owned by `uid_offset + uid`, for user namespaces.

    Inside a user namespace that maps root to `uid_offset`, files owned by host
    uid `uid_offset` look owned by root, so the overlay's lower layer is
    shifted once here rather than per machine.
    """
    return await asyncio.to_thread(_ensure_shifted_rootfs, image_dir, uid_offset)


def _ensure_shifted_rootfs(image_dir: Path, uid_offset: int) -> Path:
    base = _ensure_base_rootfs(image_dir)
    # "v2": v1 shifted directories twice; its copies are never reused.
    shifted = base.parent / f"rootfs-shift-{uid_offset}-v2"
    ready = base.parent / f"ready-shift-{uid_offset}-v2"
    if ready.exists():
        return shifted
    with _file_lock(image_dir / ".build.lock"):
        if ready.exists():
            return shifted
        staging = shifted.with_name(shifted.name + ".building")
        shutil.rmtree(staging, ignore_errors=True)
        import subprocess

        subprocess.run(["cp", "-a", str(base), str(staging)], check=True)
        _shift_ownership(staging, uid_offset)
        shutil.rmtree(shifted, ignore_errors=True)
        staging.rename(shifted)
        ready.touch()
        log.info("shifted base image %s", kv(path=shifted, uid_offset=uid_offset))
    return shifted


def _shift_ownership(root: Path, offset: int) -> None:
    # Every inode is shifted exactly once: directories when walked, symlinks
    # to directories from dirnames (never walked), hard links once per inode.
    seen: set[tuple[int, int]] = set()
    for directory, dirnames, filenames in os.walk(root):
        _shift_one(directory, offset, seen)
        links = [n for n in dirnames if os.path.islink(os.path.join(directory, n))]
        for name in [*links, *filenames]:
            _shift_one(os.path.join(directory, name), offset, seen)


def _shift_one(path: str, offset: int, seen: set[tuple[int, int]]) -> None:
    info = os.lstat(path)
    if (info.st_dev, info.st_ino) in seen:
        return
    seen.add((info.st_dev, info.st_ino))
    mode = info.st_mode
    os.lchown(path, info.st_uid + offset, info.st_gid + offset)
    # chown clears setuid/setgid bits (sudo needs them back).
    if mode & 0o6000 and not os.path.islink(path):
        os.chmod(path, mode & 0o7777)
