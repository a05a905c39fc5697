"""Bridge stdin and stdout to a QEMU machine's sshd, for OpenSSH's ProxyCommand.

    ssh -o ProxyCommand='python -m jjhub.runtime.qemu_connect DATA_DIR %h' \
        developer@MACHINE_ID

Useful to debug a machine without the gateway; the tests use it to drive the
real OpenSSH client through the same path the gateway takes (`open_ssh`).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path

from jjhub.runtime import qemu_agent
from jjhub.runtime.errors import MachineNotFound

CHUNK = 65536


async def bridge(data_dir: Path, machine_id: str) -> None:
    machine_dir = data_dir / "machines" / machine_id
    if not machine_dir.is_dir():
        raise MachineNotFound(f"no qemu machine {machine_id} in {data_dir}")
    stream = await qemu_agent.open_stream(machine_dir)
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin.buffer
    )
    try:
        upstream = asyncio.create_task(_copy_in(stdin, stream.writer))
        while data := await stream.reader.read(CHUNK):
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
        upstream.cancel()
    finally:
        await stream.close()


async def _copy_in(stdin: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await stdin.read(CHUNK):
        writer.write(data)
        await writer.drain()
    with contextlib.suppress(OSError):
        writer.write_eof()


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit("usage: python -m jjhub.runtime.qemu_connect DATA_DIR MACHINE_ID")
    with contextlib.suppress(BrokenPipeError, KeyboardInterrupt):
        asyncio.run(bridge(Path(sys.argv[1]), sys.argv[2]))


if __name__ == "__main__":
    main()
