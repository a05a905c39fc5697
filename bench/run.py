"""Run benchmarks, then rewrite the README's benchmark tables from the results.

    .venv/bin/python bench/run.py [lifecycle copies gateway qemu ...]
    .venv/bin/python bench/run.py --report-only

Each named benchmark is `bench/bench_<name>.py`; it runs in its own process
(its `main()`, as `python bench/bench_<name>.py` does) and writes its results
to `bench/results/`. The runner notes when each ran, its exit code and the load
average before and after in `bench/results/runs.json`, then regenerates the
part of README.md between `<!-- bench:start -->` and `<!-- bench:end -->`: one
table per benchmark with the measured value, the goal from its issue, and
whether it is met. Nothing else in README.md is touched. `--report-only` skips
running and only regenerates the tables from whatever is in `bench/results/`.
Run as root from anywhere; a failing benchmark does not stop the others.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
RESULTS = BENCH / "results"
README = REPO / "README.md"
RUNS = RESULTS / "runs.json"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"
BENCHMARKS = ["lifecycle", "copies", "gateway", "qemu"]


# Running


def load_average() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def run_benchmarks(names: list[str]) -> list[str]:
    """Run each benchmark in its own process; returns the names that failed."""
    runs = read_json(RUNS) or {}
    failed = []
    env = {**os.environ}
    env.setdefault("JJHUB_IMAGE_DIR", "/var/tmp/jjhub-test-images")
    for name in names:
        script = BENCH / f"bench_{name}.py"
        print(f"== {name}: {script.relative_to(REPO)}", flush=True)
        record: dict[str, object] = {
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "load_before": load_average(),
        }
        started = time.monotonic()
        code = subprocess.call([sys.executable, str(script)], cwd=REPO, env=env)
        record.update(
            seconds=round(time.monotonic() - started, 1),
            exit_code=code,
            load_after=load_average(),
        )
        runs[name] = record
        RESULTS.mkdir(parents=True, exist_ok=True)
        RUNS.write_text(json.dumps(runs, indent=2, sort_keys=True) + "\n")
        if code != 0:
            print(f"== {name} failed with exit code {code}", flush=True)
            failed.append(name)
    return failed


# Reading results


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def fmt_ms(ms: float) -> str:
    if ms >= 1000:
        return f"{ms / 1000:.2f} s"
    if ms >= 10:
        return f"{ms:.0f} ms"
    return f"{ms:.1f} ms"


def fmt_goal(ms: float) -> str:
    return f"{ms / 1000:g} s" if ms >= 1000 else f"{ms:g} ms"


def fmt_mib(mib: float) -> str:
    if mib >= 100:
        return f"{mib:.0f} MiB"
    return f"{mib:.1f} MiB"


def fmt_size(mb: int) -> str:
    return f"{mb // 1024} GB" if mb >= 1024 and mb % 1024 == 0 else f"{mb} MB"


def verdict(ok: bool | None) -> str:
    return {True: "met", False: "**not met**", None: "–"}[ok]


def latency_verdict(stats: dict[str, Any], goal_ms: float) -> str:
    """Judged on p95; says so when only the median is under the goal."""
    if stats["p95_ms"] < goal_ms:
        return "met"
    if stats["median_ms"] < goal_ms:
        return "**not met** at p95 (median met)"
    return "**not met**"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def load_note(load: dict[str, Any] | list[float] | None) -> str:
    """One-minute load averages over a run: "5.8 → 6.8" or one triple."""
    if not load:
        return "load average not recorded"
    if isinstance(load, dict):
        ones = [v[0] for v in load.values() if isinstance(v, list) and v]
        if not ones:
            return "load average not recorded"
        return f"1-minute load average {min(ones):.1f}–{max(ones):.1f} during the run"
    return "load average " + " / ".join(f"{v:.1f}" for v in load) + " (1/5/15 min)"


def machine_note(machine: dict[str, Any] | None) -> str:
    if not machine:
        return ""
    return (
        f"{machine.get('host')}: {machine.get('cpus')} × {machine.get('cpu')}, "
        f"{int(machine.get('memory_mib', 0)) // 1024} GiB, {machine.get('os')}, "
        f"kernel {machine.get('kernel')}, {machine.get('runc', '')}; "
        f"{str(machine.get('date', ''))[:10]}, commit {machine.get('commit')}"
    )


# One section per benchmark


def report_lifecycle(runs: dict[str, Any]) -> list[str]:
    data = read_json(RESULTS / "lifecycle.json")
    if data is None:
        return missing("lifecycle")
    r, goals = data["results"], data["goals"]
    rows = []
    for key, label, goal in (
        ("create_to_ready", "create to ready", goals["create_to_ready_ms"]),
        ("suspend", "suspend", goals["suspend_ms"]),
        ("resume", "resume", goals["resume_ms"]),
        ("delete", "delete", None),
    ):
        stats = r[key]
        rows.append(
            [
                f"{label} (n={stats['count']})",
                fmt_ms(stats["median_ms"]),
                fmt_ms(stats["p95_ms"]),
                f"< {fmt_goal(goal)}" if goal else "–",
                latency_verdict(stats, goal) if goal else "–",
            ]
        )
    memory = r["idle_memory"]
    rss = memory["rss_sum"]
    goal_mib = goals["idle_memory_mib"]
    rows.append(
        [
            f"memory per idle workspace, sum of RSS (n={rss['count']})",
            fmt_mib(rss["median_mib"]),
            f"max {fmt_mib(rss['max_mib'])}",
            f"< {goal_mib} MiB",
            verdict(rss["median_mib"] < goal_mib),
        ]
    )
    setup = data["setup"]
    return [
        "**Lifecycle, runc** (`bench_lifecycle.py`, issue 2)",
        "",
        *table(["measure", "median", "p95", "goal", "result"], rows),
        "",
        f"Driver calls with the image warm, size small, data directory on "
        f"{setup['data_dir_filesystem']}; latency goals judged on p95. Idle "
        f"workspace ({', '.join(p.split()[0] for p in memory['processes_of_one'])}"
        f"): PSS {fmt_mib(memory['pss_sum']['median_mib'])}, memory cgroup "
        f"{fmt_mib(memory['cgroup_usage']['median_mib'])}. "
        f"{load_note(r.get('load_average'))}; {machine_note(setup.get('machine'))}.",
    ]


def report_copies(runs: dict[str, Any]) -> list[str]:
    data = read_json(RESULTS / "copies.json")
    if data is None:
        return missing("copies")
    goals = data["goals"]
    max_ratio, frozen_goal = (
        goals["reflink_1gb_over_empty_max_ratio"],
        goals["frozen_ms"],
    )
    sizes = [int(s) for s in data["setup"]["sizes_mb"]]
    header = [
        "measure (median)",
        *(fmt_size(s) for s in sizes),
        f"{fmt_size(sizes[-1])} / {fmt_size(sizes[0])}",
        "goal",
        "result",
    ]
    rows = []
    loads = []
    for fs in data["filesystems"].values():
        label = fs["label"]
        reflink = fs["copy"] == "reflink"
        loads.append(f"{label} {load_note(fs.get('load_average'))}")
        per_size = [fs["sizes_mb"][str(s)] for s in sizes]
        for verb in ("fork", "snapshot"):
            medians = [p[verb]["median_ms"] for p in per_size]
            ratio = medians[-1] / medians[0]
            rows.append(
                [
                    f"{verb}, {label}",
                    *(fmt_ms(m) for m in medians),
                    f"{ratio:.2f}x",
                    f"≤ {max_ratio}x" if reflink else "– (full copy)",
                    verdict(ratio <= max_ratio) if reflink else "–",
                ]
            )
        frozen = [
            [*p["fork"]["frozen"]["samples_ms"], *p["snapshot"]["frozen"]["samples_ms"]]
            for p in per_size
        ]
        medians = [statistics.median(f) for f in frozen]
        worst = max(max(f) for f in frozen)
        rows.append(
            [
                f"source frozen, {label} (fork and snapshot; max)",
                *(
                    f"{fmt_ms(m)} ({fmt_ms(max(f))})"
                    for m, f in zip(medians, frozen, strict=True)
                ),
                f"{medians[-1] / max(medians[0], 1):.2f}x",
                f"< {frozen_goal} ms" if reflink else "–",
                verdict(worst < frozen_goal) if reflink else "–",
            ]
        )
        disk = [p["fork"]["extra_disk"]["median_mib"] for p in per_size]
        growth = disk[-1] - disk[0]
        flat_limit = sizes[-1] / 100  # MiB: 1 % of what the workspace holds
        rows.append(
            [
                f"extra disk per fork, {label}",
                *(fmt_mib(d) for d in disk),
                f"+{fmt_mib(growth)}",
                "flat (< 1 % of data)" if reflink else "–",
                verdict(growth < flat_limit) if reflink else "–",
            ]
        )
    setup = data["setup"]
    observed = (
        max(
            p[verb]["observed_pause"]["max_ms"]
            for fs in data["filesystems"].values()
            if fs["copy"] == "reflink"
            for p in fs["sizes_mb"].values()
            for verb in ("fork", "snapshot")
        )
        if any(fs["copy"] == "reflink" for fs in data["filesystems"].values())
        else None
    )
    cross_check = (
        f" Cross-check on reflink: a ticker inside the source (every 2 ms) never "
        f"went more than {fmt_ms(observed)} without a tick, scheduling delays "
        "included."
        if observed is not None
        else ""
    )
    return [
        "**Fork and snapshot, runc** (`bench_copies.py`, issue 3)",
        "",
        *table(header, rows),
        "",
        f"{setup['rounds']} rounds per cell; fork is timed until the copy is "
        "ready (copy plus boot), frozen is the driver's `frozen_ms` (pause "
        "to resume; goal judged on the max), extra disk is the `df` delta with the copy running; "
        f"loop file systems under /var/tmp.{cross_check} "
        f"{'; '.join(loads)}; {machine_note(setup.get('machine'))}.",
    ]


def report_gateway(runs: dict[str, Any]) -> list[str]:
    data = read_json(RESULTS / "gateway.json")
    if data is None:
        return missing("gateway")
    summary, d, g = data["summary"], data["direct"], data["gateway"]
    rows = [
        [
            "scp upload, gateway / direct",
            f"{summary['upload_ratio']:.2f} ({g['scp']['upload_mib_s']} vs "
            f"{d['scp']['upload_mib_s']} MiB/s)",
            "≥ 0.8",
            verdict(summary["upload_ratio"] >= 0.8),
        ],
        [
            "scp download, gateway / direct",
            f"{summary['download_ratio']:.2f} ({g['scp']['download_mib_s']} vs "
            f"{d['scp']['download_mib_s']} MiB/s)",
            "≥ 0.8",
            verdict(summary["download_ratio"] >= 0.8),
        ],
        [
            f"added latency per exec round trip (n={g['exec_round_trip']['count']})",
            f"{summary['added_round_trip_ms']:.2f} ms "
            f"({g['exec_round_trip']['median_ms']} vs "
            f"{d['exec_round_trip']['median_ms']} ms median)",
            "< 2 ms",
            verdict(summary["added_round_trip_ms"] < 2),
        ],
        [
            "added time per new connection",
            f"{summary['added_connect_ms']:.1f} ms",
            "–",
            "–",
        ],
    ]
    setup = data.get("setup", {})
    load = setup.get("load_average") or (runs.get("gateway") or {}).get("load_after")
    return [
        "**SSH gateway** (`bench_gateway.py`, issue 4)",
        "",
        *table(["measure", "measured", "goal", "result"], rows),
        "",
        f"scp of {setup.get('size_mib', '?')} MiB, medians of "
        f"{setup.get('rounds', '?')} interleaved rounds; {load_note(load)} at the "
        f"end; {setup.get('host', '?')}, {setup.get('cpus', '?')} CPUs.",
    ]


def _qemu_rows_from_markdown(path: Path) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Rows and facts from bench_qemu.py's `qemu-<accel>-<date>.md`."""
    text = path.read_text()
    facts: dict[str, str] = {}
    match = re.search(r"accelerator (\w+)", text)
    if match:
        facts["accelerator"] = match[1]
    for line in text.splitlines():
        if line.startswith("- ") and ":" in line:
            key, _, value = line[2:].partition(":")
            facts[key.strip()] = value.strip()
    # bench_qemu.py prints fork and snapshot ratios from unrounded medians;
    # prefer them to ratios of the table's two-decimal seconds.
    for verb, ratio in re.findall(
        r"^(\w[\w ]*): \d+ MB / \d+ MB = ([\d.]+)x", text, re.M
    ):
        facts[f"ratio {verb}"] = ratio
    rows: list[dict[str, Any]] = []
    header: list[str] = []
    for line in text.splitlines():
        if not line.startswith("|") or line.startswith("|---"):
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] == "guest":
            header = cells
            continue
        if not header:
            continue
        row: dict[str, Any] = {"memory_mib": int(cells[0].split()[0])}
        for name, cell in zip(header[1:], cells[1:], strict=False):
            if cell.endswith(" s"):
                row[name] = float(cell[:-2])
        rows.append(row)
    return rows, facts


