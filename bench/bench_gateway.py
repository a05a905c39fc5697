"""SSH gateway against the same machine's sshd reached directly.

Starts a `jjhub server` with a runc workspace, then with the stock OpenSSH
client measures, through the gateway and directly (`ProxyCommand` running
`runc exec ID /usr/sbin/sshd -i`, the gateway's own path minus the gateway):

- `scp` of a file of random bytes, up and down;
- round trips: small `exec`s over one multiplexed connection (ControlMaster),
  so each is one session channel open, exec, exit status and close;
- a few full connections (key exchange, login, `true`).

Writes `bench/results/gateway.json`. Run as root from the repository root:
`.venv/bin/python bench/bench_gateway.py`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.server import JJHubServer  # noqa: E402

OPTIONS = [
    "-F", "/dev/null",
    "-o", "StrictHostKeyChecking=no",
    "-o", "UserKnownHostsFile=/dev/null",
    "-o", "BatchMode=yes",
    "-o", "LogLevel=ERROR",
]  # fmt: skip


def run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[bytes]:
    result = subprocess.run(argv, capture_output=True, timeout=600, **kwargs)  # type: ignore[call-overload]
    if result.returncode != 0:
        raise RuntimeError(f"{shlex.join(argv)} failed: {result.stderr.decode()}")
    return result


def timed(argv: list[str]) -> float:
    started = time.perf_counter()
    run(argv)
    return time.perf_counter() - started


class Route:
    """How to reach the machine: host alias plus ssh options."""

    def __init__(self, name: str, options: list[str], host: str) -> None:
        self.name = name
        self.options = options
        self.host = host

    def ssh(self, *extra: str) -> list[str]:
        return ["ssh", *OPTIONS, *self.options, *extra, self.host]

    def scp(self, *args: str) -> list[str]:
        return ["scp", *OPTIONS, *self.options, *args]


def gateway_route(command: str) -> Route:
    argv = shlex.split(command)
    port = argv[argv.index("-p") + 1]
    user, _, host = argv[-1].rpartition("@")
    # scp splits `user:token@host` at the colon, so the user goes in -o User=.
    return Route("gateway", ["-p", port, "-o", f"User={user}"], host)


def scp_port_fix(route: Route, argv: list[str]) -> list[str]:
    """scp spells the port -P."""
    return ["-P" if a == "-p" else a for a in argv]


def direct_route(data_dir: Path, machine_id: str) -> Route:
    proxy = f"runc --root {data_dir / 'runc'} exec {machine_id} /usr/sbin/sshd -i"
    options = [
        "-i", str(data_dir / "ssh" / "client_ed25519"),
        "-o", "IdentitiesOnly=yes",
        "-o", f"ProxyCommand={proxy}",
        "-o", "User=developer",
    ]  # fmt: skip
    return Route("direct", options, machine_id)


def throughput(routes: list[Route], source: Path, scratch: Path, rounds: int) -> dict:
    """scp up and down, the routes interleaved so background load hits both."""
    size = source.stat().st_size
    times: dict[str, dict[str, list[float]]] = {
        route.name: {"up": [], "down": []} for route in routes
    }
    for n in range(rounds):
        for route in routes:
            up = route.scp(str(source), f"{route.host}:bench.bin")
            times[route.name]["up"].append(timed(scp_port_fix(route, up)))
        for route in routes:
            target = scratch / f"{route.name}-{n}.bin"
            down = route.scp(f"{route.host}:bench.bin", str(target))
            times[route.name]["down"].append(timed(scp_port_fix(route, down)))
            if target.stat().st_size != size:
                raise RuntimeError("download came back short")
            target.unlink()
    mib = size / 2**20
    return {
        name: {
            "upload_seconds": [round(t, 3) for t in t_["up"]],
            "download_seconds": [round(t, 3) for t in t_["down"]],
            "upload_mib_s": round(mib / statistics.median(t_["up"]), 1),
            "download_mib_s": round(mib / statistics.median(t_["down"]), 1),
        }
        for name, t_ in times.items()
    }


def round_trips(route: Route, scratch: Path, count: int) -> dict:
    control = scratch / f"{route.name}.ctl"
    master = subprocess.Popen(
        route.ssh("-M", "-S", str(control), "-N", "-o", "ControlPersist=no"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        for _ in range(200):
            if control.exists():
                break
            time.sleep(0.05)
        mux = route.ssh("-S", str(control), "-o", "ControlMaster=no")
        for _ in range(5):  # warm up
            run([*mux, "true"])
        samples = [timed([*mux, "true"]) for _ in range(count)]
    finally:
        master.terminate()
        master.wait(timeout=10)
    return {
        "count": count,
        "mean_ms": round(statistics.mean(samples) * 1000, 2),
        "median_ms": round(statistics.median(samples) * 1000, 2),
        "p95_ms": round(sorted(samples)[int(len(samples) * 0.95)] * 1000, 2),
    }


def connects(route: Route, count: int) -> dict:
    samples = [timed([*route.ssh(), "true"]) for _ in range(count)]
    return {
        "count": count,
        "median_ms": round(statistics.median(samples) * 1000, 1),
        "max_ms": round(max(samples) * 1000, 1),
    }


def cipher(route: Route) -> str:
    result = run([*route.ssh("-v"), "true"])
    for line in result.stderr.decode().splitlines():
        if "cipher:" in line and "server->client" in line:
            return line.split("cipher:")[1].split()[0]
    return "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--execs", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/gateway.json")
    args = parser.parse_args()

    os.environ.setdefault("JJHUB_IMAGE_DIR", "/var/tmp/jjhub-test-images")
    scratch = Path(tempfile.mkdtemp(prefix="jjhub-bench-gw-", dir="/var/tmp"))
    scratch.chmod(0o755)  # machines run in a user namespace and must traverse it
    server = JJHubServer(scratch / "data")
    server.data_dir.mkdir()
    server.start()
    try:
        token = server.create_user("bench")
        with server.client(token) as api:
            api.post("/api/user/repos", json={"name": "bench"}).raise_for_status()
            created = api.post("/api/repos/bench/bench/workspaces", json={})
            if created.status_code != 201:
                raise RuntimeError(f"{created.text}\n{server.log_tail()}")
            workspace = created.json()
            info = api.get(
                f"/api/repos/bench/bench/workspaces/{workspace['id']}/ssh"
            ).json()
        gateway = gateway_route(info["command"])
        direct = direct_route(server.data_dir, workspace["freestyle_vm_id"])

        source = scratch / "source.bin"
        with open(source, "wb") as handle:
            for _ in range(args.size_mib):
                handle.write(os.urandom(2**20))

        results: dict = {}
        scp = throughput([direct, gateway], source, scratch, args.rounds)
        for route in (direct, gateway):
            results[route.name] = {
                "cipher": cipher(route),
                "scp": scp[route.name],
                "exec_round_trip": round_trips(route, scratch, args.execs),
                "connect": connects(route, 10),
            }
        d, g = results["direct"], results["gateway"]
        results["summary"] = {
            "upload_ratio": round(
                g["scp"]["upload_mib_s"] / d["scp"]["upload_mib_s"], 3
            ),
            "download_ratio": round(
                g["scp"]["download_mib_s"] / d["scp"]["download_mib_s"], 3
            ),
            "added_round_trip_ms": round(
                g["exec_round_trip"]["median_ms"] - d["exec_round_trip"]["median_ms"], 2
            ),
            "added_connect_ms": round(
                g["connect"]["median_ms"] - d["connect"]["median_ms"], 1
            ),
        }
        results["setup"] = {
            "size_mib": args.size_mib,
            "rounds": args.rounds,
            "host": platform.node(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "openssh": run(["ssh", "-V"]).stderr.decode().strip(),
            "load_average": os.getloadavg(),
            "note": (
                "ratios are gateway / direct from this one run (medians of "
                "interleaved rounds); the host is shared with other work"
            ),
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
        print(json.dumps(results["summary"], indent=2))
    finally:
        server.stop()
        server.cleanup_machines()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
