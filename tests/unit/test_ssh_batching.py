"""Write batching and sliced feeding, on real sockets and a real asyncssh server."""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Any

import asyncssh
import pytest

from jjhub.ssh.batching import (
    FEED_SIZE,
    BatchingListener,
    BatchingTransport,
    feed,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Collector(asyncio.Protocol):
    """Gathers what arrives and notes the end of the stream."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.chunks: list[bytes] = []
        self.ended = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self.data += data
        self.chunks.append(data)

    def eof_received(self) -> bool:
        if not self.ended.done():
            self.ended.set_result(None)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ended.done():
            self.ended.set_result(None)


class CountingTransport(asyncio.Transport):
    """A real socket transport, with its `write` calls counted."""

    def __init__(self, inner: asyncio.Transport) -> None:
        super().__init__()
        self.inner = inner
        self.writes = 0

    def write(self, data: Any) -> None:
        self.writes += 1
        self.inner.write(data)

    def is_closing(self) -> bool:
        return self.inner.is_closing()

    def close(self) -> None:
        self.inner.close()

    def write_eof(self) -> None:
        self.inner.write_eof()

    def get_write_buffer_size(self) -> int:
        return self.inner.get_write_buffer_size()


async def _socket_pair() -> tuple[asyncio.Transport, Collector]:
    """A transport writing into a real socket, and what its peer receives."""
    loop = asyncio.get_running_loop()
    ours, theirs = socket.socketpair()
    transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, ours)
    _, peer = await loop.connect_accepted_socket(Collector, theirs)
    assert isinstance(transport, asyncio.Transport)
    return transport, peer


async def test_writes_in_one_loop_turn_reach_the_socket_as_one_write_in_order() -> None:
    transport, peer = await _socket_pair()
    counting = CountingTransport(transport)
    batching = BatchingTransport(counting)
    packets = [os.urandom(1000) for _ in range(8)]

    for packet in packets:
        batching.write(packet)
    assert counting.writes == 0
    assert batching.get_write_buffer_size() == 8000

    await asyncio.sleep(0)
    assert counting.writes == 1
    batching.write_eof()
    await asyncio.wait_for(peer.ended, 5)
    assert bytes(peer.data) == b"".join(packets)
    transport.close()


async def test_closing_sends_what_was_gathered_first() -> None:
    transport, peer = await _socket_pair()
    batching = BatchingTransport(transport)

    batching.write(b"last words")
    batching.close()

    await asyncio.wait_for(peer.ended, 5)
    assert bytes(peer.data) == b"last words"


async def test_feed_hands_large_reads_over_in_slices_and_stops_once_closing() -> None:
    received: list[bytes] = []
    closing = False

    class Sink(asyncio.Protocol):
        def data_received(self, data: bytes) -> None:
            nonlocal closing
            received.append(data)
            closing = len(received) == 2

    data = os.urandom(FEED_SIZE * 4 + 10)
    feed(Sink(), data, lambda: False)
    assert [len(chunk) for chunk in received] == [FEED_SIZE] * 4 + [10]
    assert b"".join(received) == data

    received.clear()
    feed(Sink(), data, lambda: closing)
    assert len(received) == 2


class EchoSession(asyncssh.SSHServerSession[bytes]):
    def connection_made(self, chan: Any) -> None:
        self.chan = chan

    def shell_requested(self) -> bool:
        return True

    def data_received(self, data: bytes, datatype: Any) -> None:
        self.chan.write(data)

    def eof_received(self) -> bool:
        self.chan.exit(0)
        return False


class OpenServer(asyncssh.SSHServer):
    def begin_auth(self, username: str) -> bool:
        return False

    def session_requested(self) -> EchoSession:
        return EchoSession()


async def test_an_ssh_server_behind_the_listener_echoes_megabytes_intact() -> None:
    key = asyncssh.generate_private_key("ssh-ed25519")
    server = await asyncssh.create_server(
        OpenServer,
        "127.0.0.1",
        0,
        server_host_keys=[key],
        encoding=None,
        line_editor=False,
        max_pktsize=128 * 1024,
        tunnel=BatchingListener(),
    )
    port = server.sockets[0].getsockname()[1]
    payload = os.urandom(8 * 1024 * 1024)
    try:
        async with asyncssh.connect(
            "127.0.0.1", port, known_hosts=None, username="x"
        ) as conn:
            process = await conn.create_process(encoding=None)
            process.stdin.write(payload)
            process.stdin.write_eof()
            echoed = await asyncio.wait_for(process.stdout.read(), 60)
            await process.wait()
    finally:
        server.close()
        await server.wait_closed()
    assert echoed == payload
