"""The runc driver: one OCI container per machine, rooted on an overlay.

Layout under the data directory:

    runc/                   runc's own state (`runc --root`)
    machines/<id>/          bundle: config.json, machine.json, upper/, work/,
                            rootfs/ (overlay mount), boot/, console.log
    snapshots/<id>/         upper/ (copy of a machine's upper) and meta.json
    network/leases.json     machine addresses

Containers are started detached, so machines outlive the server process; the
server finds them again through `runc list`. Suspend freezes the cgroup, so
memory stays; fork and snapshot copy the overlay's upper dir (reflink where
the disk can) and boot fresh processes on it, so they keep files only.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import hashlib
import json
import logging
import os
import re
import time
import uuid
from pathlib import Path
from typing import Any

from jjhub.logs import kv
from jjhub.runtime import runc_config
from jjhub.runtime.base import (
    Capabilities,
    ExecResult,
    MachineInfo,
    MachineSpec,
    MachineState,
    SnapshotInfo,
    SshStream,
)
from jjhub.runtime.copying import copy_tree, disk_usage, remove_tree, sync_filesystem
from jjhub.runtime.errors import (
    IncompatibleSnapshot,
    MachineNotFound,
    RuntimeFailure,
    SnapshotNotFound,
)
from jjhub.runtime.images import ensure_shifted_rootfs
from jjhub.runtime.network import HostNetwork, host_nameserver, run
from jjhub.runtime.runc_config import UID_OFFSET, ExecUser

log = logging.getLogger(__name__)

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_STATES = {
    "running": MachineState.RUNNING,
    "paused": MachineState.SUSPENDED,
    "created": MachineState.STOPPED,
    "stopped": MachineState.STOPPED,
}
READY_TIMEOUT = 60.0


class RuncRuntime:
    """Machines as runc containers; see the module docstring for the layout."""

    name = "runc"
    capabilities = Capabilities(
        driver="runc",
        suspend_keeps_memory=True,
        fork_keeps_memory=False,
        snapshot_keeps_memory=False,
    )

    def __init__(
        self, data_dir: Path, image_dir: Path, network_cidr: str = "10.203.0.0/22"
    ) -> None:
        self.data_dir = Path(data_dir)
        self.image_dir = Path(image_dir)
        self.runc_root = self.data_dir / "runc"
        self.machines_dir = self.data_dir / "machines"
        self.snapshots_dir = self.data_dir / "snapshots"
        self.network = HostNetwork(network_cidr, self.data_dir / "network")
        tag = hashlib.sha256(str(self.data_dir.resolve()).encode()).hexdigest()[:8]
        self.cgroup_parent = f"jjhub-{tag}"
        # The Runtime protocol's name for the gateway: where the host is.
        self.host_address: str | None = str(self.network.gateway)

    @property
    def gateway_address(self) -> str:
        """The host's address as machines see it (for `localhost` URLs)."""
        return str(self.network.gateway)

    async def prepare(self) -> None:
        for path in (self.machines_dir, self.snapshots_dir):
            path.mkdir(parents=True, exist_ok=True)
        await ensure_shifted_rootfs(self.image_dir, UID_OFFSET)
        await self.network.ensure()

    async def remove_host_network(self) -> bool:
        """Remove this CIDR's bridge and NAT table if no machine uses them.

        The empty parent cgroups of this data directory go too, so a server
        that is gone for good leaves nothing on the host.
        """
        for parent in Path("/sys/fs/cgroup").glob(f"*/{self.cgroup_parent}"):
            with contextlib.suppress(OSError):
                parent.rmdir()  # only succeeds when no machine is inside
        return await self.network.remove()

    # Lifecycle

    async def create(self, spec: MachineSpec, snapshot_id: str | None = None) -> None:
        _check_spec(spec)
        machine = self._dir(spec.machine_id)
        started = time.monotonic()
        # Claimed before the try: a failure must never remove another
        # create's machine of the same id.
        _claim_dir(machine, f"machine {spec.machine_id}")
        try:
            if snapshot_id is None:
                lower = str(await ensure_shifted_rootfs(self.image_dir, UID_OFFSET))
                _make_upper(machine / "upper")
            else:
                lower = self._snapshot_lower(snapshot_id)
                await copy_tree(
                    self._snapshot_dir(snapshot_id) / "upper", machine / "upper"
                )
            _write_json(machine / "machine.json", _machine_record(spec, lower))
            await self._boot(spec)
        except BaseException as exc:
            await self._cleanup_failed(spec.machine_id, exc)
            if _passes_through(exc):
                raise
            raise RuntimeFailure(
                f"creating machine {spec.machine_id} failed: {exc}"
            ) from exc
        log.info(
            "created machine %s",
            kv(
                machine=spec.machine_id,
                snapshot=snapshot_id or "-",
                seconds=_since(started),
            ),
        )

    async def restart(self, spec: MachineSpec) -> None:
        """Boot again on the machine's own upper dir, after its container went."""
        _check_spec(spec)
        machine = self._existing_dir(spec.machine_id)
        started = time.monotonic()
        await self._teardown(spec.machine_id)
        record = _read_json(machine / "machine.json")
        _write_json(machine / "machine.json", _machine_record(spec, record["lower"]))
        try:
            await self._boot(spec)
        except BaseException as exc:
            await self._teardown(spec.machine_id)
            if _passes_through(exc):
                raise
            raise RuntimeFailure(
                f"restarting machine {spec.machine_id} failed: {exc}"
            ) from exc
        log.info(
            "restarted machine %s",
            kv(machine=spec.machine_id, seconds=_since(started)),
        )

    async def suspend(self, machine_id: str) -> None:
        state = await self._require_state(machine_id)
        if state == MachineState.SUSPENDED:
            return
        if state != MachineState.RUNNING:
            raise RuntimeFailure(f"cannot suspend machine {machine_id}: it is {state}")
        started = time.monotonic()
        await self._runc("pause", machine_id)
        log.info("suspended machine %s", kv(machine=machine_id, ms=_ms(started)))

    async def resume(self, machine_id: str) -> None:
        state = await self._require_state(machine_id)
        if state == MachineState.RUNNING:
            return
        if state != MachineState.SUSPENDED:
            raise RuntimeFailure(f"cannot resume machine {machine_id}: it is {state}")
        started = time.monotonic()
        await self._runc("resume", machine_id)
        log.info("resumed machine %s", kv(machine=machine_id, ms=_ms(started)))

    async def delete(self, machine_id: str) -> None:
        started = time.monotonic()
        existed = self._dir(machine_id).exists()
        await self._destroy(machine_id)
        if existed:
            log.info(
                "deleted machine %s", kv(machine=machine_id, seconds=_since(started))
            )

    async def inspect(self, machine_id: str) -> MachineInfo:
        state = await self._runc_state(machine_id)
        if state is None:
            return MachineInfo(machine_id, MachineState.MISSING)
        status = _STATES.get(state["status"], MachineState.STOPPED)
        pid = state.get("pid") or None
        return MachineInfo(
            machine_id, status, pid if status != MachineState.STOPPED else None
        )

    async def list(self) -> builtins.list[MachineInfo]:
        """Every machine with a directory or a container, by id."""
        known: dict[str, MachineInfo] = {}
        if self.runc_root.exists():
            out = await self._runc("list", "--format", "json")
            for item in json.loads(out or "null") or []:
                status = _STATES.get(item["status"], MachineState.STOPPED)
                known[item["id"]] = MachineInfo(item["id"], status, item.get("pid"))
        if self.machines_dir.exists():
            for path in self.machines_dir.iterdir():
                if path.name not in known:
                    known[path.name] = MachineInfo(path.name, MachineState.MISSING)
        return sorted(known.values(), key=lambda info: info.machine_id)

    # Copies

    async def fork(
        self, machine_id: str, new_specs: builtins.list[MachineSpec]
    ) -> None:
        """Copy the source's upper dir once while frozen, then boot the copies.

        The first copy is taken from the frozen source; the others are copied
        from that one after the source thaws, so freeze time does not grow
        with the number of forks.
        """
        source = self._existing_dir(machine_id)
        lower = _read_json(source / "machine.json")["lower"]
        ids = [spec.machine_id for spec in new_specs]
        if not new_specs or len(set(ids)) != len(ids) or machine_id in ids:
            raise RuntimeFailure(f"fork needs distinct new machine ids, got {ids}")
        for spec in new_specs:
            _check_spec(spec)
        started = time.monotonic()
        made: builtins.list[str] = []
        try:
            for spec in new_specs:
                _claim_dir(self._dir(spec.machine_id), f"machine {spec.machine_id}")
                made.append(spec.machine_id)
                _write_json(
                    self._dir(spec.machine_id) / "machine.json",
                    _machine_record(spec, lower),
                )
            first = self._dir(new_specs[0].machine_id) / "upper"
            frozen_ms = await self._copy_frozen(machine_id, first)
            await asyncio.gather(
                *(
                    copy_tree(first, self._dir(spec.machine_id) / "upper")
                    for spec in new_specs[1:]
                )
            )
            await _gather_all(self._boot(spec) for spec in new_specs)
        except BaseException as exc:
            log.warning(
                "fork failed, removing its copies %s",
                kv(machine=machine_id, forks=",".join(made), error=exc),
            )
            for new_id in made:
                await asyncio.shield(self._destroy(new_id))
            if _passes_through(exc):
                raise
            raise RuntimeFailure(f"forking machine {machine_id} failed: {exc}") from exc
        log.info(
            "forked machine %s",
            kv(
                machine=machine_id,
                forks=",".join(made),
                frozen_ms=frozen_ms,
                seconds=_since(started),
            ),
        )

    async def snapshot(self, machine_id: str, snapshot_id: str) -> SnapshotInfo:
        """A durable copy of the machine's files, taken while it is frozen."""
        source = self._existing_dir(machine_id)
        if not _ID.match(snapshot_id):
            raise RuntimeFailure(f"invalid snapshot id {snapshot_id!r}")
        target = self._snapshot_dir(snapshot_id)
        started = time.monotonic()
        _claim_dir(target, f"snapshot {snapshot_id}", mode=0o700)
        try:
            frozen_ms = await self._copy_frozen(machine_id, target / "upper")
            meta = {
                "snapshot_id": snapshot_id,
                "driver": self.name,
                "source": machine_id,
                "lower": _read_json(source / "machine.json")["lower"],
                "created_at": time.time(),
            }
            _write_json(target / "meta.json", meta)
            size = await disk_usage(target / "upper")
        except BaseException as exc:
            await remove_tree(target)
            if _passes_through(exc):
                raise
            raise RuntimeFailure(
                f"snapshotting machine {machine_id} failed: {exc}"
            ) from exc
        log.info(
            "snapshotted machine %s",
            kv(
                machine=machine_id,
                snapshot=snapshot_id,
                size_bytes=size,
                frozen_ms=frozen_ms,
                seconds=_since(started),
            ),
        )
        return SnapshotInfo(snapshot_id, target, size, keeps_memory=False)

    async def delete_snapshot(self, snapshot_id: str) -> None:
        """Remove a snapshot; machines restored from it keep their own copies."""
        target = self._snapshot_dir(snapshot_id)
        if target.exists():
            await remove_tree(target)
            log.info("deleted snapshot %s", kv(snapshot=snapshot_id))

    # Inside the machine

    async def exec(
        self,
        machine_id: str,
        argv: builtins.list[str],
        user: str = "root",
        timeout: float | None = None,
    ) -> ExecResult:
        """Run a command inside and collect its output."""
        proc, spec_file = await self._spawn(
            machine_id, argv, user, stdin=asyncio.subprocess.DEVNULL
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout)
        except BaseException:
            await _stop(proc)
            raise
        finally:
            spec_file.unlink(missing_ok=True)
        assert proc.returncode is not None
        return ExecResult(proc.returncode, out, err)

    async def open_ssh(self, machine_id: str) -> SshStream:
        """`sshd -i` inside, speaking SSH over the exec's stdin and stdout.

        sshd's stdout is a pipe of our own rather than asyncio.subprocess's,
        whose reader receives each chunk a loop turn after it was read; on
        our own pipe the reader's buffer is always all there is, so the
        gateway can take the reading over without losing bytes in flight.
        """
        read_end, write_end = os.pipe()
        try:
            proc, spec_file = await self._spawn(
                machine_id,
                ["/usr/sbin/sshd", "-i"],
                "root",
                stdin=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
                stdout=write_end,
            )
        except BaseException:
            os.close(read_end)
            raise
        finally:
            os.close(write_end)
        assert proc.stdin is not None
        reader = asyncio.StreamReader(limit=2**20)
        try:
            transport, _ = await asyncio.get_running_loop().connect_read_pipe(
                lambda: asyncio.StreamReaderProtocol(reader),
                os.fdopen(read_end, "rb", buffering=0),
            )
        except BaseException:
            await _stop(proc)
            spec_file.unlink(missing_ok=True)
            raise

        async def closer() -> None:
            await _stop(proc, grace=2.0)
            transport.close()
            spec_file.unlink(missing_ok=True)

        return SshStream(reader=reader, writer=proc.stdin, closer=closer)

    # Internals: boot and teardown

    def _dir(self, machine_id: str) -> Path:
        if not _ID.match(machine_id):
            raise RuntimeFailure(f"invalid machine id {machine_id!r}")
        return self.machines_dir / machine_id

    def _existing_dir(self, machine_id: str) -> Path:
        machine = self._dir(machine_id)
        if not (machine / "machine.json").exists():
            raise MachineNotFound(f"no machine {machine_id} in {self.machines_dir}")
        return machine

    def _snapshot_dir(self, snapshot_id: str) -> Path:
        if not _ID.match(snapshot_id):
            raise SnapshotNotFound(f"invalid snapshot id {snapshot_id!r}")
        return self.snapshots_dir / snapshot_id

    def _snapshot_lower(self, snapshot_id: str) -> str:
        meta_path = self._snapshot_dir(snapshot_id) / "meta.json"
        if not meta_path.exists():
            raise SnapshotNotFound(f"no snapshot {snapshot_id} in {self.snapshots_dir}")
        lower: str = _read_json(meta_path)["lower"]
        if not Path(lower).is_dir():
            raise IncompatibleSnapshot(
                f"snapshot {snapshot_id} was taken on base image {lower}, "
                "which is gone; rebuild that image or delete the snapshot"
            )
        return lower

    async def _boot(self, spec: MachineSpec) -> None:
        """Mount, configure, create, wire the network, start, wait for sshd."""
        machine_id = spec.machine_id
        machine = self._dir(machine_id)
        lower = _read_json(machine / "machine.json")["lower"]
        await self.network.ensure()
        address = await self.network.lease(machine_id)
        _write_json(
            machine / "network.json",
            {
                "address": str(address),
                "gateway": self.gateway_address,
                "veth": self.network.veth_name(machine_id),
            },
        )
        await _mount_overlay(machine, lower)
        _write_boot_dir(machine / "boot", spec, str(address))
        layout = runc_config.BundleLayout(
            rootfs=machine / "rootfs",
            boot_dir=machine / "boot",
            cgroup_path=f"/{self.cgroup_parent}/{machine_id}",
        )
        config = runc_config.oci_config(spec, layout)
        _write_json(machine / "config.json", config)
        await self._runc_create(machine_id, machine)
        state = await self._runc_state(machine_id)
        if state is None or not state.get("pid"):
            raise RuntimeFailure(f"runc lost container {machine_id} after create")
        await self.network.attach(machine_id, state["pid"], address)
        await self._runc("start", machine_id)
        await _wait_ready(machine, state["pid"])

    async def _runc_create(self, machine_id: str, machine: Path) -> None:
        """`runc create` detached; the container's stdio goes to console.log."""
        with open(machine / "console.log", "ab") as console:
            proc = await asyncio.create_subprocess_exec(
                "runc", "--root", str(self.runc_root), "create",
                "--bundle", str(machine), machine_id,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=console,
                stderr=console,
                # Own session: a Ctrl-C to the server must not reach tini.
                start_new_session=True,
            )  # fmt: skip
            await proc.wait()
        if proc.returncode != 0:
            raise RuntimeFailure(
                f"runc create failed: {_tail(machine / 'console.log')}"
            )

    async def _cleanup_failed(self, machine_id: str, exc: BaseException) -> None:
        log.warning(
            "create failed, removing what was made %s",
            kv(machine=machine_id, error=str(exc) or type(exc).__name__),
        )
        try:
            await asyncio.shield(self._destroy(machine_id))
        except Exception:
            log.exception("cleanup after failed create %s", kv(machine=machine_id))

    async def _destroy(self, machine_id: str) -> None:
        """Teardown, then the address and the directory; safe to repeat."""
        await self._teardown(machine_id)
        await self.network.release(machine_id)
        await remove_tree(self._dir(machine_id))

    async def _teardown(self, machine_id: str) -> None:
        """Stop the container and undo its mount and veth; keep its files."""
        state = await self._runc_state(machine_id)
        if state is not None:
            if state["status"] == "paused":
                await self._runc("resume", machine_id, check=False)
            await self._runc("delete", "--force", machine_id)
            if state.get("pid"):
                await _wait_exited(state["pid"])
        await self.network.detach(machine_id)
        await _unmount(self._dir(machine_id) / "rootfs")

    async def _copy_frozen(self, machine_id: str, target: Path) -> int:
        """Copy the upper dir with the machine frozen; returns frozen ms.

        A sync before freezing writes most dirty data out while the machine
        still runs, so the sync inside the freeze has little left to do.
        """
        upper = self._dir(machine_id) / "upper"
        info = await self.inspect(machine_id)
        freeze = info.state == MachineState.RUNNING
        await sync_filesystem(upper)
        started = time.monotonic()
        if freeze:
            await self._runc("pause", machine_id)
        try:
            await sync_filesystem(upper)
            await copy_tree(upper, target)
        finally:
            if freeze:
                await self._runc("resume", machine_id)
        return _ms(started)

    # Internals: runc

    async def _runc(self, *args: str, check: bool = True) -> str:
        code, out = await run("runc", "--root", str(self.runc_root), *args)
        if code != 0 and check:
            raise RuntimeFailure(f"runc {args[0]} failed: {out}")
        return out

    async def _runc_state(self, machine_id: str) -> dict[str, Any] | None:
        """runc's view of a container, or None when runc does not know it."""
        if not (self.runc_root / machine_id / "state.json").exists():
            return None
        code, out = await run(
            "runc", "--root", str(self.runc_root), "state", machine_id
        )
        if code != 0:
            if "does not exist" in out:
                return None
            raise RuntimeFailure(f"runc state {machine_id} failed: {out}")
        state: dict[str, Any] = json.loads(out)
        return state

    async def _require_state(self, machine_id: str) -> MachineState:
        self._existing_dir(machine_id)
        info = await self.inspect(machine_id)
        if info.state == MachineState.MISSING:
            raise MachineNotFound(f"machine {machine_id} has no container")
        return info.state

    async def _spawn(
        self,
        machine_id: str,
        argv: builtins.list[str],
        user: str,
        stdin: int,
        stderr: int = asyncio.subprocess.PIPE,
        stdout: int = asyncio.subprocess.PIPE,
    ) -> tuple[asyncio.subprocess.Process, Path]:
        """Start `runc exec` with a full process spec (user, env, no caps)."""
        machine = self._existing_dir(machine_id)
        record = _read_json(machine / "machine.json")
        process = runc_config.process_spec(argv, _exec_user(user), record["env"])
        spec_dir = machine / "exec"
        spec_dir.mkdir(mode=0o700, exist_ok=True)
        spec_file = spec_dir / f"{uuid.uuid4().hex}.json"
        _write_json(spec_file, process)
        proc = await asyncio.create_subprocess_exec(
            "runc", "--root", str(self.runc_root), "exec",
            "--process", str(spec_file), machine_id,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
        )  # fmt: skip
        return proc, spec_file


