"""Looking inside workspaces from tests, through the runtime itself."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path


def runc_exec(
    data_dir: Path, machine_id: str, script: str, user: str = "developer"
) -> str:
    """Run a shell script inside a runc machine; its stdout, or an assertion."""
    argv = ["runc", "--root", str(data_dir / "runc"), "exec"]
    if user == "developer":
        argv += ["--user", "1000:1000", "--env", "HOME=/home/developer"]
    argv += [machine_id, "/bin/sh", "-c", script]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{script!r} failed: {result.stderr}"
    return result.stdout


def runc_state(data_dir: Path, machine_id: str) -> str:
    result = subprocess.run(
        ["runc", "--root", str(data_dir / "runc"), "state", machine_id],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        return "missing"
    import json

    return str(json.loads(result.stdout)["status"])


def host_leftovers(machine_id: str) -> list[str]:
    """Mounts, cgroups and processes on the host that still name a machine."""
    found = []
    for line in Path("/proc/mounts").read_text().splitlines():
        if machine_id in line:
            found.append(f"mount: {line}")
    for pattern in (f"*/*{machine_id}*", f"*/*/*{machine_id}*"):
        found += [f"cgroup: {p}" for p in Path("/sys/fs/cgroup").glob(pattern)]
    ps = subprocess.run(["ps", "axo", "pid,args"], capture_output=True, text=True)
    found += [f"process: {row}" for row in ps.stdout.splitlines() if machine_id in row]
    return found


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def read_machine_file(data_dir: Path, machine_id: str, path: str) -> str:
    """A file inside a machine, read from the host (works while it is frozen)."""
    import json

    state = subprocess.run(
        ["runc", "--root", str(data_dir / "runc"), "state", machine_id],
        capture_output=True,
        text=True,
        check=True,
    )
    pid = json.loads(state.stdout)["pid"]
    return Path(f"/proc/{pid}/root{path}").read_text()