def report_qemu(runs: dict[str, Any]) -> list[str]:
    data = read_json(RESULTS / "qemu.json")
    rows: list[dict[str, Any]] = []
    facts: dict[str, str] = {}
    source = ""
    if data is not None and isinstance(data.get("rows"), list):
        rows, source = data["rows"], "qemu.json"
        facts = {k: str(v) for k, v in data.items() if isinstance(v, str | int)}
    else:
        found = sorted(RESULTS.glob("qemu-*.md"), key=lambda p: p.stat().st_mtime)
        if found:
            rows, facts = _qemu_rows_from_markdown(found[-1])
            source = found[-1].name
    rows = sorted(rows, key=lambda r: r["memory_mib"])
    if len(rows) < 2:
        return missing("qemu")
    small, large = rows[0], rows[-1]
    header = [
        "measure (median)",
        fmt_size(small["memory_mib"]),
        fmt_size(large["memory_mib"]),
        "ratio",
        "goal",
        "result",
    ]
    table_rows = []
    for verb in ("boot to ssh", "suspend", "resume", "snapshot", "restore", "fork"):
        if verb not in small or verb not in large:
            continue
        ratio = float(
            facts.get(f"ratio {verb}")
            or (large[verb] / small[verb] if small[verb] else float("inf"))
        )
        goal = verb in ("fork", "snapshot")
        table_rows.append(
            [
                verb,
                fmt_ms(small[verb] * 1000),
                fmt_ms(large[verb] * 1000),
                f"{ratio:.2f}x",
                "≤ 1.5x" if goal else "–",
                verdict(ratio <= 1.5) if goal else "–",
            ]
        )
    run = runs.get("qemu") or {}
    load = (
        load_note({"before": run["load_before"], "after": run["load_after"]})
        if run
        else "load average not recorded"
    )
    details = ", ".join(
        f"{key} {facts[key]}"
        for key in ("accelerator", "storage", "CPU", "QEMU")
        if key in facts
    )
    return [
        "**QEMU microVMs** (`bench_qemu.py`, issue 7)",
        "",
        *table(header, table_rows),
        "",
        f"From `bench/results/{source}`: {details}; {load}. Fork and snapshot "
        "ratios are the script's own, from unrounded medians. KVM hosts are the "
        "production target; these are TCG numbers.",
    ]