# Helpers without state


def _check_spec(spec: MachineSpec) -> None:
    if not _ID.match(spec.machine_id):
        raise RuntimeFailure(f"invalid machine id {spec.machine_id!r}")
    if not _USER.match(spec.linux_user):
        raise RuntimeFailure(f"invalid linux user {spec.linux_user!r}")


def _machine_record(spec: MachineSpec, lower: str | Path) -> dict[str, Any]:
    size = spec.size
    return {
        "machine_id": spec.machine_id,
        "linux_user": spec.linux_user,
        "env": spec.env,
        "size": {
            "name": size.name,
            "cpus": size.cpus,
            "memory_mib": size.memory_mib,
            "pids": size.pids,
        },
        "lower": str(lower),
    }


def _exec_user(user: str) -> ExecUser:
    if user in runc_config.KNOWN_USERS:
        return runc_config.KNOWN_USERS[user]
    match = re.fullmatch(r"(\d+):(\d+)", user)
    if match is None:
        raise RuntimeFailure(f"unknown user {user!r}; use root, developer or uid:gid")
    uid, gid = int(match[1]), int(match[2])
    return ExecUser(uid, gid, "/", user)


def _claim_dir(path: Path, what: str, mode: int = 0o711) -> None:
    """Make a new directory, failing if it exists (atomic, unlike a check)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir(mode=mode)
    except FileExistsError:
        raise RuntimeFailure(f"{what} already exists") from None


def _make_upper(upper: Path) -> None:
    """An empty upper dir owned by the machine's root, as the overlay's /."""
    upper.mkdir(mode=0o755)
    os.chown(upper, UID_OFFSET, UID_OFFSET)


def _write_boot_dir(boot: Path, spec: MachineSpec, address: str) -> None:
    boot.mkdir(mode=0o755, exist_ok=True)
    files = runc_config.boot_files(spec, address, host_nameserver())
    for name, text in files.items():
        path = boot / name
        path.write_text(text)
        path.chmod(0o644)


async def _mount_overlay(machine: Path, lower: str) -> None:
    rootfs, work = machine / "rootfs", machine / "work"
    if _is_mounted(rootfs):
        return
    rootfs.mkdir(exist_ok=True)
    work.mkdir(exist_ok=True)
    options = f"lowerdir={lower},upperdir={machine / 'upper'},workdir={work}"
    code, out = await run(
        "mount", "-t", "overlay", "overlay", "-o", options, str(rootfs)
    )
    if code != 0:
        raise RuntimeFailure(f"mounting the overlay root failed: {out}")


async def _unmount(path: Path) -> None:
    if not _is_mounted(path):
        return
    code, out = await run("umount", str(path))
    if code != 0:
        log.warning("unmount busy, detaching lazily %s", kv(path=path, error=out))
        code, out = await run("umount", "-l", str(path))
        if code != 0:
            raise RuntimeFailure(f"unmounting {path} failed: {out}")


def _is_mounted(path: Path) -> bool:
    target = str(path)
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            point = line.split()[4]
            if _unescape(point) == target:
                return True
    return False


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), field)


async def _wait_ready(machine: Path, pid: int) -> None:
    """Wait for the init's ready marker: host keys made and `sshd -t` passed."""
    marker = Path(f"/proc/{pid}/root") / runc_config.READY_MARKER
    deadline = time.monotonic() + READY_TIMEOUT
    delay = 0.005
    while not marker.exists():
        if not Path(f"/proc/{pid}").exists():
            raise RuntimeFailure(
                f"machine init exited before sshd was ready: {_tail(machine / 'console.log')}"
            )
        if time.monotonic() > deadline:
            raise RuntimeFailure(
                f"sshd not ready after {READY_TIMEOUT:.0f}s: {_tail(machine / 'console.log')}"
            )
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.1)


async def _wait_exited(pid: int, timeout: float = 5.0) -> None:
    """Wait until a killed init is gone or a zombie (its parent reaps it)."""
    deadline = time.monotonic() + timeout
    while _process_running(pid) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)


def _process_running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


async def _gather_all(coros: Any) -> None:
    """Run all to completion; then raise the first error, if any."""
    results = await asyncio.gather(*coros, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result


async def _stop(proc: asyncio.subprocess.Process, grace: float = 0.0) -> None:
    if proc.returncode is None and grace:
        try:
            await asyncio.wait_for(proc.wait(), grace)
        except TimeoutError:
            pass
    if proc.returncode is None:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except TimeoutError:
            proc.kill()
            await proc.wait()


def _passes_through(exc: BaseException) -> bool:
    """Our own errors and cancellation propagate as they are."""
    return isinstance(exc, RuntimeFailure) or not isinstance(exc, Exception)


def _tail(path: Path, lines: int = 8) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no console log)"
    return " | ".join(text[-lines:]) or "(console log empty)"


def _write_json(path: Path, data: object) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def _since(started: float) -> float:
    return round(time.monotonic() - started, 3)


def _ms(started: float) -> int:
    return round((time.monotonic() - started) * 1000)
