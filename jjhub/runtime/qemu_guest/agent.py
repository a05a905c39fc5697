"""jjhub guest agent: serves the host over virtio-serial ports.

Each port named `org.jjhub.agent.N` carries one session at a time. The host
opens a session with MAGIC + "H" + nonce + a framed JSON header and waits for
MAGIC + "A" + nonce; after that both sides exchange frames of one type byte,
a 4-byte big-endian length and a payload:

    host -> guest   D stdin/stream data, E end of input
    guest -> host   D stdout/stream data, e stderr, X exit (JSON)

Operations: `ssh` bridges to the local sshd, `exec` runs a command. A port
whose host side is not connected reads as end of file, which ends any session
on it: that is how suspend, fork and a closed gateway connection look here.
Runs with the Debian python3 of the guest, standard library only.
"""

import contextlib
import json
import os
import pwd
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

MAGIC = b"\x00JJHUB1\x00"
NONCE_SIZE = 8
PORT_PREFIX = "org.jjhub.agent."
IDLE_POLL_SECONDS = 0.1
READY_MARKER = "JJHUB-AGENT-READY"
OUTPUT_GRACE_SECONDS = 5
CHUNK = 65536


def log(*parts):
    print(time.strftime("%H:%M:%S"), *parts, file=sys.stderr, flush=True)


class HostGone(Exception):
    """The host side of the port disconnected."""


class NewSession(Exception):
    """The host reconnected and opened a new session on this port.

    A disconnect followed quickly by a new connection may never show as end
    of file here, so a session also ends when a frame starts with MAGIC,
    which no frame type does.
    """


class Port:
    """One virtio-serial port opened non-blocking."""

    def __init__(self, path):
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
        self.buffer = b""
        self.write_lock = threading.Lock()

    def host_connected(self):
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        events = poller.poll(0)
        return not events or not events[0][1] & select.POLLHUP

    def fill(self, timeout):
        """Append what the host sent within `timeout`; HostGone at end of file."""
        try:
            data = os.read(self.fd, CHUNK)
        except BlockingIOError:
            select.select([self.fd], [], [], timeout)
            try:
                data = os.read(self.fd, CHUNK)
            except BlockingIOError:
                return
        if not data:
            raise HostGone()
        self.buffer += data

    def read_exact(self, size):
        while len(self.buffer) < size:
            self.fill(1.0)
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def next_frame(self, timeout):
        """The next complete frame, or None if none arrived within `timeout`."""
        if len(self.buffer) < 5 or len(self.buffer) < 5 + self._length():
            self.fill(timeout)
        if self.buffer[:1] == MAGIC[:1]:
            raise NewSession()
        if len(self.buffer) < 5 or len(self.buffer) < 5 + self._length():
            return None
        kind, length = struct.unpack(">cI", self.buffer[:5])
        payload = self.buffer[5 : 5 + length]
        self.buffer = self.buffer[5 + length :]
        return kind, payload

    def _length(self):
        return struct.unpack(">I", self.buffer[1:5])[0] if len(self.buffer) >= 5 else 0

    def wait_for_header(self):
        """Skip stale bytes up to the next session opening; return nonce, header."""
        marker = MAGIC + b"H"
        while marker not in self.buffer:
            self.buffer = self.buffer[-len(marker) :]
            self.fill(1.0)
        self.buffer = self.buffer[self.buffer.index(marker) + len(marker) :]
        nonce = self.read_exact(NONCE_SIZE)
        kind, length = struct.unpack(">cI", self.read_exact(5))
        return nonce, json.loads(self.read_exact(length))

    def write_all(self, data):
        with self.write_lock:
            view = memoryview(data)
            while view:
                try:
                    written = os.write(self.fd, view)
                except BlockingIOError:
                    written = 0
                except OSError as error:
                    raise HostGone() from error
                if written == 0:
                    if not self.host_connected():
                        raise HostGone()
                    select.select([], [self.fd], [], 1.0)
                    continue
                view = view[written:]

    def send(self, kind, payload=b""):
        self.write_all(struct.pack(">cI", kind, len(payload)) + payload)


def serve_port(port):
    path = port.path
    while True:
        try:
            if not port.host_connected():
                port.buffer = b""
                time.sleep(IDLE_POLL_SECONDS)
                continue
            nonce, header = port.wait_for_header()
            port.write_all(MAGIC + b"A" + nonce)
            run_session(port, header)
        except HostGone:
            port.buffer = b""
            time.sleep(IDLE_POLL_SECONDS)
        except NewSession:
            pass
        except Exception as error:  # keep serving whatever one session did
            log("session failed", path, repr(error))
            with contextlib.suppress(Exception):
                port.send(b"X", json.dumps({"error": repr(error)}).encode())
            time.sleep(IDLE_POLL_SECONDS)


def run_session(port, header):
    operation = header.get("op")
    if operation == "ssh":
        bridge_tcp(port, header.get("port", 22))
    elif operation == "exec":
        run_command(port, header)
    else:
        port.send(b"X", json.dumps({"error": f"unknown op {operation}"}).encode())


