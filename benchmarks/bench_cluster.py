"""Benchmark: `sst-desktop --infer --scheduler` on 1 and 2 local Dask workers, against a plain
local `--infer`, on the same generated project in one invocation.

The project is generated as the tests build theirs (a random-weight hiera-tiny checkpoint, model
size 256, specimen-like images, one reference per group) with enough targets per group that a
group takes several seconds on one CPU thread. Each configuration gets a fresh copy of the
project (no prediction there yet) and, for the cluster rows, a fresh scheduler and fresh workers
on 127.0.0.1 (`--nthreads 1`, one torch thread). Each cluster runs the project twice: first on
fresh workers (cold: each loads the model once), then again on a fresh copy (warm: the workers
hold the model):

  local      `sst-desktop --infer SPEC` on one torch thread (the baseline)
  2 shards   `--shard 0/2` and `--shard 1/2` started together, one thread each: what two
             processes get from this machine without Dask (the ceiling for 2 workers)
  1 worker   `sst-desktop --infer SPEC --scheduler tcp://127.0.0.1:PORT`, one worker
  2 workers  the same with two workers

images/s = masks written / the run's own elapsed time (from its saved summary: planning,
connecting, model loads and every task included). The per-task overhead comes from the run's
summary too: each task reports its wall time, the seconds it spent getting the model (0 once its
worker holds one) and building the reference memory; shares are of the mean task time. Every
process started here is stopped by its PID.

  python benchmarks/bench_cluster.py
  python benchmarks/bench_cluster.py --groups 8 --targets 12 --json cluster.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "benchmarks"))

# Alternating orientations, as a collection of specimen photos has.
SIZES = [(320, 240), (240, 320), (320, 256), (256, 320)]


def one_thread_env() -> dict[str, str]:
    """Environment of every process: this tree first on the path, one thread per library."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    env.update(TQDM_DISABLE="1", PYTHONWARNINGS="ignore")
    return env


def load_average() -> float:
    """The 1-minute load average."""
    return os.getloadavg()[0]


def machine() -> str:
    """CPU model, cores and memory, in one line."""
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f"{mem_kb / 1024**2:.0f} GB RAM"
    except OSError:
        memory = "RAM unknown"
    return f"{model}, {os.cpu_count()} cores, {memory}"


def make_project(base: Path, checkpoint: Path, groups: int, targets: int) -> Path:
    """The tests' project layout: `groups` groups, one reference and `targets` targets each."""
    from _run_helpers import make_project as build

    layout = {
        f"g{g}": [SIZES[(g + i) % len(SIZES)] for i in range(targets + 1)] for g in range(groups)
    }
    spec = build(base, checkpoint, layout, dict.fromkeys(layout, 1))
    data = json.loads(spec.read_text())
    data["image_size"] = 256
    spec.write_text(json.dumps(data, indent=2))
    return spec


def run_cli(spec: Path, *extra: str) -> dict:
    """`sst-desktop --infer SPEC ...` on one thread; its saved summary (with the command's wall)."""
    command = [sys.executable, "-m", "sst_desktop", "--infer", str(spec), "--quiet", *extra]
    started = time.perf_counter()
    proc = subprocess.run(
        command, env=one_thread_env(), cwd=REPO, capture_output=True, text=True, timeout=900
    )
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command[2:])} failed ({proc.returncode}): {proc.stderr}")
    runs = sorted((spec.parent / "runs").glob("*.json"))
    summary = json.loads(runs[-1].read_text())
    summary["command_wall_s"] = wall
    return summary


