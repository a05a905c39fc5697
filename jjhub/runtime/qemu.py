"""The QEMU driver: one microVM per workspace, memory kept across every verb.

Guest RAM is a shared file in the machine directory, so:

- suspend pauses the guest, writes its device state (tens of KB) and quits
  QEMU; nothing runs while a machine is suspended;
- resume starts a new QEMU on the same RAM file with `-incoming defer`;
- fork and snapshot pause the source for as long as it takes to write the
  device state and reflink the RAM file and the disk overlay, then let it go on.

Machines outlive the Python process: QEMU daemonizes, and `list`/`inspect`
find machines again from their directories and pid files. The SSH gateway and
`exec` reach the guest through virtio-serial ports (`qemu_agent`), so no host
port is shared and forks never clash. See docs/runtime-qemu.md.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
import logging
import os
import re
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path

from jjhub.logs import kv
from jjhub.runtime import accel as accel_module
from jjhub.runtime import qemu_agent
from jjhub.runtime.base import (
    Capabilities,
    ExecResult,
    MachineInfo,
    MachineSpec,
    MachineState,
    SnapshotInfo,
    SshStream,
)
from jjhub.runtime.errors import (
    IncompatibleSnapshot,
    MachineNotFound,
    RuntimeFailure,
    SnapshotNotFound,
)
from jjhub.runtime.guest_image import GuestImage, ensure_guest_image
from jjhub.runtime.qemu_machine import (
    CONFIG_FILE,
    DISK,
    RAM,
    STATE_FILE,
    VMSTATE,
    MachineConfig,
    allocated_bytes,
    check_compatible,
    copy_machine_files,
    discard_state,
    load_state,
    make_overlay,
    read_pid,
    remove_tree,
    save_state,
    start,
    stop_process,
    write_json,
)
from jjhub.runtime.qemu_qmp import qmp_session

log = logging.getLogger(__name__)

BOOT_TIMEOUT = {"kvm": 60.0, "tcg": 300.0}
SSH_TIMEOUT = 60.0
SNAPSHOT_FILE = "snapshot.json"

# Applied after every boot, fork and restore: the hostname, the gateway's key,
# the environment, and fresh randomness so that clones do not share identity.
IDENTITY_SCRIPT = r"""
set -e
name="$1" user="$2" key="$3" seed="$4" env="$5" stamp="$6"
# The kernel takes the machine id as it is; hostname(1) refuses its "_".
printf '%s' "$name" > /proc/sys/kernel/hostname
echo "$name" > /etc/hostname
# UNKNOWN is how sshd -i names its peer; PAM resolves it, so answer locally.
printf '127.0.0.1 localhost\n127.0.1.1 %s\n::1 localhost\n127.0.0.1 UNKNOWN\n' \
    "$name" > /etc/hosts
printf '%s' "$seed" > /dev/urandom
printf '%s\n' "$(echo "$seed" | cut -c1-32)" > /etc/machine-id
mkdir -p /etc/ssh/authorized_keys
for who in "$user" root; do
    printf '%s\n' "$key" > "/etc/ssh/authorized_keys/$who"
    chmod 644 "/etc/ssh/authorized_keys/$who"
