"""The QEMU guest: a disk image, a kernel and a small initramfs, built once.

The disk is the same Debian base root the runc driver uses, written into an
ext4 file system and converted to qcow2 so each machine's disk is a thin
overlay on it. The kernel and its modules come from Debian's own
`linux-image-*` package installed on the host (`apt-get install
linux-image-amd64`), nothing else is downloaded. The initramfs is busybox
(`busybox-static`) plus the few modules needed to reach the root disk.

Everything is keyed by a hash of its inputs and built under a file lock, so
several servers can share one image directory and a change builds beside the
old image instead of mutating what running machines use.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from jjhub.logs import kv
from jjhub.runtime.errors import RuntimeFailure
from jjhub.runtime.images import _file_lock, ensure_base_rootfs, recipe_key

log = logging.getLogger(__name__)

GUEST_VERSION = "4"
DISK_SIZE = "16G"
BUSYBOX = Path("/usr/bin/busybox")
GUEST_DIR = Path(__file__).parent / "qemu_guest"

# Loaded in this order by the initramfs; dependencies come from modules.dep.
MODULES = [
    "virtio_mmio",
    "virtio_blk",
    "virtio_net",
    "virtio_console",
    "virtio-rng",
    "crc32c_generic",
    "ext4",
]

# Files copied into the guest root: (source in qemu_guest/, target, mode).
GUEST_FILES = [
    ("init.sh", "usr/local/sbin/jjhub-init", 0o755),
    ("agent.py", "usr/local/lib/jjhub/agent.py", 0o644),
]


@dataclass(frozen=True)
class GuestImage:
    """Paths of one built guest; `key` names it in state files."""

    key: str
    disk: Path
    kernel: Path
    initrd: Path


@dataclass(frozen=True)
class HostKernel:
    release: str
    vmlinuz: Path
    modules: Path


def find_host_kernel() -> HostKernel:
    """The newest Debian kernel installed under /boot with its modules."""
    candidates = sorted(Path("/boot").glob("vmlinuz-*"), reverse=True)
    running = platform.release()
    candidates.sort(key=lambda p: p.name != f"vmlinuz-{running}")
    for vmlinuz in candidates:
        release = vmlinuz.name.removeprefix("vmlinuz-")
        modules = Path("/lib/modules") / release
        if (modules / "modules.dep").exists():
            return HostKernel(release, vmlinuz, modules)
    raise RuntimeFailure(
        "no Debian kernel found in /boot for QEMU guests; run "
        "`apt-get install linux-image-amd64 busybox-static`"
    )


def _guest_files_digest() -> str:
    digest = hashlib.sha256()
    for name, target, mode in GUEST_FILES:
        digest.update(f"{name}:{target}:{mode}".encode())
        digest.update((GUEST_DIR / name).read_bytes())
    return digest.hexdigest()


def guest_key(kernel: HostKernel) -> str:
    text = "\n".join(
        [
            GUEST_VERSION,
            recipe_key(),
            kernel.release,
            str(kernel.vmlinuz.stat().st_size),
            DISK_SIZE,
            *MODULES,
            _guest_files_digest(),
        ]
    )
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def guest_dir(image_dir: Path, key: str) -> Path:
    return image_dir / f"qemu-guest-{key}"


def guest_paths(image_dir: Path, key: str) -> GuestImage:
    path = guest_dir(image_dir, key)
    return GuestImage(key, path / "disk.qcow2", path / "vmlinuz", path / "initrd.img")


async def ensure_guest_image(image_dir: Path) -> GuestImage:
    """The guest image for this host's kernel, building it on first need."""
    rootfs = await ensure_base_rootfs(image_dir)
    return await asyncio.to_thread(_ensure_guest_image, image_dir, rootfs)


def _ensure_guest_image(image_dir: Path, rootfs: Path) -> GuestImage:
    kernel = find_host_kernel()
    image = guest_paths(image_dir, guest_key(kernel))
    ready = image.disk.parent / "ready"
    if ready.exists():
        return image
    with _file_lock(image_dir / ".qemu-build.lock"):
        if ready.exists():
            return image
        started = time.monotonic()
        log.info(
            "building qemu guest image %s", kv(key=image.key, kernel=kernel.release)
        )
        _build(image, kernel, rootfs)
        ready.touch()
        log.info(
            "built qemu guest image %s",
            kv(key=image.key, seconds=round(time.monotonic() - started, 1)),
        )
    return image


