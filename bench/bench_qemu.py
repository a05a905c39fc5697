"""Latency of the QEMU driver's verbs for 256 MB and 1 GB guests.

    .venv/bin/python bench/bench_qemu.py [--sizes 256,1024] [--rounds 3]

Measures boot-to-SSH (create), suspend, resume, snapshot, restore and fork on
a fresh reflink XFS (a loop device, removed afterwards) unless `--data-dir`
names one. Before timing, each guest fills `--fill` of its memory (tmpfs) so a
1 GB guest really holds more memory than a 256 MB one, and the RAM file is
flushed so every size starts from clean page cache. Results, the accelerator
and the machine go to bench/results/qemu-<accel>-<date>.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import platform
import shutil
import statistics
import subprocess
import time
import uuid
from collections.abc import Awaitable, Iterator
from pathlib import Path

from jjhub.runtime.base import MachineSpec, Size
from jjhub.runtime.qemu import QemuRuntime
from jjhub.runtime.qemu_machine import RAM, VMSTATE, qemu_version

RESULTS = Path(__file__).parent / "results"
IMAGE_DIR = Path(os.environ.get("JJHUB_IMAGE_DIR", "/var/tmp/jjhub-images"))


@contextlib.contextmanager
def reflink_xfs() -> Iterator[Path]:
    base = Path(f"/var/tmp/jjhub-bench-xfs-{os.getpid()}")
    image = base.with_suffix(".img")
    base.mkdir(parents=True, exist_ok=True)
    with open(image, "wb") as handle:
        handle.truncate(32 * 1024**3)
    subprocess.run(["mkfs.xfs", "-q", "-f", "-m", "reflink=1", str(image)], check=True)
    subprocess.run(["mount", "-o", "loop", str(image), str(base)], check=True)
    try:
        yield base
    finally:
        subprocess.run(["umount", "-l", str(base)], check=False)
        image.unlink(missing_ok=True)
        shutil.rmtree(base, ignore_errors=True)


async def timed(action: Awaitable[object]) -> float:
    started = time.monotonic()
    await action
    return time.monotonic() - started


def spec(name: str, memory_mib: int) -> MachineSpec:
    return MachineSpec(name, Size(f"{memory_mib}m", 1, memory_mib), "")


async def fill_memory(runtime: QemuRuntime, machine: str, mib: int) -> None:
    script = (
        "mount -o remount,size=90% /dev/shm && "
        f"dd if=/dev/zero of=/dev/shm/fill bs=1M count={mib} 2>/dev/null"
    )
    result = await runtime.exec(machine, ["sh", "-c", script])
    assert result.exit_code == 0, result


def settle(path: Path) -> None:
    """Write dirty guest pages back, as the kernel does within ~30 s anyway."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


async def bench_size(
    runtime: QemuRuntime, memory_mib: int, rounds: int, fill: float
) -> dict[str, float]:
    machine = f"b{memory_mib}-{uuid.uuid4().hex[:6]}"
    times: dict[str, list[float]] = {}

    def record(name: str, seconds: float) -> None:
        times.setdefault(name, []).append(seconds)

    record("boot to ssh", await timed(runtime.create(spec(machine, memory_mib))))
    await fill_memory(runtime, machine, int(memory_mib * fill))
    directory = runtime.machine_dir(machine)
    for _ in range(rounds):
        settle(directory / RAM)
        record("suspend", await timed(runtime.suspend(machine)))
        state_bytes = (directory / VMSTATE).stat().st_size
        record("resume", await timed(runtime.resume(machine)))
    for index in range(rounds):
        settle(directory / RAM)
        snapshot = f"{machine}-s{index}"
        record("snapshot", await timed(runtime.snapshot(machine, snapshot)))
        restored = f"{machine}-r{index}"
        record(
            "restore",
            await timed(runtime.create(spec(restored, memory_mib), snapshot)),
        )
        await runtime.delete(restored)
        await runtime.delete_snapshot(snapshot)
    for index in range(rounds):
        settle(directory / RAM)
        copy = f"{machine}-f{index}"
        record("fork", await timed(runtime.fork(machine, [spec(copy, memory_mib)])))
        await runtime.delete(copy)
    await runtime.delete(machine)
    medians = {name: statistics.median(values) for name, values in times.items()}
    return {"memory_mib": memory_mib, "state_bytes": state_bytes, **medians}


def machine_description() -> list[str]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    memory_kb = int(Path("/proc/meminfo").read_text().split()[1])
    return [
        f"- CPU: {cpu}, {os.cpu_count()} cores",
        f"- memory: {memory_kb // 1024} MiB",
        f"- host kernel: {platform.release()}",
        f"- QEMU: {qemu_version()}",
    ]


def write_results(
    rows: list[dict[str, float]], accel: str, fill: float, rounds: int, storage: str
) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"qemu-{accel}-{time.strftime('%Y-%m-%d')}.md"
    verbs = ["boot to ssh", "suspend", "resume", "snapshot", "restore", "fork"]
    lines = [
        f"# QEMU driver latency, accelerator {accel}",
        "",
        *machine_description(),
        f"- storage: {storage}",
        f"- guests filled {fill:.0%} of their memory first; medians of {rounds} rounds",
        "",
        "| guest | " + " | ".join(verbs) + " | device state |",
        "|---|" + "---|" * (len(verbs) + 1),
    ]
    for row in rows:
        cells = [f"{row[verb]:.2f} s" for verb in verbs]
        state = f"{int(row['state_bytes']) // 1024} KB"
        lines.append(
            f"| {int(row['memory_mib'])} MB | " + " | ".join(cells) + f" | {state} |"
        )
    if len(rows) == 2:
        small, large = rows
        for verb in ("fork", "snapshot"):
            ratio = large[verb] / small[verb]
            lines.append("")
            lines.append(
                f"{verb}: {large['memory_mib']} MB / {small['memory_mib']} MB = {ratio:.2f}x"
            )
    path.write_text("\n".join(lines) + "\n")
    return path


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="256,1024")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--fill", type=float, default=0.4)
    parser.add_argument("--data-dir", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    sizes = [int(size) for size in args.sizes.split(",")]
    with contextlib.ExitStack() as stack:
        data_dir = args.data_dir or stack.enter_context(reflink_xfs())
        storage = (
            "given data dir" if args.data_dir else "XFS with reflink on a loop device"
        )
        runtime = QemuRuntime(data_dir, IMAGE_DIR)
        await runtime.prepare()
        rows = []
        try:
            for size in sizes:
                rows.append(await bench_size(runtime, size, args.rounds, args.fill))
                print(rows[-1], flush=True)
        finally:
            for info in await runtime.list():
                await runtime.delete(info.machine_id)
    path = write_results(rows, runtime.accel, args.fill, args.rounds, storage)
    print(path.read_text())


if __name__ == "__main__":
    asyncio.run(main())
