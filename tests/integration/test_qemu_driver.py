"""The QEMU driver against real QEMU, a real Debian guest and OpenSSH.

Under TCG a boot takes tens of seconds, so the module boots one machine and
its tests share it, in file order: a counter process started at boot is what
suspend, fork and snapshot must keep. Machines the tests make from it (forks,
restores) are deleted by the module fixture, which also checks that no QEMU
process of this module outlives it. Select these tests alone with `-m qemu`.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from jjhub.runtime import accel
from jjhub.runtime.base import MachineSpec, MachineState, Size
from jjhub.runtime.errors import (
    IncompatibleSnapshot,
    MachineNotFound,
    RuntimeFailure,
)
from jjhub.runtime.qemu import QemuRuntime

pytestmark = [pytest.mark.anyio, pytest.mark.qemu]

IMAGE_DIR = Path(os.environ.get("JJHUB_IMAGE_DIR", "/var/tmp/jjhub-test-images"))
SIZE = Size("test", cpus=1, memory_mib=512)
COUNTER = (
    "i=0; while :; do i=$((i+1)); echo $i > /tmp/counter.tmp; "
    "mv /tmp/counter.tmp /tmp/counter; sleep 0.2; done"
)


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def ssh_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    key = tmp_path_factory.mktemp("ssh") / "id_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True
    )
    return key, key.with_suffix(".pub").read_text().strip()


@pytest.fixture(scope="module")
def qemu_dir(xfs_root: Path) -> Iterator[Path]:
    path = xfs_root / f"qemu-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    yield path
    leftovers = _qemu_processes(path)
    for pid in leftovers:
        os.kill(pid, 9)
    assert not leftovers, f"QEMU processes left behind: {leftovers}"


@pytest.fixture(scope="module")
async def vm(
    qemu_dir: Path, ssh_key: tuple[Path, str]
) -> AsyncIterator[tuple[QemuRuntime, str]]:
    """A runtime and one booted machine running a counter; all removed after."""
    runtime = QemuRuntime(qemu_dir, IMAGE_DIR, accel="auto")
    machine_id = f"q-{uuid.uuid4().hex[:8]}"
    try:
        await runtime.prepare()
        await runtime.create(_spec(machine_id, ssh_key[1]))
        started = await runtime.exec(
            machine_id,
            ["sh", "-c", f"setsid sh -c '{COUNTER}' >/dev/null 2>&1 & echo $!"],
        )
        assert started.exit_code == 0, started
        (qemu_dir / "counter.pid").write_text(started.stdout.decode().strip())
        await _wait_counter_above(runtime, machine_id, 2)
        yield runtime, machine_id
    finally:
        for info in await runtime.list():
            await runtime.delete(info.machine_id)
        for snapshot in (qemu_dir / "snapshots").glob("*"):
            await runtime.delete_snapshot(snapshot.name)


def _spec(machine_id: str, public_key: str) -> MachineSpec:
    return MachineSpec(machine_id, SIZE, public_key)


def _qemu_processes(directory: Path) -> list[int]:
    """Pids of live QEMU processes whose command line mentions `directory`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if b"qemu-system" in cmdline and str(directory).encode() in cmdline:
            if state not in ("Z", "X"):
                found.append(int(entry.name))
    return found


async def _sh(runtime: QemuRuntime, machine_id: str, script: str) -> str:
    result = await runtime.exec(machine_id, ["sh", "-c", script])
    assert result.exit_code == 0, result
    return result.stdout.decode().strip()


async def _counter(runtime: QemuRuntime, machine_id: str) -> int:
    return int(await _sh(runtime, machine_id, "cat /tmp/counter || echo 0"))


async def _wait_counter_above(
    runtime: QemuRuntime, machine_id: str, value: int, timeout: float = 60
) -> int:
    deadline = time.monotonic() + timeout
    while True:
        current = await _counter(runtime, machine_id)
        if current > value:
            return current
        assert time.monotonic() < deadline, f"counter stuck at {current}"
        await asyncio.sleep(0.3)


async def _counter_pid_alive(runtime: QemuRuntime, machine_id: str, pid: str) -> bool:
    result = await runtime.exec(machine_id, ["cat", f"/proc/{pid}/cmdline"])
    return result.exit_code == 0 and b"counter" in result.stdout


