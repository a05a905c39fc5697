"""The SSH gateway: token logins, wake on connect, every channel relayed.

A client logs in as `<vm_id>+<linux_user>:<token>` (accepted without a
prompt) or as `<vm_id>+<linux_user>` with the token as password or
keyboard-interactive answer. Once the token checks out the gateway wakes the
workspace, opens its own SSH connection to the machine's sshd over the
runtime's stream (no host port per machine) with the server's client key,
and relays sessions, `direct-tcpip` and remote forwards channel by channel.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import time
from collections.abc import Coroutine
from typing import Any

import asyncssh

from jjhub.logs import kv
from jjhub.runtime.base import SshStream
from jjhub.ssh import relay, usernames
from jjhub.ssh.backend import AccessDenied, GatewayBackend, NotConnectable, Target
from jjhub.ssh.batching import BatchingListener, BatchingTransport, feed
from jjhub.ssh.keys import GatewayKeys

log = logging.getLogger(__name__)

# AES-GCM runs in OpenSSL with AES-NI and needs no separate MAC; asyncssh's
# chacha20-poly1305 and CTR+HMAC are several times slower, and the gateway
# decrypts and encrypts every byte twice. The client picks the first of its
# own ciphers that the server offers, and OpenSSH lists chacha20 and CTR
# before GCM, so only GCM is offered (every OpenSSH since 6.2 has it).
CLIENT_CIPHERS = ["aes128-gcm@openssh.com", "aes256-gcm@openssh.com"]
MACHINE_CIPHERS = ["aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "aes128-ctr"]
ACTIVITY_INTERVAL = 1.0
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
PIPE_SIZE = 1 << 20
# The window is asyncssh's default. Packets up to 128 KiB are accepted (OpenSSH
# sends up to 256 KiB), so an upload from the client and a download from sshd
# take a quarter of the packets, each with its own per-packet Python work.
WINDOW = 2 << 20
MAX_PKTSIZE = 128 * 1024
KEEPALIVE_INTERVAL = 30
KEEPALIVE_COUNT_MAX = 4
LOGIN_TIMEOUT = 120


class StreamTransport(asyncio.Transport):
    """An asyncio transport over an `SshStream`, for `asyncssh.connect(tunnel=)`."""

    def __init__(self, stream: SshStream, spawn: Any) -> None:
        super().__init__()
        self._stream = stream
        self._spawn = spawn
        self._protocol: asyncio.Protocol | None = None
        self._closing = False
        self._pump: asyncio.Task[None] | None = None

    def start(self, protocol: asyncio.Protocol) -> None:
        _widen_pipes(self._stream)
        self._protocol = protocol
        protocol.connection_made(BatchingTransport(self))
        if not self._read_directly():
            self._pump = asyncio.ensure_future(self._read())

    def _read_directly(self) -> bool:
        """Take the reading side over from the stream's `StreamReader`.

        A `StreamReader` copies every chunk into its buffer and out again and
        wakes a task per chunk; receiving from the pipe or socket straight into
        the SSH connection measured about 7% more download throughput. This
        reaches into the reader's transport and buffer, so when they are not
        what they have been in every Python since 3.4, it declines and the
        caller reads through the `StreamReader` instead.
        """
        reader = self._stream.reader
        pipe = getattr(reader, "_transport", None)
        buffered = getattr(reader, "_buffer", None)
        if not isinstance(pipe, asyncio.ReadTransport) or not isinstance(
            buffered, bytearray
        ):
            return False
        if not isinstance(pipe.get_protocol(), asyncio.StreamReaderProtocol):
            # asyncio.subprocess hands a pipe's data to its reader a loop
            # turn later; data in flight then would be lost.
            return False
        held = bytes(buffered)
        buffered.clear()
        pipe.set_protocol(_ReadSide(self))
        if held:
            self.received(held)
        if reader.at_eof():
            self.ended(None)
        elif not pipe.is_reading():
            pipe.resume_reading()
        return True

    def received(self, data: bytes) -> None:
        """What sshd sent, for the SSH connection on top."""
        if self._protocol is not None:
            feed(self._protocol, data, self.is_closing)

    async def _read(self) -> None:
        error: Exception | None = None
        reader = self._stream.reader
        try:
            while data := await reader.read(1 << 18):
                if self._protocol is None:
                    return
                self.received(data)
        except asyncio.CancelledError:
            pass
        except Exception as exc:  # noqa: BLE001 - handed to the protocol
            error = exc
        self.ended(error)

    def ended(self, error: Exception | None) -> None:
        """sshd's side is gone (or ours closed): tell the connection, once."""
        protocol, self._protocol = self._protocol, None
        if protocol is not None:
            protocol.connection_lost(error)
        self.close()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._closing:
            self._stream.writer.write(data)

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._spawn(self._stream.close())
        if self._protocol is not None:
            asyncio.get_running_loop().call_soon(self.ended, None)

    def abort(self) -> None:
        self.close()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