def run_shards(spec: Path, count: int) -> dict:
    """`count` processes `--shard I/count` started together: one summary of them all."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "sst_desktop", "--infer", str(spec), "--quiet"]
            + ["--shard", f"{index}/{count}"],
            env=one_thread_env(),
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for index in range(count)
    ]
    from _local_cluster import stop_process

    try:
        errors = [proc.communicate(timeout=900)[1] for proc in procs]
    finally:
        for proc in procs:
            stop_process(proc)
    if any(proc.returncode for proc in procs):
        raise SystemExit(f"--shard failed: {errors}")
    parts = [json.loads(path.read_text()) for path in (spec.parent / "runs").glob("*.json")]
    timings = [part["timings"] for part in parts]
    images = sum(t["images"] for t in timings)
    return {
        "written": sum(part["written"] for part in parts),
        "elapsed_s": max(part["elapsed_s"] for part in parts),  # the shards ran side by side
        "timings": {
            "wall_s": sum(t["wall_s"] for t in timings),
            "cpu_ms_per_image": sum(t["cpu_s"] for t in timings) * 1000 / images,
            "loads": len(parts),
            "setup": {
                "model_load_s": sum(t["setup"]["model_load_s"] for t in timings),
                "memory_s": sum(t["setup"]["memory_s"] for t in timings),
            },
        },
    }


def overhead(summary: dict, groups: int) -> dict:
    """Per-task seconds from the run's own summary: task, model load, reference memory."""
    tasks = summary["timings"].get("tasks")
    if tasks is None:  # a local run: one "task" per group, the model loaded once
        setup = summary["timings"]["setup"]
        pipeline = summary["timings"]["wall_s"]
        loads = summary["timings"].get("loads", 1)  # shards: one load per process
        per_group = (pipeline + setup["model_load_s"] + setup["memory_s"]) / groups
        return {
            "tasks": groups,
            "task_s": per_group,
            "loads": loads,
            "load_s": setup["model_load_s"] / loads,
            "memory_s": setup["memory_s"] / groups,
        }
    loading = [t["model_load_s"] for t in tasks if t["model_loads"]]
    return {
        "tasks": len(tasks),
        "task_s": statistics.mean(t["task_s"] for t in tasks),
        "loads": sum(t["model_loads"] for t in tasks),
        "load_s": statistics.mean(loading) if loading else 0.0,
        "memory_s": statistics.mean(t["memory_s"] for t in tasks),
        "workers": len({t["worker"] for t in tasks}),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--groups", type=int, default=8, help="groups (one reference each)")
    p.add_argument("--targets", type=int, default=12, help="targets per group")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="cluster sizes")
    p.add_argument("--no-local", action="store_true", help="leave out the local baseline row")
    p.add_argument("--max-load", type=float, default=1.5, help="refuse to start above this load")
    p.add_argument(
        "--wait-load", type=float, default=0, help="seconds to wait for the load to fall first"
    )
    p.add_argument("--json", default=None, help="also write all measurements to this JSON file")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    deadline = time.monotonic() + args.wait_load
    while load_average() >= args.max_load and time.monotonic() < deadline:
        time.sleep(5)  # the 1-minute average lags: a machine just gone quiet reads busy
    load_before = load_average()
    if load_before >= args.max_load:
        print(f"load average {load_before:.2f} >= {args.max_load}: run again when quieter")
        return 3
    from _local_cluster import LocalCluster
    from bench_propagation import random_checkpoint

    print(f"machine: {machine()}; load average before: {load_before:.2f}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        checkpoint = random_checkpoint("sam2.1_hiera_tiny", 256, folder)
        n_targets = args.groups * args.targets
        print(
            f"project: {args.groups} groups x {args.targets} targets ({n_targets}), "
            f"1 reference each, images {SIZES[0][0]}x{SIZES[0][1]} alternating, model size 256",
            flush=True,
        )

        def fresh(name: str) -> Path:
            """The same deterministic images and references in a new folder, no prediction."""
            return make_project(folder / name, checkpoint, args.groups, args.targets)

        runs: list[tuple[str, int, str, dict]] = []
        if not args.no_local:
            runs.append(("local --infer, 1 thread", 0, "local", run_cli(fresh("local"))))
            report(runs[-1], args, n_targets, rows)
            # Two processes side by side without Dask: what this machine gives two of them.
            runs.append(
                ("2 local --shard processes at once", 0, "shards", run_shards(fresh("shards"), 2))
            )
            report(runs[-1], args, n_targets, rows)
        for workers in args.workers:
            logs = folder / f"logs{workers}"
            logs.mkdir()
            with LocalCluster(workers, logs, env=one_thread_env()) as cluster:
                for state in ("cold", "warm"):  # fresh workers, then the same ones again
                    name = f"--scheduler, {workers} worker(s), {state}"
                    spec = fresh(f"{state}{workers}")
                    runs.append(
                        (name, workers, state, run_cli(spec, "--scheduler", cluster.address))
                    )
                    report(runs[-1], args, n_targets, rows)
    print_tables(rows)
    load_after = load_average()
    print(f"\nload average: before {load_before:.2f}, after {load_after:.2f}")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "machine": machine(),
                    "load_before": load_before,
                    "load_after": load_after,
                    "rows": rows,
                },
                indent=2,
            )
        )
    return 0


def report(run: tuple[str, int, str, dict], args: argparse.Namespace, n: int, rows: list) -> None:
    """Check one run wrote every mask; print and keep its row."""
    name, workers, state, summary = run
    if summary["written"] != n:
        raise SystemExit(f"{name}: {summary['written']} of {n} masks written")
    row = {
        "config": name,
        "workers": workers,
        "state": state,
        "images": summary["written"],
        "elapsed_s": summary["elapsed_s"],
        "images_per_s": summary["written"] / summary["elapsed_s"],
        "cpu_ms_per_image": summary["timings"]["cpu_ms_per_image"],
        "load_average": load_average(),
        **{f"task_{k}": v for k, v in overhead(summary, args.groups).items()},
    }
    rows.append(row)
    print(
        f"{name}: {row['images']} images in {row['elapsed_s']:.1f} s = "
        f"{row['images_per_s']:.2f} images/s; task {row['task_task_s']:.2f} s, model load "
        f"{row['task_load_s']:.2f} s x {row['task_loads']}, reference memory "
        f"{row['task_memory_s']:.3f} s per task; load {row['load_average']:.2f}",
        flush=True,
    )


def print_tables(rows: list[dict]) -> None:
    """Throughput with ratios (to 1 worker in the same state, to local), then per-task costs."""
    by = {(r["workers"], r["state"]): r for r in rows}
    local = by.get((0, "local"), {}).get("images_per_s")
    print()
    print("| run | images | elapsed s | images/s | vs 1 worker | vs local | CPU ms/image |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        one = by.get((1, r["state"]), {}).get("images_per_s")
        vs_one = f"{r['images_per_s'] / one:.2f}x" if one and r["workers"] else "-"
        vs_local = f"{r['images_per_s'] / local:.2f}x" if local else "-"
        print(
            f"| {r['config']} | {r['images']} | {r['elapsed_s']:.1f} | {r['images_per_s']:.2f} | "
            f"{vs_one} | {vs_local} | {r['cpu_ms_per_image']:.0f} |"
        )
    print()
    print(
        "| run | tasks | mean task s | model loads | load s per load (share of a task) | "
        "reference memory s per task (share) |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        task = r["task_task_s"]
        print(
            f"| {r['config']} | {r['task_tasks']} | {task:.2f} | {r['task_loads']} | "
            f"{r['task_load_s']:.2f} ({100 * r['task_load_s'] / task:.1f} %) | "
            f"{r['task_memory_s']:.3f} ({100 * r['task_memory_s'] / task:.2f} %) |"
        )


if __name__ == "__main__":
    sys.exit(main())