def _counter_pid(qemu_dir: Path) -> str:
    return (qemu_dir / "counter.pid").read_text().strip()


async def test_ssh_with_openssh_through_open_ssh(
    vm: tuple[QemuRuntime, str], ssh_key: tuple[Path, str]
) -> None:
    """The real OpenSSH client reaches sshd through the virtio-serial path."""
    runtime, machine_id = vm
    proxy = f"{sys.executable} -m jjhub.runtime.qemu_connect {runtime.data_dir} %h"
    argv = [
        "ssh",
        *("-i", str(ssh_key[0]), "-F", "/dev/null"),
        *("-o", f"ProxyCommand={proxy}", "-o", "StrictHostKeyChecking=no"),
        *("-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes"),
        *("-o", "ConnectTimeout=60", "-o", "LogLevel=ERROR"),
        f"developer@{machine_id}",
        "hostname; id -un; sudo -n id -un",
    ]
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, stderr.decode()
    assert stdout.decode().split() == [machine_id, "developer", "root"]


async def test_open_ssh_streams_do_not_block_each_other(
    vm: tuple[QemuRuntime, str],
) -> None:
    runtime, machine_id = vm
    streams = [await runtime.open_ssh(machine_id) for _ in range(3)]
    try:
        for stream in streams:
            banner = await asyncio.wait_for(stream.reader.readline(), 30)
            assert banner.startswith(b"SSH-2.0-OpenSSH")
    finally:
        for stream in streams:
            await stream.close()


async def test_exec_as_user_with_exit_code_and_stderr(
    vm: tuple[QemuRuntime, str],
) -> None:
    runtime, machine_id = vm
    result = await runtime.exec(
        machine_id, ["sh", "-c", "id -un; echo oops >&2; exit 3"], user="developer"
    )
    assert (result.exit_code, result.stdout, result.stderr) == (
        3,
        b"developer\n",
        b"oops\n",
    )


async def test_exec_fails_clearly_when_the_agent_dies(
    vm: tuple[QemuRuntime, str],
) -> None:
    """A killed agent (say, by the OOM killer) fails the command, not hangs it."""
    runtime, machine_id = vm
    with pytest.raises(RuntimeFailure, match="agent restarted"):
        await asyncio.wait_for(
            runtime.exec(machine_id, ["sh", "-c", "kill -9 $PPID; sleep 60"]), 60
        )
    assert await _sh(runtime, machine_id, "echo back") == "back"


async def test_guest_reaches_the_host_through_user_mode_network(
    vm: tuple[QemuRuntime, str],
) -> None:
    """Outbound traffic leaves through QEMU's slirp; the host is host_address."""
    runtime, machine_id = vm

    class Hello(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"hello from the host")

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://{runtime.host_address}:{server.server_address[1]}/"
        body = await _sh(runtime, machine_id, f"curl -sS --max-time 30 {url}")
    finally:
        server.shutdown()
        server.server_close()
    assert body == "hello from the host"


async def test_suspend_leaves_no_qemu_and_resume_continues_counter(
    vm: tuple[QemuRuntime, str], qemu_dir: Path
) -> None:
    runtime, machine_id = vm
    pid = _counter_pid(qemu_dir)
    before = await _counter(runtime, machine_id)

    await runtime.suspend(machine_id)
    assert (await runtime.inspect(machine_id)).state == MachineState.SUSPENDED
    assert _qemu_processes(runtime.machine_dir(machine_id)) == []

    await runtime.resume(machine_id)
    info = await runtime.inspect(machine_id)
    assert info.state == MachineState.RUNNING and info.pid is not None
    assert await _counter_pid_alive(runtime, machine_id, pid)
    after = await _counter(runtime, machine_id)
    assert after >= before
    await _wait_counter_above(runtime, machine_id, after)