class _ReadSide(asyncio.Protocol):
    """Receives from the stream's read transport on behalf of a `StreamTransport`."""

    def __init__(self, owner: StreamTransport) -> None:
        self._owner = owner

    def data_received(self, data: bytes) -> None:
        self._owner.received(data)

    def eof_received(self) -> bool:
        self._owner.ended(None)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._owner.ended(exc)


def _widen_pipes(stream: SshStream) -> None:
    """Grow the pipes to sshd so bulk transfers take fewer wakeups (Linux only)."""
    transports = [
        stream.writer.transport,
        getattr(stream.reader, "_transport", None),
    ]
    for transport in transports:
        pipe = transport.get_extra_info("pipe") if transport is not None else None
        if pipe is None:
            continue
        try:
            fcntl.fcntl(pipe.fileno(), F_SETPIPE_SZ, PIPE_SIZE)
        except (OSError, ValueError):
            pass


class StreamTunnel:
    """What `asyncssh.connect(tunnel=...)` needs: one connection over a stream."""

    def __init__(self, stream: SshStream, spawn: Any) -> None:
        self._stream = stream
        self._spawn = spawn

    async def create_connection(
        self, session_factory: Any, remote_host: str, remote_port: int
    ) -> tuple[asyncio.Transport, Any]:
        protocol = session_factory()
        transport = StreamTransport(self._stream, self._spawn)
        transport.start(protocol)
        return transport, protocol


class _MachineClient(asyncssh.SSHClient):
    """Closes the client's connection when the machine's sshd goes away."""

    def __init__(self, owner: Connection) -> None:
        self._owner = owner

    def connection_lost(self, exc: Exception | None) -> None:
        self._owner.machine_lost()


