"""Helpers the runc benchmarks share: statistics, the machine, scratch storage.

Nothing here is a benchmark. `bench_lifecycle.py` and `bench_copies.py` import
it as a sibling module (they put `bench/` and the repository on `sys.path`).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
IMAGE_DIR = Path(os.environ.get("JJHUB_IMAGE_DIR", "/var/tmp/jjhub-test-images"))
# A gateway key for machines nobody logs into (the benchmarks use exec).
BENCH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOnlyForBenchOnlyForBenchOnlyForBe"

log = logging.getLogger("bench")
_libc = ctypes.CDLL(None, use_errno=True)


def summarize(seconds: list[float]) -> dict[str, object]:
    """Median and p95 (nearest rank) of durations, in milliseconds."""
    ms = sorted(s * 1000 for s in seconds)
    return {
        "count": len(ms),
        "median_ms": round(statistics.median(ms), 2),
        "p95_ms": round(ms[max(0, math.ceil(0.95 * len(ms)) - 1)], 2),
        "min_ms": round(ms[0], 2),
        "max_ms": round(ms[-1], 2),
        "samples_ms": [round(v, 2) for v in (s * 1000 for s in seconds)],
    }


def summarize_values(values: list[float], unit: str, digits: int = 2) -> dict[str, Any]:
    """Median, min and max of already-scaled values (MiB, ms) plus the samples."""
    return {
        "count": len(values),
        f"median_{unit}": round(statistics.median(values), digits),
        f"min_{unit}": round(min(values), digits),
        f"max_{unit}": round(max(values), digits),
        f"samples_{unit}": [round(v, digits) for v in values],
    }


def load_average() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def _first(path: str, prefix: str) -> str:
    with contextlib.suppress(OSError):
        for line in Path(path).read_text().splitlines():
            if line.startswith(prefix):
                return line.split(":", 1)[1].strip()
    return "unknown"


def _output(*argv: str) -> str:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    lines = (result.stdout or result.stderr).strip().splitlines()
    return lines[0] if lines else "unknown"


def machine() -> dict[str, object]:
    """The host the numbers come from; other engineers share it, hence load."""
    os_release = {}
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            key, _, value = line.partition("=")
            os_release[key] = value.strip('"')
    memory_kib = int(_first("/proc/meminfo", "MemTotal").split()[0])
    return {
        "host": platform.node(),
        "os": os_release.get("PRETTY_NAME", "unknown"),
        "kernel": platform.release(),
        "cpu": _first("/proc/cpuinfo", "model name"),
        "cpus": os.cpu_count(),
        "memory_mib": memory_kib // 1024,
        "python": platform.python_version(),
        "runc": _output("runc", "--version"),
        "commit": _output("git", "-C", str(REPO), "rev-parse", "--short", "HEAD"),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def filesystem_type(path: Path) -> str:
    """The type of the mount holding `path` (ext4, xfs, ...)."""
    return _output("findmnt", "-n", "-o", "FSTYPE", "--target", str(path))


def syncfs(path: Path) -> None:
    """Flush the file system holding `path`, so block counts are settled."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _libc.syncfs(fd) != 0:
            raise OSError(ctypes.get_errno(), f"syncfs {path}")
    finally:
        os.close(fd)


def used_bytes(path: Path) -> int:
    """Bytes in use on the file system holding `path`, as `df` counts them."""
    syncfs(path)
    info = os.statvfs(path)
    return (info.f_blocks - info.f_bfree) * info.f_frsize


def _run(*argv: str) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {result.stderr.strip()}")
    return result.stdout.strip()


@contextlib.contextmanager
def loop_filesystem(kind: str, size_gib: int = 8) -> Iterator[Path]:
    """A fresh file system on a loop device under /var/tmp, gone afterwards.

    `kind` is "xfs" (made with reflink=1) or "ext4". The image, the loop
    device, the mount and the mount point are all removed on the way out,
    whether the body succeeded or not.
    """
    base = Path(f"/var/tmp/jjhub-bench-copies-{kind}-{os.getpid()}")
    image = base.with_suffix(".img")
    device = ""
    mounted = False
    try:
        base.mkdir(parents=True)
        with open(image, "wb") as handle:
            handle.truncate(size_gib * 1024**3)
        if kind == "xfs":
            _run("mkfs.xfs", "-q", "-f", "-m", "reflink=1", str(image))
        elif kind == "ext4":
            # No lazy init: a kernel thread zeroing inode tables in the
            # background would disturb the timings.
            _run(
                "mkfs.ext4", "-q", "-F",
                "-E", "lazy_itable_init=0,lazy_journal_init=0", str(image),
            )  # fmt: skip
        else:
            raise ValueError(f"unknown file system {kind}")
        device = _run("losetup", "--find", "--show", str(image))
        _run("mount", device, str(base))
        mounted = True
        base.chmod(0o755)  # machines run in a user namespace and must traverse it
        yield base
    finally:
        if mounted:
            result = subprocess.run(["umount", str(base)], capture_output=True)
            if result.returncode != 0:
                log.warning("umount %s busy, detaching lazily", base)
                subprocess.run(["umount", "-l", str(base)], check=False)
        if device:
            subprocess.run(["losetup", "-d", device], check=False)
        image.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            base.rmdir()


@contextlib.contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    """A directory under /var/tmp that user-namespaced machines can traverse."""
    path = Path(f"/var/tmp/{prefix}-{os.getpid()}")
    path.mkdir(parents=True)
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def remove_host_network(bridge: str, table: str) -> None:
    """Drop a bench-only CIDR's bridge and nftables table (the driver keeps them)."""
    subprocess.run(["ip", "link", "del", bridge], capture_output=True, check=False)
    subprocess.run(
        ["nft", "delete", "table", "ip", table], capture_output=True, check=False
    )


def remove_cgroup_parent(name: str) -> None:
    """Remove a data directory's parent cgroup, which runc leaves behind.

    `rmdir` only removes empty cgroups, so a machine still running keeps its.
    """
    for directory in Path("/sys/fs/cgroup").glob(f"*/{name}"):
        with contextlib.suppress(OSError):
            directory.rmdir()


class LogCapture(logging.Handler):
    """Keeps the messages of the driver's loggers, to read `frozen_ms=` from."""

    def __init__(self, *names: str) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []
        self.loggers = [logging.getLogger(name) for name in names]

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())

    def __enter__(self) -> LogCapture:
        for logger in self.loggers:
            logger.addHandler(self)
            logger.setLevel(logging.INFO)
        return self

    def __exit__(self, *exc: object) -> None:
        for logger in self.loggers:
            logger.removeHandler(self)

    def field(self, prefix: str, machine_id: str, name: str, since: int = 0) -> int:
        """`name=` of the newest message that starts with `prefix` for a machine.

        `since` skips messages logged before that index (`len(messages)`
        taken before the call being measured).
        """
        for message in reversed(self.messages[since:]):
            if message.startswith(prefix) and f"machine={machine_id} " in message:
                match = re.search(rf"\b{name}=(\d+)", message)
                if match:
                    return int(match[1])
        raise LookupError(f"no {prefix!r} message with {name}= for {machine_id}")

    def count(self, text: str) -> int:
        return sum(text in message for message in self.messages)


def write_result(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path
