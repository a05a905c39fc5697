"""A real `jjhub server` subprocess for tests, with its own data dir and ports.

Each server gets a unique /22 for workspace networking so servers started by
different tests never share a bridge or NAT table.
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]
JJHUB = [sys.executable, "-m", "jjhub.cli.main"]
_network_numbers = itertools.count(1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def jjhub_argv() -> list[str]:
    return [str(Path(sys.executable).parent / "jjhub")]


@dataclass
class JJHubServer:
    data_dir: Path
    runtime: str = "runc"
    env: dict[str, str] = field(default_factory=dict)
    api_port: int = field(default_factory=free_port)
    ssh_port: int = field(default_factory=free_port)
    network_cidr: str = ""
    process: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        if not self.network_cidr:
            # A /22 per server: the second octet per test process, the third
            # per server within it.
            third = (next(_network_numbers) * 4) % 256
            self.network_cidr = f"10.{200 + os.getpid() % 40}.{third}.0/22"
        self.log_path = self.data_dir / "server.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def server_env(self) -> dict[str, str]:
        return {
            **os.environ,
            "JJHUB_DATA_DIR": str(self.data_dir),
            "JJHUB_API_PORT": str(self.api_port),
            "JJHUB_SSH_PORT": str(self.ssh_port),
            "JJHUB_SSH_LISTEN_HOST": "127.0.0.1",
            "JJHUB_SSH_PUBLIC_HOST": "127.0.0.1",
            "JJHUB_RUNTIME": self.runtime,
            "JJHUB_NETWORK_CIDR": self.network_cidr,
            # Tests poll; the rate limit has its own test with its own limit.
            "JJHUB_RATE_LIMIT": "100000",
            **self.env,
        }

    def start(self, timeout: float = 300.0) -> JJHubServer:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [*jjhub_argv(), "server"],
                env=self.server_env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"server did not become ready:\n{self.log_tail()}")

    def __enter__(self) -> JJHubServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Stop the server and remove the machines it left running."""
        self.stop()
        self.cleanup_machines()

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill9(self) -> None:
        self.stop(signal.SIGKILL)

    def admin(self, *args: str) -> str:
        result = subprocess.run(
            [*jjhub_argv(), "admin", *args, "--data-dir", str(self.data_dir)],
            capture_output=True,
            text=True,
            env=self.server_env(),
        )
        if result.returncode != 0:
            raise RuntimeError(f"jjhub admin {args} failed: {result.stderr}")
        return result.stdout

    def create_user(self, name: str, admin: bool = False) -> str:
        """A user and their API token, made through the admin CLI."""
        flags = ["--admin"] if admin else []
        out = self.admin("user", "create", name, *flags, "--token")
        return out.strip().splitlines()[-1]

    def client(self, token: str | None) -> httpx.Client:
        headers = {"Authorization": f"token {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=120)

    def cleanup_machines(self) -> None:
        """Delete every machine this server's data dir holds (end of a test)."""
        import asyncio

        from jjhub.config import Settings
        from jjhub.runtime.select import make_runtime

        settings = Settings(
            data_dir=self.data_dir, runtime=self.runtime, network_cidr=self.network_cidr
        )
        runtime = make_runtime(settings)

        async def wipe() -> None:
            for machine in await runtime.list():
                await runtime.delete(machine.machine_id)
            remove_network = getattr(runtime, "remove_host_network", None)
            if remove_network is not None:
                await remove_network()

        asyncio.run(wipe())