class Connection(asyncssh.SSHServer):
    """One client connection: authentication, then a mirror to one machine."""

    def __init__(self, gateway: SshGateway) -> None:
        self.gateway = gateway
        self.conn: asyncssh.SSHServerConnection | None = None
        self.peer = "-"
        self.username = "-"
        self.target: Target | None = None
        self.upstream: asyncssh.SSHClientConnection | None = None
        self.opened = time.monotonic()
        self.bytes_to_client = 0
        self.bytes_from_client = 0
        self.channels = 0
        self.refusal = ""
        self._touched = 0.0
        self._waking: asyncio.Task[None] | None = None
        self._wake_wanted = False
        self._wake_checked = 0.0

    # -- connection ----------------------------------------------------------

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        peer = conn.get_extra_info("peername")
        if peer:
            self.peer = f"{peer[0]}:{peer[1]}"
        self.gateway.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.gateway.connections.discard(self)
        upstream, self.upstream = self.upstream, None
        if upstream is not None:
            upstream.close()
        if self.target is not None:
            log.info(
                "ssh connection closed %s",
                kv(
                    peer=self.peer,
                    workspace=self.target.workspace_id,
                    machine=self.target.machine_id,
                    user=self.target.linux_user,
                    seconds=round(time.monotonic() - self.opened, 1),
                    channels=self.channels,
                    bytes_in=self.bytes_from_client,
                    bytes_out=self.bytes_to_client,
                    error=_describe(exc),
                ),
            )
        else:
            log.info(
                "ssh connection closed %s",
                kv(
                    peer=self.peer,
                    login=self.username,
                    authenticated="no",
                    refusal=self.refusal or "-",
                    error=_describe(exc),
                ),
            )
        self.conn = None

    def machine_lost(self) -> None:
        if self.conn is not None and self.upstream is not None:
            self.upstream = None
            self.conn.close()

    def touch(self, count: int, to_client: bool) -> None:
        """Count relayed bytes; record activity at most once a second."""
        if to_client:
            self.bytes_to_client += count
        else:
            self.bytes_from_client += count
        now = time.monotonic()
        if now - self._touched >= ACTIVITY_INTERVAL and self.target is not None:
            self._touched = now
            try:
                self.gateway.backend.record_activity(self.target)
            except Exception:  # noqa: BLE001 - never break a relay over bookkeeping
                log.exception("recording activity failed")
        if not to_client:
            self.wake()

    def wake(self) -> None:
        """Resume the workspace if it was suspended under this open connection.

        A runc workspace suspended while a session is open keeps the connection
        with its sshd frozen: the user's next keystroke or new channel should
        bring it back, not hang until someone resumes it elsewhere. Checked at
        most once a second, and always once more after the last input.
        """
        self._wake_wanted = True
        if self.target is not None and self._waking is None:
            self._waking = self.gateway.spawn(self._wake(self.target))

    async def _wake(self, target: Target) -> None:
        try:
            while self._wake_wanted:
                delay = self._wake_checked + ACTIVITY_INTERVAL - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                if self.conn is None:
                    return  # the client left meanwhile: nothing to wake for
                self._wake_wanted = False
                self._wake_checked = time.monotonic()
                await self.gateway.backend.ensure_running(target)
        except NotConnectable as error:
            log.info(
                "ssh wake refused %s",
                kv(peer=self.peer, machine=target.machine_id, reason=str(error)),
            )
            self.machine_lost()
        finally:
            self._waking = None

    # -- authentication ------------------------------------------------------

    async def begin_auth(self, username: str) -> bool:
        self.username = usernames.redact(username)
        login = usernames.parse(username)
        if login is None:
            self._refuse("-", "-", "malformed username")
            return True
        if login.token is None:
            return True
        return not await self._admit(login, login.token)

    def password_auth_supported(self) -> bool:
        return True

    async def validate_password(self, username: str, password: str) -> bool:
        return await self._admit_username(username, password)

    def kbdint_auth_supported(self) -> bool:
        return True

    def get_kbdint_challenge(
        self, username: str, lang: str, submethods: str
    ) -> tuple[str, str, str, list[tuple[str, bool]]]:
        return "", "", "", [("Password (workspace access token): ", False)]

    async def validate_kbdint_response(  # type: ignore[override]
        self, username: str, responses: list[str]
    ) -> bool:
        if len(responses) != 1:
            return False
        return await self._admit_username(username, responses[0])

    async def _admit_username(self, username: str, token: str) -> bool:
        login = usernames.parse(username)
        if login is None:
            self._refuse("-", "-", "malformed username")
            return False
        return await self._admit(login, token)

    async def _admit(self, login: usernames.Login, token: str) -> bool:
        """Check the token, wake the workspace and connect to its sshd."""
        if self.target is not None:
            return True
        backend = self.gateway.backend
        try:
            target = backend.authenticate(login.machine_id, login.linux_user, token)
        except AccessDenied as denied:
            self._refuse(login.machine_id, login.linux_user, denied.reason)
            return False
        started = time.monotonic()
        try:
            await backend.ensure_running(target)
            self.upstream = await self._connect(target)
        except NotConnectable as error:
            self._unavailable(target, str(error))
            return False
        except (asyncssh.Error, OSError) as error:
            log.warning(
                "ssh machine login failed %s",
                kv(machine=target.machine_id, error=_describe(error)),
            )
            self._unavailable(target, "cannot log in to the workspace's sshd")
            return False
        if self.conn is None:
            self.upstream.close()
            self.upstream = None
            return False
        self.target = target
        self.opened = time.monotonic()
        backend.record_activity(target)
        log.info(
            "ssh connection opened %s",
            kv(
                peer=self.peer,
                workspace=target.workspace_id,
                machine=target.machine_id,
                user=target.linux_user,
                connect_ms=round((self.opened - started) * 1000),
            ),
        )
        return True

    def _refuse(self, machine: str, user: str, reason: str) -> None:
        self.refusal = reason
        log.info(
            "ssh login refused %s",
            kv(peer=self.peer, machine=machine, user=user, reason=reason),
        )

    def _unavailable(self, target: Target, reason: str) -> None:
        self.refusal = reason
        log.info(
            "ssh login refused %s",
            kv(peer=self.peer, machine=target.machine_id, reason=reason),
        )
        if self.conn is not None:
            self.conn.disconnect(asyncssh.DISC_BY_APPLICATION, reason)

    async def _connect(self, target: Target) -> asyncssh.SSHClientConnection:
        stream = await self.gateway.backend.open_ssh(target)
        try:
            return await asyncssh.connect(
                target.machine_id,
                tunnel=StreamTunnel(stream, self.gateway.spawn),
                client_factory=lambda: _MachineClient(self),
                username=target.linux_user,
                client_keys=[self.gateway.client_key],
                known_hosts=None,
                config=None,
                agent_path=None,
                password=None,
                gss_auth=False,
                gss_kex=False,
                preferred_auth="publickey",
                encryption_algs=MACHINE_CIPHERS,
                compression_algs=None,
                encoding=None,
                login_timeout=LOGIN_TIMEOUT,
                window=WINDOW,
                max_pktsize=MAX_PKTSIZE,
            )
        except BaseException:
            await stream.close()
            raise

    # -- channels ------------------------------------------------------------

    def session_requested(self) -> Any:
        if self.upstream is None:
            return False
        self.channels += 1
        self.wake()
        return relay.ClientSession(self.upstream, self.touch, self.gateway.spawn)

    def connection_requested(
        self, dest_host: str, dest_port: int, orig_host: str, orig_port: int
    ) -> Any:
        if self.upstream is None:
            return False
        self.channels += 1
        self.wake()
        return self._direct_tcpip(dest_host, dest_port, orig_host, orig_port)

    async def _direct_tcpip(
        self, dest_host: str, dest_port: int, orig_host: str, orig_port: int
    ) -> relay.TcpHalf:
        assert self.upstream is not None
        client, machine = relay.tcp_pair(self.touch)
        await self.upstream.create_connection(
            lambda: machine, dest_host, dest_port, orig_host, orig_port, encoding=None
        )
        return client

    def server_requested(self, listen_host: str, listen_port: int) -> Any:
        if self.upstream is None:
            return False
        return self._remote_forward(listen_host, listen_port)

    async def _remote_forward(
        self, listen_host: str, listen_port: int
    ) -> asyncssh.SSHListener | bool:
        assert self.upstream is not None
        port = listen_port

        async def accept(orig_host: str, orig_port: int) -> relay.TcpHalf:
            if self.conn is None:
                raise asyncssh.ChannelOpenError(
                    asyncssh.OPEN_CONNECT_FAILED, "client is gone"
                )
            self.channels += 1
            client, machine = relay.tcp_pair(self.touch)
            await self.conn.create_connection(
                lambda: client, listen_host, port, orig_host, orig_port, encoding=None
            )
            return machine

        try:
            listener = await self.upstream.create_server(
                accept, listen_host, listen_port, encoding=None
            )
        except (asyncssh.Error, OSError):
            return False
        port = listener.get_port()
        return listener


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "-"
    return getattr(exc, "reason", "") or type(exc).__name__


