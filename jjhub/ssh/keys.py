"""The gateway's own keys, generated once and kept in the data directory.

The host key is what clients pin in known_hosts; the client key is how the
gateway logs in to each machine's sshd. Regenerating either would break
users' known_hosts or every running machine, so they are only ever created.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import asyncssh


@dataclass(frozen=True)
class GatewayKeys:
    host_key: Path
    client_key: Path
    client_public_key: str


def _ensure(path: Path) -> asyncssh.SSHKey:
    if path.exists():
        return asyncssh.read_private_key(str(path))
    key = asyncssh.generate_private_key("ssh-ed25519", comment="jjhub-gateway")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(key.export_private_key())
    os.chmod(tmp, 0o600)
    tmp.rename(path)
    return key


def ensure_keys(data_dir: Path) -> GatewayKeys:
    ssh_dir = data_dir / "ssh"
    _ensure(ssh_dir / "host_ed25519")
    client = _ensure(ssh_dir / "client_ed25519")
    public = client.export_public_key().decode().strip()
    return GatewayKeys(ssh_dir / "host_ed25519", ssh_dir / "client_ed25519", public)
