"""Choosing QEMU's accelerator: KVM where a guest kernel really runs, else TCG.

`/dev/kvm` existing is not enough: under some nested hypervisors KVM accepts
the VM and then hangs as soon as a guest kernel starts. The probe therefore
boots the guest kernel with an initramfs that prints one line and powers off,
and gives up after `PROBE_TIMEOUT` seconds. The answer is cached per host boot
in the image directory and logged once per process.

`JJHUB_QEMU_ACCEL=kvm|tcg|auto` overrides the choice (`auto` by default).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from pathlib import Path

from jjhub.logs import kv
from jjhub.runtime.errors import RuntimeFailure

log = logging.getLogger(__name__)

ACCEL_ENV = "JJHUB_QEMU_ACCEL"
CHOICES = ("auto", "kvm", "tcg")
PROBE_TIMEOUT = 10.0
PROBE_MARKER = b"JJHUB-PROBE-OK"
QEMU = "qemu-system-x86_64"

_logged: set[str] = set()


def requested_accel(accel: str = "auto") -> str:
    """The accelerator asked for: the argument unless `auto`, then the env."""
    choice = accel if accel != "auto" else os.environ.get(ACCEL_ENV, "auto")
    if choice not in CHOICES:
        raise RuntimeFailure(
            f"unknown QEMU accelerator {choice!r}; set {ACCEL_ENV} to kvm, tcg or auto"
        )
    return choice


def kvm_usable() -> bool:
    return os.access("/dev/kvm", os.R_OK | os.W_OK)


async def choose_accel(accel: str, cache_dir: Path, kernel: Path, initrd: Path) -> str:
    """`kvm` or `tcg` for new machines, probing KVM at most once per boot."""
    choice = requested_accel(accel)
    if choice == "kvm" and not kvm_usable():
        raise RuntimeFailure(
            "KVM was requested but /dev/kvm is missing or not accessible; "
            f"load the kvm module or set {ACCEL_ENV}=tcg"
        )
    if choice != "auto":
        _log_once(choice, "requested")
        return choice
    if not kvm_usable():
        _log_once("tcg", "no /dev/kvm")
        return "tcg"
    cache = cache_dir / "qemu-accel.json"
    cached = _read_cache(cache)
    if cached is not None:
        _log_once(cached, "cached probe")
        return cached
    works, seconds = await probe_kvm(kernel, initrd)
    result = "kvm" if works else "tcg"
    _write_cache(cache, result, seconds)
    _log_once(result, f"probe {'passed' if works else 'timed out'} in {seconds:.1f} s")
    return result


def _log_once(accel: str, reason: str) -> None:
    if accel in _logged:
        return
    _logged.add(accel)
    log.info("qemu accelerator %s", kv(accel=accel, reason=reason))


def _boot_id() -> str:
    with contextlib.suppress(OSError):
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    return "unknown"


def _read_cache(path: Path) -> str | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if data.get("boot_id") != _boot_id() or data.get("accel") not in ("kvm", "tcg"):
        return None
    return str(data["accel"])


def _write_cache(path: Path, accel: str, seconds: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_suffix(f".{os.getpid()}.tmp")
    record = {"accel": accel, "boot_id": _boot_id(), "probe_seconds": seconds}
    staging.write_text(json.dumps(record) + "\n")
    staging.replace(path)


async def probe_kvm(
    kernel: Path, initrd: Path, timeout: float = PROBE_TIMEOUT
) -> tuple[bool, float]:
    """Boot the guest kernel under KVM; True if it reached user space in time."""
    argv = [
        QEMU,
        *("-M", "microvm,accel=kvm", "-cpu", "host", "-m", "256M", "-smp", "1"),
        *("-nodefaults", "-no-user-config", "-display", "none", "-no-reboot"),
        *("-kernel", str(kernel), "-initrd", str(initrd)),
        *("-append", "console=ttyS0 quiet panic=-1 jjhub.probe"),
        *("-serial", "stdio"),
    ]
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert process.stdout is not None
    try:
        await asyncio.wait_for(process.stdout.readuntil(PROBE_MARKER), timeout)
        works = True
    except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        works = False
    finally:
        await _kill(process)
    return works, time.monotonic() - started


async def _kill(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
    try:
        await asyncio.wait_for(process.wait(), 10)
    except TimeoutError:
        log.warning("kvm probe did not exit after SIGKILL %s", kv(pid=process.pid))