def missing(name: str) -> list[str]:
    return [
        f"**{name}**: no results yet (`.venv/bin/python bench/run.py {name}`).",
    ]


REPORTS: dict[str, Callable[[dict[str, Any]], list[str]]] = {
    "lifecycle": report_lifecycle,
    "copies": report_copies,
    "gateway": report_gateway,
    "qemu": report_qemu,
}


def render() -> str:
    runs = read_json(RUNS) or {}
    lines = [
        "Generated by `bench/run.py` from `bench/results/`; the host is shared "
        "with other work, so each table notes the load average. Goals are the "
        "issues' own; \"1 GB / 0 MB\" is the 1 GB case's median over the empty "
        "case's.",
    ]
    for name, report in REPORTS.items():
        lines.append("")
        try:
            lines += report(runs)
        except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
            lines.append(f"**{name}**: results not readable ({exc!r}).")
    return "\n".join(lines)


def write_report() -> None:
    text = README.read_text()
    if text.count(START) != 1 or text.count(END) != 1:
        raise SystemExit(f"{README} needs exactly one {START} and one {END}")
    head, rest = text.split(START)
    _, tail = rest.split(END)
    README.write_text(f"{head}{START}\n{render()}\n{END}{tail}")
    print(f"rewrote the benchmark section of {README.relative_to(REPO)}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "benchmarks",
        nargs="*",
        metavar="NAME",
        help=f"benchmarks to run, of {', '.join(BENCHMARKS)} (default: all)",
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="run nothing; regenerate the README tables from bench/results/",
    )
    args = parser.parse_args()
    failed: list[str] = []
    if not args.report_only:
        names = args.benchmarks or BENCHMARKS
        unknown = [n for n in names if not (BENCH / f"bench_{n}.py").exists()]
        if unknown:
            parser.error(f"no bench/bench_<name>.py for {', '.join(unknown)}")
        failed = run_benchmarks(names)
    write_report()
    if failed:
        raise SystemExit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
