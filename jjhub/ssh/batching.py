"""Write batching: the SSH packets made in one event-loop turn go out as one write.

asyncssh hands the transport one write per packet. When the gateway relays a
256 KiB read from one side, that is eight 32 KiB packets and eight `send`
calls on the other, and on loopback each `send` also pays for delivering the
data to the receiver. Gathering what one turn of the loop produced and writing
it once cuts those system calls several-fold; nothing waits longer than the
end of the current turn, so round trips do not grow.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

# What asyncssh is given at a time. It keeps unparsed input in one bytes object
# and slices the rest off after each packet header and body, so a 256 KiB read
# holding eight packets is copied many times over; a packet or two at a time
# keeps those copies small.
FEED_SIZE = 64 * 1024


def feed(protocol: asyncio.Protocol, data: bytes, closing: Callable[[], bool]) -> None:
    """Pass `data` to an SSH connection a packet or two at a time.

    Stops early once the transport is closing: a connection that failed on
    one slice must not be handed the rest.
    """
    if len(data) <= FEED_SIZE:
        protocol.data_received(data)
        return
    view = memoryview(data)
    for start in range(0, len(data), FEED_SIZE):
        if closing():
            return
        protocol.data_received(bytes(view[start : start + FEED_SIZE]))


class BatchingTransport(asyncio.Transport):
    """Wraps a transport; writes in one loop turn are joined into one."""

    def __init__(self, inner: asyncio.Transport) -> None:
        super().__init__()
        self._inner = inner
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._scheduled = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        self._pending.append(bytes(data))
        self._pending_size += len(data)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """Hand what was gathered to the real transport, as one write."""
        self._scheduled = False
        if not self._pending:
            return
        pending, self._pending, self._pending_size = self._pending, [], 0
        if self._inner.is_closing():
            return
        self._inner.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def write_eof(self) -> None:
        self.flush()
        self._inner.write_eof()

    def can_write_eof(self) -> bool:
        return self._inner.can_write_eof()

    def get_write_buffer_size(self) -> int:
        return self._inner.get_write_buffer_size() + self._pending_size

    def set_write_buffer_limits(
        self, high: int | None = None, low: int | None = None
    ) -> None:
        self._inner.set_write_buffer_limits(high, low)

    def is_closing(self) -> bool:
        return self._inner.is_closing()

    def close(self) -> None:
        self.flush()
        self._inner.close()

    def abort(self) -> None:
        self._pending, self._pending_size = [], 0
        self._inner.abort()

    def pause_reading(self) -> None:
        self._inner.pause_reading()

    def resume_reading(self) -> None:
        self._inner.resume_reading()

    def is_reading(self) -> bool:
        return self._inner.is_reading()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._inner.get_extra_info(name, default)


class BatchingProtocol(asyncio.Protocol):
    """Sits between a socket and asyncssh's connection, batching its writes."""

    def __init__(self, inner: asyncio.Protocol) -> None:
        self._inner = inner
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._inner.connection_made(BatchingTransport(transport))

    def data_received(self, data: bytes) -> None:
        transport = self._transport
        assert transport is not None
        feed(self._inner, data, transport.is_closing)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._inner.connection_lost(exc)


class BatchingListener:
    """What `asyncssh.create_server(tunnel=...)` needs: a TCP listener whose
    connections batch their writes."""

    async def create_server(
        self,
        session_factory: Callable[[str, int], asyncio.Protocol],
        host: str,
        port: int,
    ) -> asyncio.AbstractServer:
        loop = asyncio.get_running_loop()
        return await loop.create_server(
            lambda: BatchingProtocol(session_factory(host, port)), host, port
        )
