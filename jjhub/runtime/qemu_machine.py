"""One QEMU microVM on disk: its config, command line, process and saved state.

A machine directory holds everything of one machine:

    machine.json   MachineConfig (what to boot and how)
    disk.qcow2     overlay on the guest image
    ram            guest RAM (memory-backend-file, share=on)
    vmstate        device state while suspended (with state.json)
    qemu.pid qmp.sock agent-N.sock console.log qemu.log   while running

Because guest RAM lives in `ram`, saving a machine writes only device state
(`x-ignore-shared`); suspend, snapshot and fork copy `ram` (a reflink on XFS
or btrfs) instead of streaming memory through QEMU.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any

from jjhub.logs import kv
from jjhub.runtime.errors import IncompatibleSnapshot, RuntimeFailure
from jjhub.runtime.qemu_agent import AGENT_PORTS, PORT_NAME
from jjhub.runtime.qemu_qmp import Qmp, QmpError, qmp_session

log = logging.getLogger(__name__)

QEMU = "qemu-system-x86_64"
STATE_FORMAT = 1
CONFIG_FILE = "machine.json"
STATE_FILE = "state.json"
VMSTATE = "vmstate"
RAM = "ram"
DISK = "disk.qcow2"
START_TIMEOUT = 60.0
MIGRATE_TIMEOUT = 120.0


@dataclass(frozen=True)
class MachineConfig:
    """What one machine boots and how; saved as machine.json."""

    machine_id: str
    memory_mib: int
    cpus: int
    accel: str
    guest_key: str
    kernel: str
    initrd: str
    base_disk: str
    vmgenid: str = field(default_factory=lambda: str(uuid.uuid4()))
    linux_user: str = "developer"
    gateway_public_key: str = ""
    env: dict[str, str] = field(default_factory=dict)
    driver: str = "qemu"
    format: int = STATE_FORMAT

    def save(self, directory: Path) -> None:
        write_json(directory / CONFIG_FILE, asdict(self))

    @classmethod
    def load(cls, directory: Path) -> MachineConfig:
        data = json.loads((directory / CONFIG_FILE).read_text())
        if data.get("driver") != "qemu":
            raise RuntimeFailure(f"{directory} is not a qemu machine")
        return cls(**data)

    def renamed(self, machine_id: str, **changes: Any) -> MachineConfig:
        """A copy for a clone: new id and a new VM generation id."""
        return replace(
            self, machine_id=machine_id, vmgenid=str(uuid.uuid4()), **changes
        )


def write_json(path: Path, data: object) -> None:
    staging = path.with_name(path.name + ".tmp")
    staging.write_text(json.dumps(data, indent=2) + "\n")
    staging.replace(path)


@cache
def qemu_version() -> str:
    """The installed QEMU's version, as state files record it."""
    try:
        text = subprocess.run(
            [QEMU, "--version"], capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError) as error:
        raise RuntimeFailure(
            f"{QEMU} is not usable ({error}); run `apt-get install qemu-system-x86`"
        ) from error
    match = re.search(r"version (\S+)(?: \((.*)\))?", text)
    if match is None:
        raise RuntimeFailure(f"cannot parse `{QEMU} --version`: {text!r}")
    return _version_string(match.group(1), match.group(2) or "")


def _version_string(number: str, package: str) -> str:
    return f"{number} ({package})" if package else number


async def running_qemu_version(qmp: Qmp) -> str:
    info = await qmp.execute("query-version")
    number = "{major}.{minor}.{micro}".format(**info["qemu"])
    return _version_string(number, info.get("package", "").strip())


