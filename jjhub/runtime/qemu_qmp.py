"""A small asyncio client for QEMU's machine protocol (QMP) on a unix socket."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from jjhub.runtime.errors import RuntimeFailure

# sun_path holds 108 bytes; longer paths are reached through a directory fd.
UNIX_PATH_MAX = 100


class QmpError(RuntimeFailure):
    """QEMU answered a command with an error."""


@contextlib.contextmanager
def short_unix_path(path: Path) -> Iterator[str]:
    """A path to `path` short enough for connect(), valid inside the block."""
    if len(str(path)) <= UNIX_PATH_MAX:
        yield str(path)
        return
    directory = os.open(path.parent, os.O_PATH)
    try:
        yield f"/proc/self/fd/{directory}/{path.name}"
    finally:
        os.close(directory)


async def open_unix(path: Path) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    with short_unix_path(path) as short:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(sock, short)
        except OSError:
            sock.close()
            raise
    return await asyncio.open_unix_connection(sock=sock, limit=2**24)


class Qmp:
    """One QMP connection; events are skipped, commands run one at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self._reader = reader
        self._writer = writer
        self._lock = asyncio.Lock()

    @classmethod
    async def connect(cls, path: Path, timeout: float = 10.0) -> Qmp:
        reader, writer = await asyncio.wait_for(open_unix(path), timeout)
        qmp = cls(reader, writer)
        try:
            await asyncio.wait_for(qmp._handshake(), timeout)
        except BaseException:
            await qmp.close()
            raise
        return qmp

    async def _handshake(self) -> None:
        greeting = await self._read_message()
        if "QMP" not in greeting:
            raise RuntimeFailure(f"unexpected QMP greeting: {greeting}")
        await self.execute("qmp_capabilities")

    async def _read_message(self) -> dict[str, Any]:
        line = await self._reader.readline()
        if not line:
            raise ConnectionResetError("QEMU closed its QMP socket")
        message: dict[str, Any] = json.loads(line)
        return message

    async def execute(self, command: str, **arguments: Any) -> Any:
        """Run a command and return its `return` value; raise QmpError on error."""
        message: dict[str, Any] = {"execute": command}
        if arguments:
            message["arguments"] = arguments
        async with self._lock:
            self._writer.write(json.dumps(message).encode() + b"\n")
            await self._writer.drain()
            while True:
                reply = await self._read_message()
                if "return" in reply:
                    return reply["return"]
                if "error" in reply:
                    error = reply["error"]
                    raise QmpError(f"QEMU {command}: {error.get('desc', error)}")

    async def pass_fd(self, name: str, fd: int) -> None:
        """Hand QEMU an open file as `name` (QMP getfd over SCM_RIGHTS)."""
        message = json.dumps({"execute": "getfd", "arguments": {"fdname": name}})
        sock = self._writer.get_extra_info("socket")
        async with self._lock:
            await self._writer.drain()
            with socket.socket(fileno=os.dup(sock.fileno())) as raw:
                socket.send_fds(raw, [message.encode() + b"\n"], [fd])
            while True:
                reply = await self._read_message()
                if "return" in reply:
                    return
                if "error" in reply:
                    raise QmpError(f"QEMU getfd: {reply['error'].get('desc')}")

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(OSError, ConnectionError):
            await self._writer.wait_closed()


@contextlib.asynccontextmanager
async def qmp_session(path: Path, timeout: float = 10.0) -> AsyncIterator[Qmp]:
    qmp = await Qmp.connect(path, timeout)
    try:
        yield qmp
    finally:
        await qmp.close()
