"""The runc driver against real runc, overlayfs, nftables and OpenSSH.

One machine is shared by the read-mostly tests of this module (booting costs
about half a second); tests that fork, snapshot, restart or delete make their
own. Nothing here is mocked except, in one test, the base image itself.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from functools import partial
from http.server import HTTPServer, SimpleHTTPRequestHandler
from pathlib import Path

import asyncssh
import pytest

from jjhub.runtime import runc as runc_module
from jjhub.runtime.base import SIZES, MachineSpec, MachineState, Size
from jjhub.runtime.errors import RuntimeFailure
from jjhub.runtime.runc import RuncRuntime

pytestmark = pytest.mark.anyio

IMAGE_DIR = Path(os.environ.get("JJHUB_IMAGE_DIR", "/var/tmp/jjhub-test-images"))
# Own range so these tests never share a bridge with a server under test.
CIDR = "10.209.0.0/24"


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def ssh_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """An ed25519 key pair: the private key file and the public key line."""
    key = tmp_path_factory.mktemp("ssh") / "id_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True
    )
    return key, key.with_suffix(".pub").read_text().strip()


@pytest.fixture(scope="module")
def shared_dir(xfs_root: Path) -> Path:
    path = xfs_root / f"runc-shared-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    return path


@pytest.fixture(scope="module")
async def shared(
    shared_dir: Path, ssh_key: tuple[Path, str]
) -> AsyncIterator[tuple[RuncRuntime, str]]:
    """A runtime and one running machine, deleted at the end of the module."""
    runtime = RuncRuntime(shared_dir, IMAGE_DIR, CIDR)
    await runtime.prepare()
    machine_id = f"m-{uuid.uuid4().hex[:8]}"
    await runtime.create(_spec(machine_id, ssh_key[1]))
    yield runtime, machine_id
    await runtime.delete(machine_id)
    assert await runtime.remove_host_network()
    assert not Path("/sys/class/net", runtime.network.bridge).exists()


@pytest.fixture
async def runtime(data_dir: Path) -> AsyncIterator[RuncRuntime]:
    """A runtime on a fresh data dir; whatever a test leaves is deleted."""
    runtime = RuncRuntime(data_dir, IMAGE_DIR, CIDR)
    await runtime.prepare()
    yield runtime
    for info in await runtime.list():
        await runtime.delete(info.machine_id)
    await runtime.remove_host_network()  # unless the shared machine uses it


def _spec(machine_id: str, key: str = "", size: Size = SIZES["small"]) -> MachineSpec:
    key = key or "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOnlyForTestsOnlyForTestsOnlyFor"
    return MachineSpec(machine_id, size, key)


def _new_id(prefix: str = "m") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def sh(
    runtime: RuncRuntime, machine_id: str, script: str, user: str = "root"
) -> str:
    """Run a shell script inside; its stdout, or a failed assertion."""
    result = await runtime.exec(machine_id, ["/bin/sh", "-c", script], user)
    assert result.exit_code == 0, (script, result.stderr.decode())
    return result.stdout.decode()


async def start_counter(runtime: RuncRuntime, machine_id: str) -> int:
    """A background loop writing an increasing number; returns its PID."""
    loop = "i=0; while :; do i=$((i+1)); echo $i > /tmp/counter; sleep 0.05; done"
    out = await sh(
        runtime, machine_id, f"nohup sh -c '{loop}' >/dev/null 2>&1 & echo $!"
    )
    await asyncio.sleep(0.3)
    return int(out)


async def pid_alive(runtime: RuncRuntime, machine_id: str, pid: int) -> bool:
    result = await runtime.exec(machine_id, ["kill", "-0", str(pid)])
    return result.exit_code == 0


def leftovers(runtime: RuncRuntime, machine_id: str, pid: int | None) -> list[str]:
    """Everything on the host that still belongs to a deleted machine."""
    found = [
        line
        for line in Path("/proc/mounts").read_text().splitlines()
        if str(runtime.machines_dir / machine_id) in line
    ]
    for controller in ("memory", "pids", "cpu", "freezer", "devices"):
        cgroup = Path("/sys/fs/cgroup", controller, runtime.cgroup_parent, machine_id)
        if cgroup.exists():
            found.append(str(cgroup))
    veth = runtime.network.veth_name(machine_id)
    if Path("/sys/class/net", veth).exists():
        found.append(f"veth {veth}")
    if pid is not None and _running(pid):
        found.append(f"process {pid}")
    if (runtime.machines_dir / machine_id).exists():
        found.append("machine dir")
    if (runtime.runc_root / machine_id).exists():
        found.append("runc state")
    leases = runtime.data_dir / "network" / "leases.json"
    if leases.exists() and machine_id in json.loads(leases.read_text()).values():
        found.append("address lease")
    return found


def _running(pid: int) -> bool:
    """True for a live process; a zombie awaiting its reaper does not count."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