async def test_fork_continues_from_the_fork_while_source_goes_on(
    vm: tuple[QemuRuntime, str], qemu_dir: Path, ssh_key: tuple[Path, str]
) -> None:
    runtime, machine_id = vm
    fork_id = f"f-{uuid.uuid4().hex[:8]}"
    at_fork = await _counter(runtime, machine_id)

    await runtime.fork(machine_id, [_spec(fork_id, ssh_key[1])])
    await _sh(runtime, machine_id, "touch /tmp/only-in-source")

    pid = _counter_pid(qemu_dir)
    assert await _counter_pid_alive(runtime, fork_id, pid)
    fork_start = await _counter(runtime, fork_id)
    assert fork_start >= at_fork
    await _wait_counter_above(runtime, fork_id, fork_start)
    await _wait_counter_above(runtime, machine_id, fork_start)
    assert await _sh(runtime, fork_id, "hostname") == fork_id
    assert await _sh(runtime, machine_id, "hostname") == machine_id
    absent = await runtime.exec(fork_id, ["test", "-e", "/tmp/only-in-source"])
    assert absent.exit_code == 1
    infos = {info.machine_id: info for info in await runtime.list()}
    assert infos[fork_id].state == infos[machine_id].state == MachineState.RUNNING
    assert infos[fork_id].pid != infos[machine_id].pid

    await runtime.delete(fork_id)
    assert (await runtime.inspect(fork_id)).state == MachineState.MISSING
    assert not runtime.machine_dir(fork_id).exists()


async def test_restore_continues_counter_without_later_files(
    vm: tuple[QemuRuntime, str], qemu_dir: Path, ssh_key: tuple[Path, str]
) -> None:
    runtime, machine_id = vm
    snapshot_id = f"s-{uuid.uuid4().hex[:8]}"
    restored_id = f"r-{uuid.uuid4().hex[:8]}"
    await _sh(runtime, machine_id, "echo before > /home/developer/before")
    at_snapshot = await _counter(runtime, machine_id)

    info = await runtime.snapshot(machine_id, snapshot_id)
    assert info.keeps_memory and info.size_bytes > 0
    await _sh(runtime, machine_id, "echo after > /home/developer/after; sync")
    await _wait_counter_above(runtime, machine_id, at_snapshot)

    await runtime.create(_spec(restored_id, ssh_key[1]), snapshot_id=snapshot_id)
    assert await _counter_pid_alive(runtime, restored_id, _counter_pid(qemu_dir))
    restored = await _counter(runtime, restored_id)
    assert restored >= at_snapshot
    await _wait_counter_above(runtime, restored_id, restored)
    files = await _sh(runtime, restored_id, "ls /home/developer")
    assert files.split() == ["before"]
    assert await _sh(runtime, restored_id, "hostname") == restored_id
    await runtime.delete(restored_id)


async def test_snapshot_from_another_qemu_is_refused(
    vm: tuple[QemuRuntime, str], ssh_key: tuple[Path, str]
) -> None:
    runtime, machine_id = vm
    snapshot_id = f"s-{uuid.uuid4().hex[:8]}"
    info = await runtime.snapshot(machine_id, snapshot_id)
    state_file = info.path / "state.json"
    state = json.loads(state_file.read_text())
    state["qemu_version"] = "6.0.0 (someone else's build)"
    state_file.write_text(json.dumps(state))

    target = f"x-{uuid.uuid4().hex[:8]}"
    with pytest.raises(IncompatibleSnapshot, match="6.0.0"):
        await runtime.create(_spec(target, ssh_key[1]), snapshot_id=snapshot_id)
    assert not runtime.machine_dir(target).exists()
    await runtime.delete_snapshot(snapshot_id)
    assert not info.path.exists()


async def test_suspended_state_of_another_qemu_is_refused(
    vm: tuple[QemuRuntime, str],
) -> None:
    """A suspended machine whose state this QEMU cannot load stays suspended."""
    runtime, machine_id = vm
    await runtime.suspend(machine_id)
    state_file = runtime.machine_dir(machine_id) / "state.json"
    original = state_file.read_text()
    state = json.loads(original)
    state["machine_options"] = ["-M", "pc"]
    state_file.write_text(json.dumps(state))
    try:
        with pytest.raises(IncompatibleSnapshot, match="machine configuration"):
            await runtime.resume(machine_id)
        assert (await runtime.inspect(machine_id)).state == MachineState.SUSPENDED
    finally:
        state_file.write_text(original)
    await runtime.resume(machine_id)
    assert (await runtime.inspect(machine_id)).state == MachineState.RUNNING


