"""The host side of the guest agent: exec and SSH streams over virtio-serial.

Each machine has `AGENT_PORTS` virtio-serial ports, each a unix socket in the
machine directory. A port carries one session at a time, so a caller first
takes the port's lock file (flock, released with the session or when the
process dies), then connects. The wire format is described in
`qemu_guest/agent.py`. Nothing here listens on a host port, and a fork's ports
live in the fork's own directory, so copies never clash.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import itertools
import json
import logging
import os
import socket
import struct
import time
from pathlib import Path

from jjhub.logs import kv
from jjhub.runtime.base import ExecResult, SshStream
from jjhub.runtime.errors import RuntimeFailure
from jjhub.runtime.qemu_qmp import open_unix

log = logging.getLogger(__name__)

AGENT_PORTS = 8
PORT_NAME = "org.jjhub.agent.{index}"
MAGIC = b"\x00JJHUB1\x00"
FRAME = struct.Struct(">cI")
CHUNK = 65536
READY_MARKER = b"JJHUB-AGENT-READY"


class AgentUnavailable(RuntimeFailure):
    """The guest agent did not answer (still booting, or the machine is gone)."""


class AgentRestarted(RuntimeFailure):
    """The guest agent restarted (it was killed) while a session was open."""


def port_socket(machine_dir: Path, index: int) -> Path:
    return machine_dir / f"agent-{index}.sock"


class Channel:
    """One session on one agent port; holds the port's lock while open."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        lock_fd: int,
    ):
        self.reader = reader
        self.writer = writer
        self._lock_fd: int | None = lock_fd

    async def send(self, kind: bytes, payload: bytes = b"") -> None:
        self.writer.write(FRAME.pack(kind, len(payload)) + payload)
        await self.writer.drain()

    async def read_frame(self) -> tuple[bytes, bytes]:
        """The next frame; raises IncompleteReadError when the port closes.

        A restarted agent ends sessions its predecessor left with MAGIC,
        which no frame starts with: that is raised as AgentRestarted.
        """
        header = await self.reader.readexactly(FRAME.size)
        if header[:1] == MAGIC[:1]:
            raise AgentRestarted("the guest agent restarted during the session")
        kind, length = FRAME.unpack(header)
        return kind, await self.reader.readexactly(length)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError, ConnectionError):
            await self.writer.wait_closed()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def _try_lock(path: Path) -> int | None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


# Where the next search for a free port starts; shared by all machines, it
# only has to spread consecutive sessions over the ports.
_rotation = itertools.count()


async def _lock_free_port(machine_dir: Path, timeout: float) -> tuple[int, int]:
    """Lock a free port, trying them in turn from a rotating start.

    Taking the lowest free port every time sent back-to-back sessions to the
    same port while the guest's side of the previous one was still winding
    down; now and then, on a loaded host, such a session never got its
    acknowledgement (the test suite failed about one run in three). Rotating
    gives each port time to settle; with it, loaded runs stopped failing.
    """
    deadline = time.monotonic() + timeout
    while True:
        start = next(_rotation)
        for offset in range(AGENT_PORTS):
            index = (start + offset) % AGENT_PORTS
            fd = _try_lock(machine_dir / f"agent-{index}.lock")
            if fd is not None:
                return index, fd
        if time.monotonic() > deadline:
            raise RuntimeFailure(
                f"all {AGENT_PORTS} agent ports of {machine_dir.name} are busy; "
                "close idle SSH sessions and retry"
            )
        await asyncio.sleep(0.05)


async def open_channel(
    machine_dir: Path, header: dict[str, object], ack_timeout: float = 30.0
) -> Channel:
    """Open a session on a free port and wait until the guest agent accepts it."""
    index, lock_fd = await _lock_free_port(machine_dir, timeout=ack_timeout)
    try:
        reader, writer = await open_unix(port_socket(machine_dir, index))
    except OSError as error:
        os.close(lock_fd)
        raise AgentUnavailable(
            f"cannot reach the agent socket of {machine_dir.name}: {error}"
        ) from error
    channel = Channel(reader, writer, lock_fd)
    try:
        nonce = os.urandom(8)
        body = json.dumps(header).encode()
        writer.write(MAGIC + b"H" + nonce + FRAME.pack(b"H", len(body)) + body)
        await writer.drain()
        await asyncio.wait_for(_wait_ack(reader, nonce), ack_timeout)
    except (TimeoutError, asyncio.IncompleteReadError, OSError) as error:
        await channel.close()
        raise AgentUnavailable(
            f"the guest agent of {machine_dir.name} did not answer"
        ) from error
    except BaseException:
        await channel.close()
        raise
    return channel