# The shared machine


async def test_login_user_sudo_and_hostname(shared: tuple[RuncRuntime, str]) -> None:
    runtime, machine_id = shared
    assert await sh(runtime, machine_id, "whoami", "developer") == "developer\n"
    assert await sh(runtime, machine_id, "echo $HOME", "developer") == (
        "/home/developer\n"
    )
    assert await sh(runtime, machine_id, "sudo -n whoami", "developer") == "root\n"
    assert await sh(runtime, machine_id, "hostname") == f"{machine_id}\n"


async def test_root_inside_is_not_root_outside(
    shared: tuple[RuncRuntime, str],
) -> None:
    runtime, machine_id = shared
    await sh(runtime, machine_id, "echo secret > /root-made-this")
    on_host = runtime.machines_dir / machine_id / "upper" / "root-made-this"
    assert on_host.stat().st_uid == 100000
    assert on_host.stat().st_gid == 100000


async def test_no_host_processes_or_host_paths(
    shared: tuple[RuncRuntime, str],
) -> None:
    runtime, machine_id = shared
    processes = (await sh(runtime, machine_id, "ps ax --no-headers")).splitlines()
    assert len(processes) < 8, processes
    assert not any("python" in line or "pytest" in line for line in processes)

    # The base image underneath is not writable through the machine.
    await sh(runtime, machine_id, "echo changed > /etc/debian_version")
    lower = Path(json.loads((runtime.machines_dir / machine_id / "machine.json")
                            .read_text())["lower"])  # fmt: skip
    assert "changed" not in (lower / "etc" / "debian_version").read_text()
    for path in ("/proc/sysrq-trigger", "/sys/kernel/uevent_helper"):
        result = await runtime.exec(machine_id, ["sh", "-c", f"echo x > {path}"])
        assert result.exit_code != 0, path


async def test_cgroup_limits_follow_the_size(shared: tuple[RuncRuntime, str]) -> None:
    runtime, machine_id = shared
    size = SIZES["small"]
    cgroup = Path("/sys/fs/cgroup/{}", runtime.cgroup_parent, machine_id)
    memory = Path(str(cgroup).format("memory"), "memory.limit_in_bytes")
    assert int(memory.read_text()) == size.memory_mib * 1024 * 1024
    pids = Path(str(cgroup).format("pids"), "pids.max")
    assert int(pids.read_text()) == size.pids
    quota = Path(str(cgroup).format("cpu"), "cpu.cfs_quota_us")
    assert int(quota.read_text()) == int(size.cpus * 100_000)