async def test_snapshot_of_another_driver_is_refused(
    vm: tuple[QemuRuntime, str], ssh_key: tuple[Path, str]
) -> None:
    runtime, _ = vm
    foreign = runtime.snapshots_dir / f"runc-{uuid.uuid4().hex[:8]}"
    foreign.mkdir(parents=True)
    (foreign / "meta.json").write_text("{}")
    target = f"x-{uuid.uuid4().hex[:8]}"
    with pytest.raises(IncompatibleSnapshot, match="not made by the qemu driver"):
        await runtime.create(_spec(target, ssh_key[1]), snapshot_id=foreign.name)
    assert not runtime.machine_dir(target).exists()
    await runtime.delete_snapshot(foreign.name)


async def test_fork_of_a_suspended_machine_leaves_it_suspended(
    vm: tuple[QemuRuntime, str], qemu_dir: Path, ssh_key: tuple[Path, str]
) -> None:
    runtime, machine_id = vm
    fork_id = f"f-{uuid.uuid4().hex[:8]}"
    await runtime.suspend(machine_id)
    try:
        await runtime.fork(machine_id, [_spec(fork_id, ssh_key[1])])
        assert (await runtime.inspect(machine_id)).state == MachineState.SUSPENDED
        assert await _counter_pid_alive(runtime, fork_id, _counter_pid(qemu_dir))
        assert await _sh(runtime, fork_id, "hostname") == fork_id
    finally:
        await runtime.delete(fork_id)
        await runtime.resume(machine_id)


async def test_a_new_runtime_rediscovers_running_machines(
    vm: tuple[QemuRuntime, str],
) -> None:
    runtime, machine_id = vm
    again = QemuRuntime(runtime.data_dir, IMAGE_DIR)
    infos = await again.list()
    assert [(i.machine_id, i.state) for i in infos] == [
        (machine_id, MachineState.RUNNING)
    ]
    result = await again.exec(machine_id, ["true"])
    assert result.exit_code == 0


async def test_unknown_machine(vm: tuple[QemuRuntime, str]) -> None:
    runtime, _ = vm
    assert (await runtime.inspect("nope")).state == MachineState.MISSING
    with pytest.raises(MachineNotFound):
        await runtime.suspend("nope")
    await runtime.delete("nope")


async def test_restart_boots_again_keeping_files_not_processes(
    vm: tuple[QemuRuntime, str], qemu_dir: Path, ssh_key: tuple[Path, str]
) -> None:
    """Last on the shared machine: a cold boot ends the counter."""
    runtime, machine_id = vm
    await _sh(runtime, machine_id, "echo kept > /home/developer/kept; sync")
    await runtime.restart(_spec(machine_id, ssh_key[1]))
    assert await _sh(runtime, machine_id, "cat /home/developer/kept") == "kept"
    pid = _counter_pid(qemu_dir)
    assert not await _counter_pid_alive(runtime, machine_id, pid)
    assert (await runtime.inspect(machine_id)).state == MachineState.RUNNING


def test_capabilities_say_memory_is_kept(tmp_path: Path) -> None:
    caps = QemuRuntime(tmp_path, IMAGE_DIR).capabilities
    assert caps.suspend_keeps_memory and caps.fork_keeps_memory
    assert caps.snapshot_keeps_memory


@pytest.mark.skipif(not os.path.exists("/dev/kvm"), reason="no /dev/kvm")
def test_kvm_probe_gives_up_cleanly() -> None:
    """A probe returns within its timeout and leaves no QEMU behind.

    The default CPU model makes nested KVM hang here once the kernel starts,
    which is exactly the case the probe's timeout exists for.
    """
    started = time.monotonic()
    probe = accel.probe_kvm(timeout=3.0, cpu="qemu64")
    assert time.monotonic() - started < 20
    assert probe.seconds < 20
    if not probe.works:
        assert probe.detail  # QEMU's error or the wait, for the log
    assert _kvm_probe_cmdlines() == []


def _kvm_probe_cmdlines() -> list[bytes]:
    lines = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"qemu-system" in cmdline and b"microvm,accel=kvm" in cmdline:
                lines.append(cmdline)
    return lines


def test_accel_choice_follows_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(accel.ACCEL_ENV, "tcg")
    assert accel.kvm_works(tmp_path) is False
    monkeypatch.setenv(accel.ACCEL_ENV, "bogus")
    with pytest.raises(Exception, match="unknown QEMU accelerator"):
        accel.requested_accel()