class SshGateway:
    """The listening server; `start` and `stop` are all `jjhub server` uses."""

    def __init__(
        self, backend: GatewayBackend, keys: GatewayKeys, host: str, port: int
    ) -> None:
        self.backend = backend
        self.keys = keys
        self.host = host
        self.port = port
        self.client_key = asyncssh.read_private_key(str(keys.client_key))
        self.connections: set[Connection] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._server: asyncssh.SSHAcceptor | None = None

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run a background task, keeping a reference until it is done."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning(
                "ssh gateway task failed %s", kv(error=_describe(task.exception()))
            )

    async def start(self) -> None:
        self._server = await asyncssh.create_server(
            lambda: Connection(self),
            self.host,
            self.port,
            server_host_keys=[str(self.keys.host_key)],
            encryption_algs=CLIENT_CIPHERS,
            compression_algs=None,
            encoding=None,
            line_editor=False,
            allow_pty=True,
            agent_forwarding=False,
            x11_forwarding=False,
            keepalive_interval=KEEPALIVE_INTERVAL,
            keepalive_count_max=KEEPALIVE_COUNT_MAX,
            login_timeout=LOGIN_TIMEOUT,
            window=WINDOW,
            max_pktsize=MAX_PKTSIZE,
            tunnel=BatchingListener(),
        )
        sockets = self._server.sockets
        if sockets and self.port == 0:
            self.port = sockets[0].getsockname()[1]
        log.info("ssh gateway listening %s", kv(host=self.host, port=self.port))

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for connection in list(self.connections):
            if connection.conn is not None:
                connection.conn.close()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