done
printf '%s' "$env" > /etc/environment
date -u -s "@$stamp" > /dev/null
"""


def _hostname(machine_id: str) -> str:
    """The machine id, as runc machines use it (the kernel takes `_`)."""
    name = re.sub(r"[^a-z0-9_-]", "-", machine_id.lower()).strip("-")
    return name[:63] or "workspace"


def _is_qemu_machine(directory: Path) -> bool:
    """True for a machine directory of this driver (runc's share the layout)."""
    try:
        data = json.loads((directory / CONFIG_FILE).read_text())
        return bool(data.get("driver") == "qemu")
    except (OSError, ValueError, AttributeError):
        return False


def _env_file(env: dict[str, str]) -> str:
    return "".join(f"{key}={value}\n" for key, value in sorted(env.items()))


class QemuRuntime:
    """Workspaces as QEMU microVMs whose memory survives suspend, fork, snapshot."""

    name = "qemu"
    capabilities = Capabilities(
        driver="qemu",
        suspend_keeps_memory=True,
        fork_keeps_memory=True,
        snapshot_keeps_memory=True,
    )

    # The host as seen from a guest: QEMU's user-mode network gateway.
    host_address: str | None = "10.0.2.2"

    def __init__(self, data_dir: Path, image_dir: Path, accel: str = "auto"):
        self.data_dir = Path(data_dir)
        self.image_dir = Path(image_dir)
        self.requested_accel = accel_module.requested_accel(accel)
        self._accel: str | None = None
        self._image: GuestImage | None = None
        self._prepare_lock = asyncio.Lock()
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    # Paths -------------------------------------------------------------------

    @property
    def machines_dir(self) -> Path:
        return self.data_dir / "machines"

    @property
    def snapshots_dir(self) -> Path:
        return self.data_dir / "snapshots"

    def machine_dir(self, machine_id: str) -> Path:
        return self.machines_dir / machine_id

    def _existing(self, machine_id: str) -> Path:
        directory = self.machine_dir(machine_id)
        if not _is_qemu_machine(directory):
            raise MachineNotFound(f"no qemu machine {machine_id}")
        return directory

    @contextlib.asynccontextmanager
    async def _locked(self, machine_id: str) -> AsyncIterator[None]:
        async with self._locks[machine_id]:
            yield

    # Preparation -------------------------------------------------------------

    async def prepare(self) -> None:
        """Build the guest image and choose KVM or TCG (both cached)."""
        async with self._prepare_lock:
            if self._image is None:
                self._image = await ensure_guest_image(self.image_dir)
            if self._accel is None:
                self._accel = await accel_module.choose_accel(
                    self.requested_accel, self.data_dir
                )
        self.machines_dir.mkdir(parents=True, exist_ok=True)
        self.snapshots_dir.mkdir(parents=True, exist_ok=True)

    @property
    def accel(self) -> str:
        if self._accel is None:
            raise RuntimeFailure("QemuRuntime.prepare() has not run")
        return self._accel

    async def _new_config(self, spec: MachineSpec) -> MachineConfig:
        await self.prepare()
        assert self._image is not None
        return MachineConfig(
            machine_id=spec.machine_id,
            memory_mib=spec.size.memory_mib,
            cpus=max(1, round(spec.size.cpus)),
            accel=self.accel,
            guest_key=self._image.key,
            kernel=str(self._image.kernel),
            initrd=str(self._image.initrd),
            base_disk=str(self._image.disk),
            linux_user=spec.linux_user,
            gateway_public_key=spec.gateway_public_key,
            env=dict(spec.env),
        )

    # Lifecycle ---------------------------------------------------------------

    async def create(self, spec: MachineSpec, snapshot_id: str | None = None) -> None:
        directory = self.machine_dir(spec.machine_id)
        if directory.exists():
            raise RuntimeFailure(f"machine {spec.machine_id} already exists")
        started = time.monotonic()
        async with self._locked(spec.machine_id):
            try:
                if snapshot_id is None:
                    config = await self._new_config(spec)
                    await self._boot(config, directory, fresh_disk=True)
                else:
                    await self._restore(spec, snapshot_id, directory)
            except BaseException:
                await self._destroy(directory)
                raise
        log.info(
            "created machine %s",
            kv(
                machine=spec.machine_id,
                snapshot=snapshot_id or "",
                seconds=round(time.monotonic() - started, 2),
            ),
        )

    async def _boot(
        self, config: MachineConfig, directory: Path, fresh_disk: bool
    ) -> None:
        """Cold-boot a machine from its disk and wait until sshd answers."""
        directory.mkdir(parents=True, exist_ok=True)
        if fresh_disk:
            make_overlay(Path(config.base_disk), directory / DISK)
        (directory / RAM).unlink(missing_ok=True)
        discard_state(directory)
        config.save(directory)
        (directory / "console.log").unlink(missing_ok=True)
        await start(config, directory, incoming=False)
        await qemu_agent.wait_booted(directory, BOOT_TIMEOUT[config.accel])
        await self._apply_identity(config, directory)
        await self._wait_ssh(directory)

    async def _apply_identity(self, config: MachineConfig, directory: Path) -> None:
        argv = [
            "sh",
            "-c",
            IDENTITY_SCRIPT,
            "jjhub-identity",
            _hostname(config.machine_id),
            config.linux_user,
            config.gateway_public_key,
            os.urandom(32).hex(),
            _env_file(config.env),
            str(int(time.time())),
        ]
        result = await qemu_agent.run(directory, argv)
        if result.exit_code != 0:
            raise RuntimeFailure(
                f"setting up machine {config.machine_id} failed: "
                f"{result.stderr.decode(errors='replace').strip()}"
            )

    async def _wait_ssh(self, directory: Path) -> None:
        deadline = time.monotonic() + SSH_TIMEOUT
        while True:
            with contextlib.suppress(RuntimeFailure, OSError, TimeoutError):
                stream = await qemu_agent.open_stream(directory)
                try:
                    banner = await asyncio.wait_for(stream.reader.readline(), 10)
                finally:
                    await stream.close()
                if banner.startswith(b"SSH-"):
                    return
            if time.monotonic() > deadline:
                raise RuntimeFailure(
                    f"sshd in machine {directory.name} did not answer within "
                    f"{SSH_TIMEOUT:.0f} s; see {directory / 'console.log'}"
                )
            await asyncio.sleep(0.5)

    async def suspend(self, machine_id: str) -> None:
        """Save device state beside the RAM file and stop QEMU entirely."""
        directory = self._existing(machine_id)
        async with self._locked(machine_id):
            if read_pid(directory) is None:
                if (directory / VMSTATE).exists():
                    return
                raise RuntimeFailure(f"machine {machine_id} is not running")
            started = time.monotonic()
            config = MachineConfig.load(directory)
            async with qmp_session(directory / "qmp.sock") as qmp:
                await save_state(qmp, config, directory)
            await stop_process(directory)
        log.info(
            "suspended machine %s",
            kv(machine=machine_id, seconds=round(time.monotonic() - started, 3)),
        )

    async def resume(self, machine_id: str) -> None:
        """Start a new QEMU on the saved state; processes continue as they were."""
        directory = self._existing(machine_id)
        async with self._locked(machine_id):
            if read_pid(directory) is not None:
                return
            if not (directory / VMSTATE).exists():
                raise RuntimeFailure(
                    f"machine {machine_id} is stopped without saved state; "
                    "restart it instead"
                )
            started = time.monotonic()
            config = MachineConfig.load(directory)
            check_compatible(config, directory)
            await load_state(config, directory)
            discard_state(directory)
            await self._sync_clock(directory)
        log.info(
            "resumed machine %s",
            kv(machine=machine_id, seconds=round(time.monotonic() - started, 3)),
        )

    async def _sync_clock(self, directory: Path) -> None:
        """The guest clock stood still while suspended; set it from the host."""
        argv = ["date", "-u", "-s", f"@{time.time():.3f}"]
        result = await qemu_agent.run(directory, argv, ack_timeout=60.0)
        if result.exit_code != 0:
            log.warning("could not set guest clock %s", kv(machine=directory.name))

    async def delete(self, machine_id: str) -> None:
        directory = self.machine_dir(machine_id)
        async with self._locked(machine_id):
            await self._destroy(directory)
        self._locks.pop(machine_id, None)
        log.info("deleted machine %s", kv(machine=machine_id))

    async def _destroy(self, directory: Path) -> None:
        if not directory.exists():
            return
        await stop_process(directory)
        await asyncio.to_thread(remove_tree, directory)

    async def restart(self, spec: MachineSpec) -> None:
        """Boot again from the machine's own disk; memory is not kept."""
        directory = self._existing(spec.machine_id)
        async with self._locked(spec.machine_id):
            await stop_process(directory)
            old = MachineConfig.load(directory)
            config = await self._new_config(spec)
            if config.guest_key != old.guest_key:
                # The disk overlay is bound to the image it was made on.
                config = MachineConfig.load(directory)
            await self._boot(config, directory, fresh_disk=False)
        log.info("restarted machine %s", kv(machine=spec.machine_id))

    # Inspection --------------------------------------------------------------

    async def inspect(self, machine_id: str) -> MachineInfo:
        directory = self.machine_dir(machine_id)
        if not _is_qemu_machine(directory):
            return MachineInfo(machine_id, MachineState.MISSING)
        pid = read_pid(directory)
        if pid is not None:
            return MachineInfo(machine_id, MachineState.RUNNING, pid)
        if (directory / VMSTATE).exists():
            return MachineInfo(machine_id, MachineState.SUSPENDED)
        return MachineInfo(machine_id, MachineState.STOPPED)

    async def list(self) -> builtins.list[MachineInfo]:
        if not self.machines_dir.exists():
            return []
        found = []
        for directory in sorted(self.machines_dir.iterdir()):
            if _is_qemu_machine(directory):
                found.append(await self.inspect(directory.name))
        return found

    # Fork and snapshot -------------------------------------------------------

    async def fork(
        self, machine_id: str, new_specs: builtins.list[MachineSpec]
    ) -> None:
        """Running copies that continue from this moment; the source goes on."""
        source = self._existing(machine_id)
        targets = [self.machine_dir(spec.machine_id) for spec in new_specs]
        for spec, target in zip(new_specs, targets, strict=True):
            if target.exists():
                raise RuntimeFailure(f"machine {spec.machine_id} already exists")
        started = time.monotonic()
        try:
            async with self._locked(machine_id):
                config = MachineConfig.load(source)
                await self._capture(source, config, targets)
            paused = time.monotonic() - started
            for spec, target in zip(new_specs, targets, strict=True):
                clone = config.renamed(
                    spec.machine_id,
                    linux_user=spec.linux_user,
                    gateway_public_key=spec.gateway_public_key,
                    env=dict(spec.env),
                )
                async with self._locked(spec.machine_id):
                    await self._start_clone(clone, target)
        except BaseException:
            for target in targets:
                await self._destroy(target)
            raise
        log.info(
            "forked machine %s",
            kv(
                machine=machine_id,
                copies=len(new_specs),
                paused_seconds=round(paused, 3),
                seconds=round(time.monotonic() - started, 3),
            ),
        )

    async def _capture(
        self, source: Path, config: MachineConfig, targets: builtins.list[Path]
    ) -> None:
        """Copy RAM, disk and device state of `source` into each target.

        A running source is paused only while its state is written and its
        files are reflinked; a suspended one is copied as it lies.
        """
        for target in targets:
            target.mkdir(parents=True)
        names = [RAM, DISK, VMSTATE, STATE_FILE]
        if read_pid(source) is None:
            if not (source / VMSTATE).exists():
                raise RuntimeFailure(f"machine {source.name} has no state to copy")
            for target in targets:
                await asyncio.to_thread(copy_machine_files, source, target, names)
            return
        first = targets[0]
        async with qmp_session(source / "qmp.sock") as qmp:
            try:
                await save_state(qmp, config, first)
                await asyncio.to_thread(copy_machine_files, source, first, [RAM, DISK])
                for target in targets[1:]:
                    await asyncio.to_thread(copy_machine_files, first, target, names)
            finally:
                await qmp.execute("cont")

    async def _start_clone(self, config: MachineConfig, directory: Path) -> None:
        """Run copied state as a new machine with its own identity."""
        check_compatible(config, directory)
        config.save(directory)
        await load_state(config, directory)
        discard_state(directory)
        await self._apply_identity(config, directory)

    async def snapshot(self, machine_id: str, snapshot_id: str) -> SnapshotInfo:
        """Memory, disk and device state in a directory that outlives the source."""
        source = self._existing(machine_id)
        target = self.snapshots_dir / snapshot_id
        if target.exists():
            raise RuntimeFailure(f"snapshot {snapshot_id} already exists")
        started = time.monotonic()
        try:
            async with self._locked(machine_id):
                config = MachineConfig.load(source)
                await self._capture(source, config, [target])
            config.save(target)
            record = {
                "driver": "qemu",
                "snapshot_id": snapshot_id,
                "source": machine_id,
            }
            write_json(target / SNAPSHOT_FILE, record | {"created_at": time.time()})
        except BaseException:
            remove_tree(target)
            raise
        info = SnapshotInfo(snapshot_id, target, allocated_bytes(target), True)
        log.info(
            "snapshotted machine %s",
            kv(
                machine=machine_id,
                snapshot=snapshot_id,
                bytes=info.size_bytes,
                seconds=round(time.monotonic() - started, 3),
            ),
        )
        return info

    async def _restore(
        self, spec: MachineSpec, snapshot_id: str, directory: Path
    ) -> None:
        snapshot = self.snapshots_dir / snapshot_id
        if not snapshot.is_dir():
            raise SnapshotNotFound(f"no snapshot {snapshot_id}")
        if not (snapshot / SNAPSHOT_FILE).exists():
            raise IncompatibleSnapshot(
                f"snapshot {snapshot_id} was not made by the qemu driver"
            )
        try:
            saved = MachineConfig.load(snapshot)
        except (RuntimeFailure, TypeError, ValueError) as error:
            raise IncompatibleSnapshot(
                f"snapshot {snapshot_id} was not made by this qemu driver: {error}"
            ) from error
        if saved.accel == "kvm" and not accel_module.kvm_usable():
            raise IncompatibleSnapshot(
                f"snapshot {snapshot_id} was made under KVM and this host has none"
            )
        config = saved.renamed(
            spec.machine_id,
            linux_user=spec.linux_user,
            gateway_public_key=spec.gateway_public_key,
            env=dict(spec.env),
        )
        check_compatible(config, snapshot)
        names = [RAM, DISK, VMSTATE, STATE_FILE]
        await asyncio.to_thread(copy_machine_files, snapshot, directory, names)
        await self._start_clone_unlocked(config, directory)

    async def _start_clone_unlocked(
        self, config: MachineConfig, directory: Path
    ) -> None:
        config.save(directory)
        await load_state(config, directory)
        discard_state(directory)
        await self._apply_identity(config, directory)

    async def delete_snapshot(self, snapshot_id: str) -> None:
        """Remove a snapshot; removing one that does not exist is not an error."""
        target = self.snapshots_dir / snapshot_id
        await asyncio.to_thread(remove_tree, target)
        log.info("deleted snapshot %s", kv(snapshot=snapshot_id))

    # Guest access ------------------------------------------------------------

    async def exec(
        self, machine_id: str, argv: builtins.list[str], user: str = "root"
    ) -> ExecResult:
        directory = self._require_running(machine_id)
        return await qemu_agent.run(directory, argv, user=user)

    async def open_ssh(self, machine_id: str) -> SshStream:
        directory = self._require_running(machine_id)
        return await qemu_agent.open_stream(directory)

    def _require_running(self, machine_id: str) -> Path:
        directory = self._existing(machine_id)
        if read_pid(directory) is None:
            raise RuntimeFailure(f"machine {machine_id} is not running")
        return directory