def _build(image: GuestImage, kernel: HostKernel, rootfs: Path) -> None:
    directory = image.disk.parent
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    with tempfile.TemporaryDirectory(dir=directory.parent) as scratch:
        scratch_dir = Path(scratch)
        _build_initrd(kernel, scratch_dir / "initrd", image.initrd)
        _build_disk(rootfs, scratch_dir, image.disk)
    shutil.copyfile(kernel.vmlinuz, image.kernel)


def _run(argv: list[str], what: str) -> None:
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        tail = "\n".join(result.stderr.strip().splitlines()[-10:])
        raise RuntimeFailure(f"{what} failed ({argv[0]}): {tail}")


def _build_disk(rootfs: Path, scratch: Path, target: Path) -> None:
    """ext4 from a copy of the base root plus the guest's init and agent."""
    root = scratch / "root"
    _run(["cp", "-a", "--reflink=auto", str(rootfs), str(root)], "copying the root")
    for name, relative, mode in GUEST_FILES:
        destination = root / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(GUEST_DIR / name, destination)
        destination.chmod(mode)
    (root / "etc/hostname").write_text("localhost\n")
    raw = scratch / "disk.raw"
    _run(
        [
            "mkfs.ext4",
            "-q",
            "-F",
            "-L",
            "jjhub-root",
            "-d",
            str(root),
            str(raw),
            DISK_SIZE,
        ],
        "making the guest file system",
    )
    _run(
        ["qemu-img", "convert", "-O", "qcow2", str(raw), str(target)],
        "converting the guest disk to qcow2",
    )


def _module_files(kernel: HostKernel) -> list[str]:
    """Relative module paths in load order, dependencies first."""
    deps: dict[str, list[str]] = {}
    for line in (kernel.modules / "modules.dep").read_text().splitlines():
        path, _, rest = line.partition(":")
        deps[path] = rest.split()
    by_name = {_module_name(p): p for p in deps}
    ordered: list[str] = []

    def add(path: str) -> None:
        if path in ordered:
            return
        for dependency in reversed(deps[path]):
            add(dependency)
        ordered.append(path)

    for name in MODULES:
        found = by_name.get(name.replace("-", "_"))
        if found is None:
            raise RuntimeFailure(f"kernel {kernel.release} has no module {name}")
        add(found)
    return ordered


def _module_name(path: str) -> str:
    name = os.path.basename(path).split(".ko")[0]
    return name.replace("-", "_")


def _build_initrd(kernel: HostKernel, staging: Path, target: Path) -> None:
    for sub in ["bin", "dev", "proc", "sys", "newroot", "lib/modules"]:
        (staging / sub).mkdir(parents=True, exist_ok=True)
    if not BUSYBOX.exists():
        raise RuntimeFailure("busybox is missing; run `apt-get install busybox-static`")
    shutil.copyfile(BUSYBOX, staging / "bin/busybox")
    (staging / "bin/busybox").chmod(0o755)
    (staging / "bin/sh").symlink_to("busybox")
    order = []
    for relative in _module_files(kernel):
        order.append(_copy_module(kernel.modules / relative, staging / "lib/modules"))
    (staging / "modules.order").write_text("\n".join(order) + "\n")
    init = staging / "init"
    shutil.copyfile(GUEST_DIR / "initramfs-init.sh", init)
    init.chmod(0o755)
    files = subprocess.run(
        ["find", ".", "-print0"], cwd=staging, capture_output=True, check=True
    ).stdout
    archive = subprocess.run(
        ["cpio", "--null", "-o", "-H", "newc", "--quiet"],
        cwd=staging,
        input=files,
        capture_output=True,
        check=True,
    ).stdout
    target.write_bytes(archive)


def _copy_module(source: Path, directory: Path) -> str:
    """Copy one module, decompressed; busybox insmod wants plain .ko files."""
    name = source.name.split(".ko")[0] + ".ko"
    data = source.read_bytes()
    if source.suffix == ".xz":
        import lzma

        data = lzma.decompress(data)
    elif source.suffix == ".zst":
        data = subprocess.run(
            ["zstd", "-dc", str(source)], capture_output=True, check=True
        ).stdout
    (directory / name).write_bytes(data)
    return name