def bridge_tcp(port, tcp_port):
    connection = socket.create_connection(("127.0.0.1", tcp_port), timeout=30)
    connection.settimeout(None)
    finished = threading.Event()

    def tcp_to_host():
        try:
            while True:
                data = connection.recv(CHUNK)
                if not data:
                    break
                port.send(b"D", data)
            port.send(b"X", b"{}")
        except (HostGone, OSError):
            pass
        finally:
            finished.set()

    reader = threading.Thread(target=tcp_to_host, daemon=True)
    reader.start()
    try:
        while not finished.is_set():
            frame = port.next_frame(0.2)
            if frame is None:
                continue
            kind, payload = frame
            if kind == b"D":
                connection.sendall(payload)
            elif kind == b"E":
                connection.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            connection.shutdown(socket.SHUT_RDWR)
        connection.close()
        reader.join()


def user_environment(user):
    entry = pwd.getpwnam(user)
    env = {
        "HOME": entry.pw_dir,
        "USER": user,
        "LOGNAME": user,
        "SHELL": entry.pw_shell,
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "C.UTF-8",
    }
    return entry, env


def run_command(port, header):
    entry, env = user_environment(header.get("user", "root"))
    env.update(header.get("env", {}))
    try:
        process = subprocess.Popen(
            header["argv"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=entry.pw_dir if os.path.isdir(entry.pw_dir) else "/",
            start_new_session=True,
            preexec_fn=become(entry),
        )
    except OSError as error:
        port.send(b"e", f"{error}\n".encode())
        port.send(b"X", json.dumps({"code": 127}).encode())
        return
    live = threading.Event()
    live.set()
    pumps = [
        threading.Thread(target=pump, args=(stream, port, kind, live), daemon=True)
        for stream, kind in ((process.stdout, b"D"), (process.stderr, b"e"))
    ]
    for thread in pumps:
        thread.start()
    try:
        feed(port, process)
    except (HostGone, NewSession):
        # Nobody is left to read the result: end the command like a hangup.
        live.clear()
        with contextlib.suppress(OSError):
            os.killpg(process.pid, signal.SIGHUP)
        raise
    # Output still held open by a background child is not waited for long.
    for thread in pumps:
        thread.join(timeout=OUTPUT_GRACE_SECONDS)
    live.clear()
    port.send(b"X", json.dumps({"code": process.returncode}).encode())


def feed(port, process):
    """Pass stdin until the command exits, watching the port for hangups."""
    stdin = process.stdin
    while process.poll() is None:
        frame = port.next_frame(0.1)
        if frame is None or stdin is None:
            continue
        kind, payload = frame
        try:
            if kind == b"D":
                stdin.write(payload)
                stdin.flush()
            elif kind == b"E":
                stdin.close()
                stdin = None
        except OSError:
            stdin = None
    if stdin is not None:
        with contextlib.suppress(OSError):
            stdin.close()


def pump(stream, port, kind, live):
    """Forward output while the session lives; afterwards drain it."""
    while True:
        data = stream.read1(CHUNK)
        if not data:
            break
        if live.is_set():
            try:
                port.send(kind, data)
            except HostGone:
                live.clear()
    stream.close()


def find_ports():
    ports = []
    for name in sorted(os.listdir("/sys/class/virtio-ports")):
        with open(f"/sys/class/virtio-ports/{name}/name") as handle:
            label = handle.read().strip()
        if label.startswith(PORT_PREFIX):
            ports.append(f"/dev/{name}")
    return ports


def announce_ready():
    """Tell the host, through the serial console, that every port is open."""
    try:
        with open("/dev/ttyS0", "w") as console:
            console.write(READY_MARKER + "\n")
    except OSError as error:
        log("cannot write the ready marker:", error)


def protect_from_oom():
    """The agent is how the host reaches the guest: let the OOM killer spare it."""
    try:
        with open("/proc/self/oom_score_adj", "w") as handle:
            handle.write("-1000")
    except OSError as error:
        log("cannot set oom_score_adj:", error)


def become(entry):
    """Runs in the child: drop the agent's OOM protection, then become the user."""
    groups = os.getgrouplist(entry.pw_name, entry.pw_gid)

    def demote():
        with open("/proc/self/oom_score_adj", "w") as handle:
            handle.write("0")
        os.setgroups(groups)
        os.setgid(entry.pw_gid)
        os.setuid(entry.pw_uid)

    return demote


def announce_restart(ports):
    """End sessions a previous agent left: the host sees MAGIC + "R" and gives up."""
    for port in ports:
        if port.host_connected():
            try:
                port.write_all(MAGIC + b"R")
            except HostGone:
                pass


def main():
    protect_from_oom()
    paths = []
    for _ in range(300):
        paths = find_ports() if os.path.isdir("/sys/class/virtio-ports") else []
        if paths:
            break
        time.sleep(0.1)
    ports = [Port(path) for path in paths]
    announce_restart(ports)
    threads = [threading.Thread(target=serve_port, args=(p,)) for p in ports]
    for thread in threads:
        thread.start()
    log("serving", len(ports), "ports")
    announce_ready()
    for thread in threads:
        thread.join()


if __name__ == "__main__":
    main()
