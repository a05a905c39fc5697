"""How the host waits for the guest agent to acknowledge a session."""

from __future__ import annotations

import asyncio
import os

import pytest

from jjhub.runtime.qemu_agent import MAGIC, AgentRestarted, _wait_ack

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _reader(data: bytes, limit: int = 1024) -> asyncio.StreamReader:
    reader = asyncio.StreamReader(limit=limit)
    reader.feed_data(data)
    reader.feed_eof()
    return reader


async def test_stale_output_and_other_acknowledgements_are_skipped() -> None:
    nonce = os.urandom(8)
    stale = os.urandom(10_000) + MAGIC + b"A" + os.urandom(8) + b"more output"
    reader = _reader(stale + MAGIC + b"A" + nonce + b"first frame")

    await _wait_ack(reader, nonce)

    assert await reader.read() == b"first frame"


async def test_a_restart_before_the_acknowledgement_says_so() -> None:
    nonce = os.urandom(8)
    reader = _reader(b"old output" + MAGIC + b"R")

    with pytest.raises(AgentRestarted, match="agent restarted"):
        await _wait_ack(reader, nonce)


async def test_an_acknowledgement_that_never_comes_ends_at_end_of_file() -> None:
    reader = _reader(b"old output" + MAGIC[:3])

    with pytest.raises(asyncio.IncompleteReadError):
        await _wait_ack(reader, os.urandom(8))
