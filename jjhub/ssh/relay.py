"""Channel relays: each client channel is paired with one to the machine's sshd.

A relay is two halves that forward what arrives on their own channel to the
other's. Flow control is end to end: when one channel's send buffer fills,
the other stops reading, so SSH windows bound what the gateway holds and one
slow client never grows the gateway's memory or stalls other channels.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import asyncssh
from asyncssh.channel import SSHChannel

Touch = Callable[[int, bool], None]
"""Called with a byte count and whether it flowed towards the client."""


class TcpHalf(asyncssh.SSHTCPSession[bytes]):
    """One end of a forwarded TCP connection (`ssh -L` or `ssh -R`).

    The two channels open one after the other; what arrives before the other
    end exists is held (and reading paused) until it does.
    """

    def __init__(self, touch: Touch, towards_client: bool) -> None:
        self.chan: SSHChannel[bytes] | None = None
        self.peer: TcpHalf | None = None
        self._touch = touch
        self._towards_client = towards_client
        self._held: list[bytes] = []
        self._eof = False

    def _out(self) -> SSHChannel[bytes] | None:
        return self.peer.chan if self.peer is not None else None

    def connection_made(self, chan: SSHChannel[bytes]) -> None:
        self.chan = chan
        if self.peer is not None and self.peer.chan is not None:
            self.peer.release()

    def release(self) -> None:
        """The other end is open: hand over what was held and read on."""
        out = self._out()
        if out is None or self.chan is None:
            return
        held, self._held = self._held, []
        for data in held:
            out.write(data)
        if self._eof:
            out.write_eof()
        self.chan.resume_reading()

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        out = self._out()
        if out is None:
            self._held.append(data)
            if self.chan is not None:
                self.chan.pause_reading()
            return
        out.write(data)
        self._touch(len(data), not self._towards_client)

    def eof_received(self) -> bool:
        out = self._out()
        if out is None:
            self._eof = True
        else:
            out.write_eof()
        return True

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.chan is not None:
            self.peer.chan.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.chan is not None:
            self.peer.chan.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        peer, self.peer = self.peer, None
        self._held = []
        if peer is not None:
            peer.peer = None
            if peer.chan is not None:
                peer.chan.close()


def tcp_pair(touch: Touch) -> tuple[TcpHalf, TcpHalf]:
    """A (client side, machine side) pair of linked halves."""
    client, machine = TcpHalf(touch, False), TcpHalf(touch, True)
    client.peer, machine.peer = machine, client
    return client, machine


class ClientSession(asyncssh.SSHServerSession[bytes]):
    """A session channel from the client, mirrored onto a session to the machine.

    The client's requests (pty, env, shell/exec/subsystem) are collected until
    the session starts, then replayed in one `create_session` upstream; the
    client's input is held until that session is open.
    """

    def __init__(
        self,
        upstream: asyncssh.SSHClientConnection,
        touch: Touch,
        spawn: Callable[[Any], object],
    ) -> None:
        self._upstream = upstream
        self._touch = touch
        self._spawn = spawn
        self.chan: asyncssh.SSHServerChannel[bytes] | None = None
        self.machine: asyncssh.SSHClientChannel[bytes] | None = None
        self._command: str | None = None
        self._subsystem: str | None = None
        self._term: tuple[str, tuple[int, int, int, int], dict[int, int]] | None = None
        self._size: tuple[int, int, int, int] | None = None
        self._held: list[bytes] = []
        self._eof = False
        self._closed = False

    def connection_made(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:
        self.chan = chan

    def pty_requested(
        self, term_type: str, term_size: tuple[int, int, int, int], term_modes: Any
    ) -> bool:
        self._term = (term_type, term_size, dict(term_modes))
        return True

    def shell_requested(self) -> bool:
        return True

    def exec_requested(self, command: str) -> bool:
        self._command = command
        return True

    def subsystem_requested(self, subsystem: str) -> bool:
        self._subsystem = subsystem
        return True

    def session_started(self) -> None:
        self._spawn(self._open())

    async def _open(self) -> None:
        assert self.chan is not None
        term_type, term_size, term_modes = self._term or (None, (0, 0, 0, 0), {})
        try:
            machine, _ = await self._upstream.create_session(
                lambda: MachineSession(self, self._touch),
                command=self._command,
                subsystem=self._subsystem,
                env=_env(self.chan),
                request_pty="force" if term_type else False,
                term_type=term_type,
                term_size=self._size or term_size,
                term_modes=term_modes,
                encoding=None,
            )
        except (asyncssh.Error, OSError) as error:
            if not self._closed:
                reason = getattr(error, "reason", "") or str(error)
                self.chan.write_stderr(f"jjhub: {reason}\r\n".encode())
                self.chan.exit(255)
            return
        if self._closed:
            machine.close()
            return
        self.machine = machine
        held, self._held = self._held, []
        for data in held:
            machine.write(data)
        if self._eof:
            machine.write_eof()
        self.chan.resume_reading()

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        if self.machine is None:
            # Input before the machine's session is open: hold it, read no more.
            self._held.append(data)
            if self.chan is not None:
                self.chan.pause_reading()
            return
        self.machine.write(data)
        self._touch(len(data), False)

    def eof_received(self) -> bool:
        if self.machine is None:
            self._eof = True
        else:
            self.machine.write_eof()
        return True

    def terminal_size_changed(
        self, width: int, height: int, pixwidth: int, pixheight: int
    ) -> None:
        if self.machine is not None:
            self.machine.change_terminal_size(width, height, pixwidth, pixheight)
        else:
            self._size = (width, height, pixwidth, pixheight)

    def signal_received(self, signal: str) -> None:
        if self.machine is not None:
            self.machine.send_signal(signal)

    def break_received(self, msec: int) -> bool:
        if self.machine is not None:
            self.machine.send_break(msec)
            return True
        return False

    def pause_writing(self) -> None:
        if self.machine is not None:
            self.machine.pause_reading()

    def resume_writing(self) -> None:
        if self.machine is not None:
            self.machine.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._held = []
        machine, self.machine = self.machine, None
        if machine is not None:
            machine.close()


def _env(chan: asyncssh.SSHServerChannel[bytes]) -> dict[bytes | str, bytes | str]:
    """The client's `env` requests, as raw bytes (sshd's AcceptEnv decides)."""
    return dict(chan.get_environment_bytes().items())


class MachineSession(asyncssh.SSHClientSession[bytes]):
    """The machine's side of a relayed session; reports its exit to the client."""

    def __init__(self, client: ClientSession, touch: Touch) -> None:
        self._client: ClientSession | None = client
        self._touch = touch
        self._status: int | None = None
        self._signal: tuple[str, bool, str, str] | None = None

    def _chan(self) -> asyncssh.SSHServerChannel[bytes] | None:
        return self._client.chan if self._client is not None else None

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        chan = self._chan()
        if chan is not None:
            chan.write(data, datatype)
            self._touch(len(data), True)

    def eof_received(self) -> bool:
        # Held until the channel closes: a client that has sent its own EOF
        # closes on ours, and would never see the exit status that follows.
        return True

    def pause_writing(self) -> None:
        chan = self._chan()
        if chan is not None:
            chan.pause_reading()

    def resume_writing(self) -> None:
        chan = self._chan()
        if chan is not None:
            chan.resume_reading()

    def exit_status_received(self, status: int) -> None:
        self._status = status

    def exit_signal_received(
        self, signal: str, core_dumped: bool, msg: str, lang: str
    ) -> None:
        self._signal = (signal, core_dumped, msg, lang)

    def connection_lost(self, exc: Exception | None) -> None:
        chan = self._chan()
        self._client = None
        if chan is None:
            return
        chan.write_eof()
        if self._signal is not None:
            chan.exit_with_signal(*self._signal)
        elif self._status is not None:
            chan.exit(self._status)
        else:
            chan.close()