# Everything here shapes what the guest sees, so it must match between the
# QEMU that saved a state and the one that loads it.
def machine_options(config: MachineConfig) -> list[str]:
    machine = f"microvm,accel={config.accel},acpi=on,x-option-roms=off"
    cpu = "host" if config.accel == "kvm" else "max"
    devices = [
        "virtio-blk-device,drive=root",
        "virtio-net-device,netdev=net0",
        "virtio-rng-device",
        f"virtio-serial-device,max_ports={AGENT_PORTS + 1}",
        *[
            f"virtserialport,chardev=agent{i},name={PORT_NAME.format(index=i)}"
            for i in range(AGENT_PORTS)
        ],
        "vmgenid",
    ]
    return [
        *("-M", machine, "-cpu", cpu, "-smp", str(config.cpus)),
        *("-m", f"{config.memory_mib}M"),
        *[arg for device in devices for arg in ("-device", device)],
        *("-netdev", "user,id=net0"),
        f"guest={config.guest_key}",
    ]


KERNEL_CMDLINE = "console=ttyS0 quiet panic=-1 reboot=t"


@cache
def host_tsc_khz() -> int | None:
    """The host's TSC rate, which a TCG guest's TSC runs at."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("cpu MHz"):
                return round(float(line.split(":")[1]) * 1000)
    return None


def kernel_cmdline(config: MachineConfig) -> str:
    """TCG guests skip TSC calibration: on a busy host it fails and hangs boot."""
    if config.accel != "tcg":
        return KERNEL_CMDLINE
    extra = "tsc=reliable no_timer_check"
    khz = host_tsc_khz()
    if khz:
        extra += f" tsc_early_khz={khz}"
    return f"{KERNEL_CMDLINE} {extra}"


def _path(path: Path | str) -> str:
    """A path inside a QEMU option string, where a comma must be doubled."""
    return str(path).replace(",", ",,")


def qemu_argv(config: MachineConfig, directory: Path, incoming: bool) -> list[str]:
    """The full command line; socket paths are relative to `directory`."""
    memory = f"{config.memory_mib}M"
    machine = f"microvm,accel={config.accel},acpi=on,x-option-roms=off"
    agent_ports = []
    for i in range(AGENT_PORTS):
        agent_ports += [
            *("-chardev", f"socket,id=agent{i},path=agent-{i}.sock,server=on,wait=off"),
            *(
                "-device",
                f"virtserialport,chardev=agent{i},name={PORT_NAME.format(index=i)}",
            ),
        ]
    argv = [
        QEMU,
        *("-name", f"jjhub-{config.machine_id}"),
        *("-M", f"{machine},memory-backend=mem"),
        *("-cpu", "host" if config.accel == "kvm" else "max"),
        *("-smp", str(config.cpus), "-m", memory),
        "-object",
        f"memory-backend-file,id=mem,size={memory},mem-path={_path(directory / RAM)},"
        "share=on",
        *("-nodefaults", "-no-user-config", "-display", "none", "-no-reboot"),
        *("-kernel", config.kernel, "-initrd", config.initrd),
        *("-append", kernel_cmdline(config)),
        *(
            "-chardev",
            f"file,id=console,path={_path(directory / 'console.log')},append=on",
        ),
        *("-serial", "chardev:console"),
        *("-drive", f"id=root,file={_path(directory / DISK)},format=qcow2,if=none"),
        *("-device", "virtio-blk-device,drive=root"),
        *("-netdev", "user,id=net0"),
        *("-device", "virtio-net-device,netdev=net0"),
        *("-device", "virtio-rng-device"),
        *("-device", f"virtio-serial-device,max_ports={AGENT_PORTS + 1}"),
        *agent_ports,
        *("-device", f"vmgenid,guid={config.vmgenid}"),
        *("-qmp", "unix:qmp.sock,server=on,wait=off"),
        *("-pidfile", "qemu.pid", "-D", str(directory / "qemu.log"), "-daemonize"),
    ]
    if incoming:
        argv += ["-S", "-incoming", "defer"]
    return argv


def make_overlay(base: Path, target: Path) -> None:
    result = subprocess.run(
        [
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            "-F",
            "qcow2",
            "-b",
            str(base),
            str(target),
        ],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise RuntimeFailure(
            f"creating the disk overlay failed: {result.stderr.strip()}"
        )


def clone_file(source: Path, target: Path) -> None:
    """Copy a file, as a reflink where the file system can (XFS, btrfs)."""
    result = subprocess.run(
        ["cp", "--reflink=auto", "--sparse=always", str(source), str(target)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise RuntimeFailure(f"copying {source.name} failed: {result.stderr.strip()}")


def allocated_bytes(directory: Path) -> int:
    return sum(p.stat().st_blocks * 512 for p in directory.iterdir() if p.is_file())


# Process ---------------------------------------------------------------------


def read_pid(directory: Path) -> int | None:
    """The pid of the machine's QEMU if it is alive, else None."""
    try:
        pid = int((directory / "qemu.pid").read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    if stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X"):
        return None
    name = f"jjhub-{directory.name}".encode()
    return pid if name in cmdline else None


def _remove_runtime_files(directory: Path) -> None:
    for pattern in ["qemu.pid", "qmp.sock", "agent-*.sock"]:
        for path in directory.glob(pattern):
            path.unlink(missing_ok=True)


async def start(config: MachineConfig, directory: Path, incoming: bool) -> int:
    """Start QEMU detached from this process; returns its pid."""
    _remove_runtime_files(directory)
    argv = qemu_argv(config, directory, incoming)
    process = await asyncio.create_subprocess_exec(
        *argv,
        cwd=directory,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, stderr = await asyncio.wait_for(process.communicate(), START_TIMEOUT)
    except TimeoutError:
        process.kill()
        raise RuntimeFailure(
            f"QEMU did not start within {START_TIMEOUT:.0f} s"
        ) from None
    if process.returncode != 0:
        raise RuntimeFailure(f"QEMU failed to start: {stderr.decode().strip()}")
    pid = read_pid(directory)
    if pid is None:
        raise RuntimeFailure(f"QEMU exited right after starting: {log_tail(directory)}")
    log.info(
        "started qemu %s",
        kv(machine=config.machine_id, pid=pid, accel=config.accel, incoming=incoming),
    )
    return pid


def log_tail(directory: Path, lines: int = 5) -> str:
    with contextlib.suppress(OSError):
        text = (directory / "qemu.log").read_text(errors="replace").strip()
        return " | ".join(text.splitlines()[-lines:]) or "no output"
    return "no output"


async def stop_process(directory: Path, timeout: float = 15.0) -> None:
    """Make sure the machine's QEMU is gone (QMP quit, then SIGKILL)."""
    pid = read_pid(directory)
    if pid is None:
        _remove_runtime_files(directory)
        return
    with contextlib.suppress(OSError, RuntimeFailure, TimeoutError):
        async with qmp_session(directory / "qmp.sock", timeout=2.0) as qmp:
            await asyncio.wait_for(qmp.execute("quit"), 2.0)
    if not await _wait_gone(directory, 3.0):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        if not await _wait_gone(directory, timeout):
            raise RuntimeFailure(f"QEMU pid {pid} did not exit after SIGKILL")
    _remove_runtime_files(directory)


async def _wait_gone(directory: Path, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while read_pid(directory) is not None:
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


# Saved state -----------------------------------------------------------------


async def save_state(qmp: Qmp, config: MachineConfig, target_dir: Path) -> None:
    """Pause the guest and write its device state to `target_dir/vmstate`.

    The guest stays paused: the caller copies `ram` and the disk while nothing
    changes them, then quits QEMU (suspend) or continues it (fork, snapshot).
    """
    await qmp.execute("stop")
    await _ignore_shared(qmp)
    staging = target_dir / (VMSTATE + ".tmp")
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        await qmp.pass_fd("vmstate", fd)
    finally:
        os.close(fd)
    await qmp.execute("migrate", uri="fd:vmstate")
    await _wait_migration(qmp, "saving")
    staging.replace(target_dir / VMSTATE)
    record = {
        "format": STATE_FORMAT,
        "qemu_version": await running_qemu_version(qmp),
        "machine_options": machine_options(config),
        "saved_at": time.time(),
    }
    write_json(target_dir / STATE_FILE, record)


async def _ignore_shared(qmp: Qmp) -> None:
    capability = {"capability": "x-ignore-shared", "state": True}
    await qmp.execute("migrate-set-capabilities", capabilities=[capability])


async def _wait_migration(qmp: Qmp, what: str) -> None:
    deadline = time.monotonic() + MIGRATE_TIMEOUT
    while True:
        info = await qmp.execute("query-migrate")
        status = info.get("status")
        if status == "completed":
            return
        if status in ("failed", "cancelled"):
            raise RuntimeFailure(
                f"{what} the machine state failed: {info.get('error-desc', status)}"
            )
        if time.monotonic() > deadline:
            raise RuntimeFailure(f"{what} the machine state did not finish in time")
        await asyncio.sleep(0.01)


def check_compatible(config: MachineConfig, directory: Path) -> None:
    """Refuse state that this QEMU or this configuration cannot load."""
    try:
        record = json.loads((directory / STATE_FILE).read_text())
    except (OSError, ValueError) as error:
        raise IncompatibleSnapshot(
            f"saved state in {directory} is unreadable: {error}"
        ) from error
    if record.get("format") != STATE_FORMAT:
        raise IncompatibleSnapshot(
            f"saved state format {record.get('format')} is not {STATE_FORMAT}; "
            "it was written by another jjhub version"
        )
    if record.get("qemu_version") != qemu_version():
        raise IncompatibleSnapshot(
            f"saved state was written by QEMU {record.get('qemu_version')} and this "
            f"host has QEMU {qemu_version()}; restore it on a host with that QEMU "
            "or start a fresh workspace"
        )
    if record.get("machine_options") != machine_options(config):
        raise IncompatibleSnapshot(
            "saved state was written for a different machine configuration "
            f"({' '.join(record.get('machine_options') or [])}); it cannot be loaded"
        )
    for path in (config.kernel, config.initrd, config.base_disk):
        if not Path(path).exists():
            raise IncompatibleSnapshot(f"saved state needs {path}, which is gone")


async def load_state(config: MachineConfig, directory: Path) -> int:
    """Start QEMU on `directory`'s ram and vmstate and let the guest run."""
    pid = await start(config, directory, incoming=True)
    try:
        async with qmp_session(directory / "qmp.sock") as qmp:
            await _ignore_shared(qmp)
            fd = os.open(directory / VMSTATE, os.O_RDONLY | os.O_CLOEXEC)
            try:
                await qmp.pass_fd("vmstate", fd)
            finally:
                os.close(fd)
            await qmp.execute("migrate-incoming", uri="fd:vmstate")
            await _wait_incoming(qmp)
            await qmp.execute("cont")
    except (OSError, QmpError, RuntimeFailure) as error:
        detail = log_tail(directory)
        await stop_process(directory)
        raise RuntimeFailure(
            f"loading the machine state failed: {error}; {detail}"
        ) from error
    return pid


async def _wait_incoming(qmp: Qmp) -> None:
    deadline = time.monotonic() + MIGRATE_TIMEOUT
    while True:
        status = (await qmp.execute("query-status"))["status"]
        if status in ("paused", "running", "postmigrate"):
            return
        if status != "inmigrate":
            raise RuntimeFailure(f"QEMU is {status} after loading state")
        if time.monotonic() > deadline:
            raise RuntimeFailure("loading the machine state did not finish in time")
        await asyncio.sleep(0.01)


def discard_state(directory: Path) -> None:
    for name in (VMSTATE, STATE_FILE, VMSTATE + ".tmp"):
        (directory / name).unlink(missing_ok=True)


def copy_machine_files(source: Path, target: Path, names: list[str]) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for name in names:
        clone_file(source / name, target / name)


def remove_tree(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)
