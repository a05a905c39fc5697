"""Choosing QEMU's accelerator: KVM where a guest kernel really runs, else TCG.

`/dev/kvm` existing is not enough: under some nested hypervisors KVM accepts
the VM and then hangs as soon as a guest kernel starts. The probe therefore
boots the host's Debian kernel, without a root file system, and waits for the
panic that ends its initialisation, giving up after `PROBE_TIMEOUT` seconds.
The answer is cached per host boot in the image directory and logged once per
process, with QEMU's own error when the probe fails.

`JJHUB_QEMU_ACCEL=kvm|tcg|auto` overrides the choice (`auto` by default).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import select
import subprocess
import time
from pathlib import Path
from typing import IO, NamedTuple

from jjhub.logs import kv
from jjhub.runtime.errors import RuntimeFailure

log = logging.getLogger(__name__)

ACCEL_ENV = "JJHUB_QEMU_ACCEL"
CHOICES = ("auto", "kvm", "tcg")
PROBE_TIMEOUT = 10.0
PROBE_MARKER = b"Kernel panic"
CACHE_FILE = "qemu-accel.json"
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


async def choose_accel(accel: str, cache_dir: Path) -> str:
    """`kvm` or `tcg` for new machines, probing KVM at most once per boot."""
    return await asyncio.to_thread(_choose, requested_accel(accel), cache_dir)


def kvm_works(cache_dir: Path) -> bool:
    """Whether new machines would run under KVM (for `runtime = auto`)."""
    return _choose(requested_accel(), cache_dir) == "kvm"


def _choose(choice: str, cache_dir: Path) -> str:
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
    cache = cache_dir / CACHE_FILE
    cached = _read_cache(cache)
    if cached is not None:
        _log_once(cached, "cached probe")
        return cached
    probe = probe_kvm()
    result = "kvm" if probe.works else "tcg"
    _write_cache(cache, result, probe.seconds)
    verdict = "passed" if probe.works else "failed"
    reason = f"probe {verdict} in {probe.seconds:.1f} s"
    if not probe.works:
        reason += f": {probe.detail}"
    _log_once(result, reason)
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


class Probe(NamedTuple):
    works: bool
    seconds: float
    detail: str
    """Why it failed, in QEMU's own last words, or how long it waited."""


def probe_kvm(timeout: float = PROBE_TIMEOUT, cpu: str = "host") -> Probe:
    """Boot the host's Debian kernel under KVM, without a root file system.

    Reaching the panic about the missing root proves the kernel ran through
    its whole initialisation; a hang or an error means KVM is not usable.
    """
    from jjhub.runtime.guest_image import find_host_kernel

    kernel = find_host_kernel().vmlinuz
    argv = [
        QEMU,
        *("-M", "microvm,accel=kvm", "-cpu", cpu, "-m", "256M", "-smp", "1"),
        *("-nodefaults", "-no-user-config", "-display", "none", "-no-reboot"),
        *("-kernel", str(kernel), "-append", "console=ttyS0 panic=-1"),
        *("-serial", "stdio"),
    ]
    started = time.monotonic()
    process = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    assert process.stdout is not None
    try:
        works, output = _wait_for_marker(process.stdout, started + timeout)
    finally:
        process.kill()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            log.warning("kvm probe did not exit after SIGKILL %s", kv(pid=process.pid))
        process.stdout.close()
    seconds = time.monotonic() - started
    return Probe(works, seconds, _failure_detail(works, output, process, timeout))


def _wait_for_marker(stream: IO[bytes], deadline: float) -> tuple[bool, bytes]:
    """Whether the panic marker appeared in time, and the output's tail."""
    output = b""
    while (remaining := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([stream], [], [], remaining)
        if not ready:
            break
        chunk = os.read(stream.fileno(), 65536)
        if not chunk:
            break
        output = output[-2048:] + chunk
        if PROBE_MARKER in output:
            return True, output
    return False, output


def _failure_detail(
    works: bool, output: bytes, process: subprocess.Popen[bytes], timeout: float
) -> str:
    if works:
        return ""
    if process.returncode not in (None, -9):
        lines = output.decode(errors="replace").strip().splitlines()
        said = [line.strip() for line in lines if line.startswith("qemu")][-2:]
        return "; ".join(said) or f"qemu exited with status {process.returncode}"
    return f"the guest kernel did not finish booting in {timeout:.0f} s under KVM"
