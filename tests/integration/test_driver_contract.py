"""One contract, every driver: the verbs the workspace domain relies on.

Each driver boots one machine per module and runs the same checks. Where a
driver's capabilities say memory is kept (QEMU), a running process must
continue in forks and restores; where they say it is not (runc), files must
be there and the process must not.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from jjhub.runtime.base import MachineSpec, MachineState, Runtime, Size

pytestmark = pytest.mark.anyio

IMAGE_DIR = Path(os.environ.get("JJHUB_IMAGE_DIR", "/var/tmp/jjhub-test-images"))
SIZE = Size("test", cpus=1, memory_mib=512)
# An unusual duration marks the process, so that a fresh machine where the same
# PID happens to belong to something else (even the checking shell) is not
# mistaken for one that kept it.
SLEEP_ARGS = "sleep 100123"
SLEEPER = f"setsid {SLEEP_ARGS} >/dev/null 2>&1 < /dev/null & echo $!"


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(
    scope="module",
    params=["runc", pytest.param("qemu", marks=pytest.mark.qemu)],
)
def driver(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def public_key(tmp_path_factory: pytest.TempPathFactory) -> str:
    key = tmp_path_factory.mktemp("contract-key") / "id"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True
    )
    return key.with_suffix(".pub").read_text().strip()


def _make(driver: str, data_dir: Path) -> Runtime:
    if driver == "qemu":
        from jjhub.runtime.qemu import QemuRuntime

        return QemuRuntime(data_dir, IMAGE_DIR)
    from jjhub.runtime.runc import RuncRuntime

    return RuncRuntime(data_dir, IMAGE_DIR, "10.197.0.0/24")


@pytest.fixture(scope="module")
async def machine(
    driver: str, xfs_root: Path, public_key: str
) -> AsyncIterator[tuple[Runtime, str, str]]:
    """A booted machine with a file and a long-running process; all removed after."""
    data_dir = xfs_root / f"contract-{driver}-{uuid.uuid4().hex[:6]}"
    data_dir.mkdir()
    runtime = _make(driver, data_dir)
    machine_id = "vm_" + uuid.uuid4().hex[:12]
    await runtime.prepare()
    try:
        await runtime.create(MachineSpec(machine_id, SIZE, public_key))
        await _sh(runtime, machine_id, "echo contract > /home/developer/file.txt")
        pid = (await _sh(runtime, machine_id, SLEEPER)).strip()
        yield runtime, machine_id, pid
    finally:
        for info in await runtime.list():
            await runtime.delete(info.machine_id)
        for snapshot in (data_dir / "snapshots").glob("*"):
            await runtime.delete_snapshot(snapshot.name)
        remove_network = getattr(runtime, "remove_host_network", None)
        if remove_network is not None:
            await remove_network()


async def _sh(runtime: Runtime, machine_id: str, script: str) -> str:
    result = await runtime.exec(machine_id, ["sh", "-c", script])
    assert result.exit_code == 0, result.stderr.decode()
    return result.stdout.decode()


async def _alive(runtime: Runtime, machine_id: str, pid: str) -> bool:
    """Whether the sleeper started by the fixture runs under this PID."""
    result = await runtime.exec(
        machine_id, ["sh", "-c", f"tr '\\0' ' ' < /proc/{pid}/cmdline"]
    )
    return result.exit_code == 0 and result.stdout.decode().strip() == SLEEP_ARGS


async def test_a_new_machine_runs_commands_and_reports_running(machine):
    runtime, machine_id, _ = machine
    info = await runtime.inspect(machine_id)
    assert info.state == MachineState.RUNNING
    assert machine_id in [m.machine_id for m in await runtime.list()]
    assert (await _sh(runtime, machine_id, "hostname")).strip() == machine_id
    out = await runtime.exec(machine_id, ["id", "-un"], user="developer")
    assert out.stdout.decode().strip() == "developer"


async def test_suspend_and_resume_keep_files_and_processes(machine):
    runtime, machine_id, pid = machine
    await runtime.suspend(machine_id)
    assert (await runtime.inspect(machine_id)).state == MachineState.SUSPENDED
    await runtime.resume(machine_id)
    assert (await runtime.inspect(machine_id)).state == MachineState.RUNNING
    assert runtime.capabilities.suspend_keeps_memory
    assert await _alive(runtime, machine_id, pid)
    assert (
        await _sh(runtime, machine_id, "cat /home/developer/file.txt")
    ).strip() == "contract"


async def test_a_fork_has_the_files_and_processes_its_capabilities_promise(
    machine, public_key
):
    runtime, machine_id, pid = machine
    fork_id = "vm_" + uuid.uuid4().hex[:12]
    await runtime.fork(machine_id, [MachineSpec(fork_id, SIZE, public_key)])
    try:
        assert (
            await _sh(runtime, fork_id, "cat /home/developer/file.txt")
        ).strip() == "contract"
        assert (await _sh(runtime, fork_id, "hostname")).strip() == fork_id
        kept = await _alive(runtime, fork_id, pid)
        assert kept == runtime.capabilities.fork_keeps_memory
        assert await _alive(runtime, machine_id, pid)
        await _sh(runtime, fork_id, "echo fork > /home/developer/fork.txt")
        missing = await runtime.exec(
            machine_id, ["test", "-e", "/home/developer/fork.txt"]
        )
        assert missing.exit_code != 0
    finally:
        await runtime.delete(fork_id)
    assert (await runtime.inspect(fork_id)).state == MachineState.MISSING


async def test_a_restore_has_what_the_snapshot_kept(machine, public_key):
    runtime, machine_id, pid = machine
    snapshot_id = "snap_" + uuid.uuid4().hex[:12]
    info = await runtime.snapshot(machine_id, snapshot_id)
    assert info.keeps_memory == runtime.capabilities.snapshot_keeps_memory
    assert info.size_bytes > 0
    await _sh(runtime, machine_id, "echo later > /home/developer/later.txt")
    restored_id = "vm_" + uuid.uuid4().hex[:12]
    await runtime.create(
        MachineSpec(restored_id, SIZE, public_key), snapshot_id=snapshot_id
    )
    try:
        assert (
            await _sh(runtime, restored_id, "cat /home/developer/file.txt")
        ).strip() == "contract"
        later = await runtime.exec(
            restored_id, ["test", "-e", "/home/developer/later.txt"]
        )
        assert later.exit_code != 0
        kept = await _alive(runtime, restored_id, pid)
        assert kept == runtime.capabilities.snapshot_keeps_memory
    finally:
        await runtime.delete(restored_id)
        await runtime.delete_snapshot(snapshot_id)


async def test_deleting_twice_and_inspecting_the_unknown_are_not_errors(machine):
    runtime, _, _ = machine
    unknown = "vm_" + uuid.uuid4().hex[:12]
    assert (await runtime.inspect(unknown)).state == MachineState.MISSING
    await runtime.delete(unknown)
    await runtime.delete(unknown)
