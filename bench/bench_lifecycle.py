"""Lifecycle of runc workspaces: create to ready, suspend, resume, delete, memory.

    .venv/bin/python bench/bench_lifecycle.py [--count 12] [--rounds 2]

Drives `RuncRuntime` directly (no HTTP, no database), with the base image warm
(`JJHUB_IMAGE_DIR`, default /var/tmp/jjhub-test-images, built beforehand) and
two unmeasured warm-up machines first. Then:

- create to ready: `create()` of `--count` machines one after the other, each
  timed until the driver reports sshd ready; all of them stay running;
- resident memory per idle workspace: after the machines sat idle for a few
  seconds, per machine the sum of VmRSS (and of PSS) of the processes in its
  memory cgroup, and the cgroup's own usage; median over the machines;
- suspend and resume: `--rounds` cycles over every machine;
- delete: every machine, timed.

Goals (issue 2): create to ready < 1 s, suspend and resume < 50 ms, < 30 MiB
per idle workspace. Writes `bench/results/lifecycle.json`. Run as root.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

import benchlib  # noqa: E402

from jjhub.runtime.base import SIZES, MachineSpec, MachineState  # noqa: E402
from jjhub.runtime.runc import RuncRuntime  # noqa: E402

# A range no test or default server uses, so the bridge is the benchmark's own.
CIDR = "10.198.0.0/24"
IDLE_SETTLE_SECONDS = 5.0
MIB = 1024 * 1024


def spec(machine_id: str) -> MachineSpec:
    return MachineSpec(machine_id, SIZES["small"], benchlib.BENCH_KEY)


def memory_cgroup(pid: int) -> tuple[Path, str]:
    """The memory cgroup directory of a process, and "v1" or "v2"."""
    v2_path = None
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return Path("/sys/fs/cgroup/memory") / path.lstrip("/"), "v1"
        if controllers == "":
            v2_path = path.lstrip("/")
    if v2_path is not None:
        for root in (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified")):
            if (root / v2_path / "memory.current").exists():
                return root / v2_path, "v2"
    raise RuntimeError(f"no memory cgroup for pid {pid}")


def _kib_field(text: str, name: str) -> int:
    for line in text.splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    return 0


def machine_memory(init_pid: int) -> dict[str, object]:
    """RSS and PSS of every process in the machine's cgroup, and the cgroup's."""
    cgroup, version = memory_cgroup(init_pid)
    pids = [int(p) for p in (cgroup / "cgroup.procs").read_text().split()]
    rss_kib = pss_kib = 0
    processes = []
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue  # exited meanwhile
        rss = _kib_field(status, "VmRSS")
        rss_kib += rss
        pss_kib += _kib_field(rollup, "Pss")
        name = status.splitlines()[0].split(":", 1)[1].strip()
        processes.append(f"{name} {rss} KiB")
    stat = dict(
        (line.split()[0], int(line.split()[1]))
        for line in (cgroup / "memory.stat").read_text().splitlines()
    )
    if version == "v1":
        usage = int((cgroup / "memory.usage_in_bytes").read_text())
        anon = stat.get("rss", 0)
    else:
        usage = int((cgroup / "memory.current").read_text())
        anon = stat.get("anon", 0)
    return {
        "rss_mib": rss_kib / 1024,
        "pss_mib": pss_kib / 1024,
        "cgroup_usage_mib": usage / MIB,
        "cgroup_anon_mib": anon / MIB,
        "cgroup_version": version,
        "processes": processes,
    }


async def timed(action: Awaitable[object]) -> float:
    started = time.perf_counter()
    await action
    return time.perf_counter() - started


async def bench(runtime: RuncRuntime, count: int, rounds: int) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:6]
    load: dict[str, list[float]] = {"start": benchlib.load_average()}
    for index in range(2):  # warm the image, the network and the page cache
        warm = f"bw-{tag}-{index}"
        await runtime.create(spec(warm))
        await runtime.delete(warm)

    machines = [f"bl-{tag}-{index:02d}" for index in range(count)]
    creates = []
    for machine_id in machines:
        creates.append(await timed(runtime.create(spec(machine_id))))
    load["after_create"] = benchlib.load_average()

    await asyncio.sleep(IDLE_SETTLE_SECONDS)
    memory = []
    for machine_id in machines:
        info = await runtime.inspect(machine_id)
        assert info.pid, f"{machine_id} has no init pid"
        memory.append(machine_memory(info.pid))
    load["at_memory"] = benchlib.load_average()

    suspends, resumes = [], []
    for _ in range(rounds):
        for machine_id in machines:
            suspends.append(await timed(runtime.suspend(machine_id)))
            state = (await runtime.inspect(machine_id)).state
            assert state == MachineState.SUSPENDED, f"{machine_id} is {state}"
            resumes.append(await timed(runtime.resume(machine_id)))
            state = (await runtime.inspect(machine_id)).state
            assert state == MachineState.RUNNING, f"{machine_id} is {state}"
    load["after_suspend_resume"] = benchlib.load_average()

    deletes = []
    for machine_id in machines:
        deletes.append(await timed(runtime.delete(machine_id)))
        assert not (runtime.machines_dir / machine_id).exists(), (
            f"{machine_id} left files"
        )
    load["end"] = benchlib.load_average()

    def values(key: str) -> list[float]:
        return [float(m[key]) for m in memory]  # type: ignore[arg-type]

    return {
        "create_to_ready": benchlib.summarize(creates),
        "suspend": benchlib.summarize(suspends),
        "resume": benchlib.summarize(resumes),
        "delete": benchlib.summarize(deletes),
        "idle_memory": {
            "machines": len(memory),
            "idle_seconds": IDLE_SETTLE_SECONDS,
            "cgroup_version": memory[0]["cgroup_version"],
            "processes_of_one": memory[0]["processes"],
            "rss_sum": benchlib.summarize_values(values("rss_mib"), "mib"),
            "pss_sum": benchlib.summarize_values(values("pss_mib"), "mib"),
            "cgroup_usage": benchlib.summarize_values(
                values("cgroup_usage_mib"), "mib"
            ),
            "cgroup_anon": benchlib.summarize_values(values("cgroup_anon_mib"), "mib"),
        },
        "load_average": load,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with benchlib.scratch_dir("jjhub-bench-lifecycle") as scratch:
        data_dir = scratch / "data"
        runtime = RuncRuntime(data_dir, benchlib.IMAGE_DIR, CIDR)
        try:
            await runtime.prepare()
            results = await bench(runtime, args.count, args.rounds)
        finally:
            for info in await runtime.list():
                await runtime.delete(info.machine_id)
            benchlib.remove_host_network(runtime.network.bridge, runtime.network.table)
            benchlib.remove_cgroup_parent(runtime.cgroup_parent)
        storage = benchlib.filesystem_type(scratch)
    return {
        "benchmark": "lifecycle",
        "runtime": "runc",
        "results": results,
        "goals": {
            "create_to_ready_ms": 1000,
            "suspend_ms": 50,
            "resume_ms": 50,
            "idle_memory_mib": 30,
        },
        "setup": {
            "count": args.count,
            "rounds": args.rounds,
            "size": "small (1 CPU, 1024 MiB limit)",
            "data_dir_filesystem": storage,
            "image_dir": str(benchlib.IMAGE_DIR),
            "image": "warm (base image built and uid-shifted before timing)",
            "level": "RuncRuntime calls, no HTTP or database",
            "machine": benchlib.machine(),
            "note": "shared host: other engineers' tests run at the same time; "
            "see load_average",
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=12, help="machines (>= 10)")
    parser.add_argument("--rounds", type=int, default=2, help="suspend/resume cycles")
    args = parser.parse_args()
    os.environ.setdefault("JJHUB_IMAGE_DIR", str(benchlib.IMAGE_DIR))
    data = asyncio.run(run(args))
    path = benchlib.write_result("lifecycle", data)
    results = data["results"]
    for verb in ("create_to_ready", "suspend", "resume", "delete"):
        print(
            f"{verb}: median {results[verb]['median_ms']} ms, "
            f"p95 {results[verb]['p95_ms']} ms"
        )
    memory = results["idle_memory"]
    print(
        f"idle memory: rss {memory['rss_sum']['median_mib']} MiB, "
        f"cgroup {memory['cgroup_usage']['median_mib']} MiB"
    )
    print(f"load average {results['load_average']}; wrote {path}")


if __name__ == "__main__":
    main()