async def test_suspend_keeps_processes_and_stops_them(
    shared: tuple[RuncRuntime, str],
) -> None:
    runtime, machine_id = shared
    pid = await start_counter(runtime, machine_id)
    await sh(runtime, machine_id, "echo kept > /home/developer/before-suspend")

    await runtime.suspend(machine_id)
    assert (await runtime.inspect(machine_id)).state == MachineState.SUSPENDED
    counter = runtime.machines_dir / machine_id / "upper" / "tmp" / "counter"
    frozen_value = counter.read_text()
    await asyncio.sleep(0.5)
    assert counter.read_text() == frozen_value
    await runtime.suspend(machine_id)  # a second suspend changes nothing

    await runtime.resume(machine_id)
    assert (await runtime.inspect(machine_id)).state == MachineState.RUNNING
    assert await pid_alive(runtime, machine_id, pid)
    assert await sh(runtime, machine_id, "cat /home/developer/before-suspend") == (
        "kept\n"
    )
    await asyncio.sleep(0.3)
    assert int(counter.read_text()) > int(frozen_value)
    await sh(runtime, machine_id, f"kill {pid}")


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[int]:
    """A plain HTTP server on all host addresses; yields its port."""
    (tmp_path / "hello.txt").write_text("hello from the host\n")
    handler = partial(SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = HTTPServer(("0.0.0.0", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


async def test_outbound_http_to_the_host_gateway(
    shared: tuple[RuncRuntime, str], http_server: int
) -> None:
    runtime, machine_id = shared
    url = f"http://{runtime.gateway_address}:{http_server}/hello.txt"
    out = await sh(runtime, machine_id, f"curl -sSf -m 10 {url}", "developer")
    assert out == "hello from the host\n"


async def test_openssh_client_through_proxy_command(
    shared: tuple[RuncRuntime, str], ssh_key: tuple[Path, str]
) -> None:
    runtime, machine_id = shared
    proxy = f"runc --root {runtime.runc_root} exec {machine_id} /usr/sbin/sshd -i"
    proc = await asyncio.create_subprocess_exec(
        "ssh", "-F", "/dev/null", "-i", str(ssh_key[0]),
        "-o", "BatchMode=yes",
        "-o", "StrictHostKeyChecking=no",
        "-o", "UserKnownHostsFile=/dev/null",
        "-o", f"ProxyCommand={proxy}",
        "developer@workspace", "echo hi from $(whoami)",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    assert out == b"hi from developer\n"


async def test_open_ssh_carries_an_ssh_session(
    shared: tuple[RuncRuntime, str], ssh_key: tuple[Path, str]
) -> None:
    runtime, machine_id = shared
    stream = await runtime.open_ssh(machine_id)
    ours, theirs = socket.socketpair()
    reader, writer = await asyncio.open_connection(sock=theirs)

    async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        while data := await src.read(65536):
            dst.write(data)
            await dst.drain()
        dst.close()

    pumps = [
        asyncio.create_task(pump(reader, stream.writer)),
        asyncio.create_task(pump(stream.reader, writer)),
    ]
    try:
        async with asyncssh.connect(
            sock=ours,
            host="workspace",
            username="developer",
            client_keys=[str(ssh_key[0])],
            known_hosts=None,
        ) as conn:
            result = await conn.run("whoami && hostname", check=True)
        assert result.stdout == f"developer\n{machine_id}\n"
    finally:
        await stream.close()
        for task in pumps:
            task.cancel()
        writer.close()


async def test_inspect_of_unknown_machine_is_missing(
    shared: tuple[RuncRuntime, str],
) -> None:
    runtime, _ = shared
    info = await runtime.inspect("no-such-machine")
    assert info.state == MachineState.MISSING
    await runtime.delete("no-such-machine")  # not an error


async def test_create_of_an_existing_id_leaves_the_machine_alone(
    shared: tuple[RuncRuntime, str],
) -> None:
    runtime, machine_id = shared
    with pytest.raises(RuntimeFailure, match="already exists"):
        await runtime.create(_spec(machine_id))
    with pytest.raises(RuntimeFailure, match="distinct"):
        await runtime.fork(machine_id, [_spec(machine_id)])
    assert (await runtime.inspect(machine_id)).state == MachineState.RUNNING
    assert await sh(runtime, machine_id, "hostname") == f"{machine_id}\n"


# Fork and snapshot


async def test_fork_copies_files_and_isolates_writes(runtime: RuncRuntime) -> None:
    source = _new_id("src")
    await runtime.create(_spec(source))
    await sh(runtime, source, "echo before > /home/developer/before", "developer")
    pid = await start_counter(runtime, source)

    forks = [_new_id("fork"), _new_id("fork")]
    await runtime.fork(source, [_spec(fork) for fork in forks])

    assert await pid_alive(runtime, source, pid)
    assert (await runtime.inspect(source)).state == MachineState.RUNNING
    await sh(runtime, source, "echo source > /home/developer/after")
    for fork in forks:
        assert (await runtime.inspect(fork)).state == MachineState.RUNNING
        assert await sh(runtime, fork, "hostname") == f"{fork}\n"
        assert await sh(runtime, fork, "cat /home/developer/before") == "before\n"
        assert not await pid_alive(runtime, fork, pid)
        result = await runtime.exec(fork, ["cat", "/home/developer/after"])
        assert result.exit_code != 0, "source's write after the fork leaked"
    await sh(runtime, forks[0], "echo fork > /home/developer/fork-only")
    for other in (source, forks[1]):
        result = await runtime.exec(other, ["cat", "/home/developer/fork-only"])
        assert result.exit_code != 0, "fork's write leaked"
    addresses = [
        json.loads((runtime.machines_dir / m / "network.json").read_text())["address"]
        for m in [source, *forks]
    ]
    assert len(set(addresses)) == 3

    # Machines reach the host but not each other.
    await sh(runtime, source, "nohup python3 -m http.server 8000 >/dev/null 2>&1 &")
    await asyncio.sleep(0.5)
    url = f"http://{addresses[0]}:8000/"
    assert await sh(runtime, source, f"curl -sf -o /dev/null -m 5 {url} && echo ok")
    result = await runtime.exec(forks[0], ["curl", "-sf", "-m", "2", url])
    assert result.exit_code != 0, "a machine reached another machine"


async def test_fork_of_a_suspended_machine_leaves_it_suspended(
    runtime: RuncRuntime,
) -> None:
    source = _new_id("src")
    await runtime.create(_spec(source))
    await sh(runtime, source, "echo x > /tmp/x")
    await runtime.suspend(source)
    fork = _new_id("fork")
    await runtime.fork(source, [_spec(fork)])
    assert (await runtime.inspect(source)).state == MachineState.SUSPENDED
    assert await sh(runtime, fork, "cat /tmp/x") == "x\n"


async def test_fork_failing_midway_leaves_no_new_machine(
    runtime: RuncRuntime,
) -> None:
    source = _new_id("src")
    await runtime.create(_spec(source))
    good, bad = _new_id("fork"), _new_id("fork")
    no_processes = Size("broken", cpus=1.0, memory_mib=256, pids=1)
    with pytest.raises(RuntimeFailure):
        await runtime.fork(source, [_spec(good), _spec(bad, size=no_processes)])
    assert [info.machine_id for info in await runtime.list()] == [source]
    for fork in (good, bad):
        assert leftovers(runtime, fork, None) == []
    assert (await runtime.inspect(source)).state == MachineState.RUNNING


async def test_snapshot_of_a_busy_machine_restores_whole_files(
    runtime: RuncRuntime,
) -> None:
    """Every file in the snapshot is one complete generation of the writer."""
    source = _new_id("src")
    await runtime.create(_spec(source))
    writer = (
        "mkdir -p /data; i=0; while :; do i=$((i+1)); "
        "for f in a b c; do yes x | head -c 200000 > /data/$f.tmp; "
        'echo " $i" >> /data/$f.tmp; mv /data/$f.tmp /data/$f; done; done'
    )
    await sh(runtime, source, f"nohup sh -c '{writer}' >/dev/null 2>&1 &")
    await asyncio.sleep(1.0)

    info = await runtime.snapshot(source, "snap-busy")
    assert info.size_bytes > 0 and info.keeps_memory is False

    restores = [_new_id("restore") for _ in range(3)]
    for restore in restores:
        await runtime.create(_spec(restore), snapshot_id="snap-busy")
    check = (
        "for f in a b c; do test $(wc -c < /data/$f) -gt 200000 "
        "&& head -c 200000 /data/$f | tr -d 'x\\n' | wc -c; done"
    )
    for restore in restores:
        assert await sh(runtime, restore, check) == "0\n0\n0\n"
    await sh(runtime, restores[0], "echo mine > /data/only-first")
    for restore in restores[1:]:
        result = await runtime.exec(restore, ["cat", "/data/only-first"])
        assert result.exit_code != 0
    assert not (info.path / "upper" / "data" / "only-first").exists()


async def test_snapshot_outlives_its_source(runtime: RuncRuntime) -> None:
    source = _new_id("src")
    await runtime.create(_spec(source))
    await sh(runtime, source, "echo saved > /home/developer/saved")
    await runtime.snapshot(source, "snap-kept")
    await runtime.delete(source)

    restored = _new_id("restore")
    await runtime.create(_spec(restored), snapshot_id="snap-kept")
    assert await sh(runtime, restored, "cat /home/developer/saved") == "saved\n"
    await runtime.delete_snapshot("snap-kept")
    assert await sh(runtime, restored, "cat /home/developer/saved") == "saved\n"
    assert not (runtime.snapshots_dir / "snap-kept").exists()


# Restart, delete and failure


async def test_restart_boots_again_on_the_same_files(runtime: RuncRuntime) -> None:
    machine_id = _new_id()
    await runtime.create(_spec(machine_id))
    await sh(runtime, machine_id, "echo kept > /home/developer/kept")
    subprocess.run(
        ["runc", "--root", str(runtime.runc_root), "delete", "--force", machine_id],
        check=True,
    )
    assert (await runtime.inspect(machine_id)).state == MachineState.MISSING
    assert [i.state for i in await runtime.list()] == [MachineState.MISSING]

    await runtime.restart(_spec(machine_id))
    assert (await runtime.inspect(machine_id)).state == MachineState.RUNNING
    assert await sh(runtime, machine_id, "cat /home/developer/kept") == "kept\n"


async def test_delete_removes_every_trace(runtime: RuncRuntime) -> None:
    machine_id = _new_id()
    await runtime.create(_spec(machine_id))
    await start_counter(runtime, machine_id)
    await runtime.suspend(machine_id)
    pid = (await runtime.inspect(machine_id)).pid

    await runtime.delete(machine_id)
    assert leftovers(runtime, machine_id, pid) == []
    assert (await runtime.inspect(machine_id)).state == MachineState.MISSING
    await runtime.delete(machine_id)  # idempotent


async def test_create_with_a_broken_image_leaves_nothing(
    runtime: RuncRuntime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bogus = tmp_path / "bogus-rootfs"
    (bogus / "etc").mkdir(parents=True)
    os.chown(bogus, 100000, 100000)

    async def broken_image(image_dir: Path, uid_offset: int) -> Path:
        return bogus

    monkeypatch.setattr(runc_module, "ensure_shifted_rootfs", broken_image)
    machine_id = _new_id()
    with pytest.raises(RuntimeFailure, match="runc create failed"):
        await runtime.create(_spec(machine_id))
    assert leftovers(runtime, machine_id, None) == []
    assert await runtime.list() == []


async def test_create_that_cannot_start_processes_leaves_nothing(
    runtime: RuncRuntime,
) -> None:
    machine_id = _new_id()
    no_processes = Size("broken", cpus=1.0, memory_mib=256, pids=1)
    with pytest.raises(RuntimeFailure, match="init exited"):
        await runtime.create(_spec(machine_id, size=no_processes))
    assert leftovers(runtime, machine_id, None) == []
    assert await runtime.list() == []