async def _wait_ack(reader: asyncio.StreamReader, nonce: bytes) -> None:
    """Skip whatever an earlier session left in flight, up to our acknowledgement.

    A restart announcement first means the agent that read our header died
    before its acknowledgement left the guest: a command that kills the agent
    at once can do that. Waiting on would only end in a timeout, and "did not
    answer" would hide what happened.
    """
    while True:
        try:
            await reader.readuntil(MAGIC)
        except asyncio.LimitOverrunError as overrun:
            # More stale output than the reader holds: drop it, keeping a
            # tail that may be the start of the marker.
            await reader.readexactly(max(1, overrun.consumed - len(MAGIC) + 1))
            continue
        kind = await reader.readexactly(1)
        if kind == b"R":
            raise AgentRestarted(
                "the guest agent restarted before it acknowledged the session"
            )
        if kind == b"A" and await reader.readexactly(len(nonce)) == nonce:
            return


async def run(
    machine_dir: Path,
    argv: list[str],
    user: str = "root",
    env: dict[str, str] | None = None,
    stdin: bytes = b"",
    ack_timeout: float = 30.0,
) -> ExecResult:
    """Run a command in the guest and collect its output and exit code."""
    header: dict[str, object] = {
        "op": "exec",
        "argv": argv,
        "user": user,
        "env": env or {},
    }
    channel = await open_channel(machine_dir, header, ack_timeout)
    try:
        if stdin:
            await channel.send(b"D", stdin)
        await channel.send(b"E")
        return await _collect(channel, machine_dir)
    finally:
        await channel.close()


async def _collect(channel: Channel, machine_dir: Path) -> ExecResult:
    stdout, stderr = bytearray(), bytearray()
    while True:
        try:
            kind, payload = await channel.read_frame()
        except AgentRestarted as error:
            raise RuntimeFailure(
                f"the command in {machine_dir.name} was lost: {error} "
                "(was the guest out of memory? see its console.log)"
            ) from error
        except asyncio.IncompleteReadError as error:
            raise RuntimeFailure(
                f"machine {machine_dir.name} went away while a command ran"
            ) from error
        if kind == b"D":
            stdout += payload
        elif kind == b"e":
            stderr += payload
        elif kind == b"X":
            result = json.loads(payload)
            if "error" in result:
                raise RuntimeFailure(f"guest agent: {result['error']}")
            return ExecResult(result["code"], bytes(stdout), bytes(stderr))


async def wait_booted(machine_dir: Path, timeout: float) -> None:
    """Wait for a cold-booted guest's agent to announce itself on the console.

    Connecting before the agent has opened its ports would leave connections
    that QEMU does not read, queued in front of later ones, so a booting guest
    is watched through its console log instead.
    """
    console = machine_dir / "console.log"
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError):
            if READY_MARKER in console.read_bytes():
                break
        if time.monotonic() > deadline:
            raise AgentUnavailable(
                f"the guest agent of {machine_dir.name} did not start within "
                f"{timeout:.0f} s; see {console}"
            )
        await asyncio.sleep(0.1)
    result = await run(machine_dir, ["true"])
    if result.exit_code != 0:
        raise AgentUnavailable(f"the guest agent of {machine_dir.name} is broken")


async def open_stream(machine_dir: Path, guest_port: int = 22) -> SshStream:
    """A byte stream to a TCP port inside the guest (sshd by default)."""
    channel = await open_channel(machine_dir, {"op": "ssh", "port": guest_port})
    ours, theirs = socket.socketpair()
    try:
        inner_reader, inner_writer = await asyncio.open_connection(sock=ours)
        reader, writer = await asyncio.open_connection(sock=theirs, limit=2**20)
    except BaseException:
        ours.close()
        theirs.close()
        await channel.close()
        raise
    pump = asyncio.create_task(_pump(channel, inner_reader, inner_writer))

    async def closer() -> None:
        pump.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await pump
        inner_writer.close()
        await channel.close()

    return SshStream(reader, writer, closer)


async def _pump(
    channel: Channel,
    inner_reader: asyncio.StreamReader,
    inner_writer: asyncio.StreamWriter,
) -> None:
    upstream = asyncio.create_task(_to_guest(channel, inner_reader))
    try:
        await _from_guest(channel, inner_writer)
    except (asyncio.IncompleteReadError, OSError, AgentRestarted) as error:
        log.debug("ssh stream ended %s", kv(reason=type(error).__name__))
    finally:
        upstream.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await upstream
        inner_writer.close()


async def _from_guest(channel: Channel, inner_writer: asyncio.StreamWriter) -> None:
    while True:
        kind, payload = await channel.read_frame()
        if kind == b"D":
            inner_writer.write(payload)
            await inner_writer.drain()
        elif kind == b"X":
            return


async def _to_guest(channel: Channel, inner_reader: asyncio.StreamReader) -> None:
    while True:
        data = await inner_reader.read(CHUNK)
        if not data:
            await channel.send(b"E")
            return
        await channel.send(b"D", data)
