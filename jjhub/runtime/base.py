"""The surface every runtime driver implements, and nothing more.

The workspace domain talks to machines only through `Runtime`. A driver knows
nothing about HTTP, users or SQL: it turns lifecycle verbs into machines and
reports what it keeps across suspend, fork and snapshot in `Capabilities`, so
the API can tell users the truth instead of guessing.
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Protocol


class MachineState(StrEnum):
    """What the runtime itself reports about a machine."""

    RUNNING = "running"
    SUSPENDED = "suspended"
    STOPPED = "stopped"
    MISSING = "missing"


@dataclass(frozen=True)
class Capabilities:
    """What a driver keeps when a machine is suspended, forked or snapshotted."""

    driver: str
    suspend_keeps_memory: bool
    fork_keeps_memory: bool
    snapshot_keeps_memory: bool

    def as_dict(self) -> dict[str, object]:
        return {
            "driver": self.driver,
            "suspend_keeps_memory": self.suspend_keeps_memory,
            "fork_keeps_memory": self.fork_keeps_memory,
            "snapshot_keeps_memory": self.snapshot_keeps_memory,
        }


@dataclass(frozen=True)
class Size:
    """Resource limits of one machine."""

    name: str
    cpus: float
    memory_mib: int
    pids: int = 4096


SIZES: dict[str, Size] = {
    "small": Size("small", cpus=1.0, memory_mib=1024),
    "medium": Size("medium", cpus=2.0, memory_mib=4096),
    "large": Size("large", cpus=4.0, memory_mib=8192),
}


@dataclass(frozen=True)
class MachineSpec:
    """Everything a driver needs to make a machine.

    `machine_id` doubles as the hostname inside. `gateway_public_key` is the
    OpenSSH public key line the SSH gateway authenticates with; it is installed
    for `linux_user` (and root) inside the machine.
    """

    machine_id: str
    size: Size
    gateway_public_key: str
    linux_user: str = "developer"
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class MachineInfo:
    machine_id: str
    state: MachineState
    pid: int | None = None


@dataclass(frozen=True)
class SnapshotInfo:
    snapshot_id: str
    path: Path
    size_bytes: int
    keeps_memory: bool


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    stdout: bytes
    stderr: bytes


@dataclass
class SshStream:
    """A connection to a machine's sshd; `close` releases what carries it."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    closer: Callable[[], Awaitable[None]]

    async def close(self) -> None:
        self.writer.close()
        await self.closer()


class Runtime(Protocol):
    """A driver: one module per kind of machine (runc, qemu)."""

    name: str
    capabilities: Capabilities
    # The host as seen from inside a machine (None when unreachable), so a
    # clone URL on the server's loopback can be rewritten to reach it.
    host_address: str | None

    async def prepare(self) -> None:
        """Make sure images and host plumbing exist; may build the base image."""

    async def create(self, spec: MachineSpec, snapshot_id: str | None = None) -> None:
        """Start a machine from the base image or a snapshot.

        Returns once the machine's sshd can be reached through `open_ssh`. On
        failure everything made for it is removed before the error is raised.
        """

    async def suspend(self, machine_id: str) -> None: ...

    async def resume(self, machine_id: str) -> None: ...

    async def delete(self, machine_id: str) -> None:
        """Remove every process, mount, cgroup and file of the machine.

        Deleting a machine that does not exist is not an error.
        """

    async def inspect(self, machine_id: str) -> MachineInfo: ...

    async def list(self) -> builtins.list[MachineInfo]: ...

    async def restart(self, spec: MachineSpec) -> None:
        """Boot a machine again from its own disk, keeping its files (recover)."""

    async def fork(
        self, machine_id: str, new_specs: builtins.list[MachineSpec]
    ) -> None:
        """Make running copies of a machine; the source keeps its state."""

    async def snapshot(self, machine_id: str, snapshot_id: str) -> SnapshotInfo: ...

    async def delete_snapshot(self, snapshot_id: str) -> None: ...

    async def exec(
        self, machine_id: str, argv: builtins.list[str], user: str = "root"
    ) -> ExecResult:
        """Run a command inside; for tests, checkouts and health checks."""

    async def open_ssh(self, machine_id: str) -> SshStream:
        """A byte stream to the machine's own sshd (no host port per machine)."""
