"""Start-up time of `opsicle version` and `opsicle --help`, from source and frozen; prints figures.

Run: uv run python bench/startup.py [--runs N] [--binary dist/opsicle]

Every command runs N times, interleaved round by round so that a change in the machine's load
hits all of them alike; the load average before and after is printed with the figures. Wall
time is what a person waits; CPU time (user + system, children included) is the work done,
and moves less when other processes share the machine.

The source commands run with bytecode caching on (in a private cache directory), as an
installed package would: with PYTHONDONTWRITEBYTECODE every start compiles every module.
The frozen executable gets a private XDG_CACHE_HOME, so its first start is shown apart.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path


def percentile(samples: Sequence[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f}"


def once(argv: Sequence[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall-clock and CPU seconds (user + system, children included) of one run."""
    started = time.perf_counter()
    child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    child.returncode = code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"{' '.join(argv)} exited with {code}")
    return wall, usage.ru_utime + usage.ru_stime


def source_command() -> list[str]:
    script = Path(sys.executable).with_name("opsicle")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-m", "entrypoints.main"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--binary", default="dist/opsicle")
    args = parser.parse_args()

    source = source_command()
    binary = Path(args.binary).resolve()
    commands: dict[str, list[str]] = {
        "python3 -c pass": [sys.executable, "-c", "pass"],
        "source: opsicle version": [*source, "version"],
        "source: opsicle --help": [*source, "--help"],
    }
    if binary.is_file():
        commands["frozen: opsicle version"] = [str(binary), "version"]
        commands["frozen: opsicle --help"] = [str(binary), "--help"]

    print(f"# {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(f"# source: {' '.join(source)}")
    if binary.is_file():
        print(f"# frozen: {args.binary} ({binary.stat().st_size / 1e6:.1f} MB)")
    else:
        print(f"# frozen: skipped ({args.binary} not built; run packaging/build.sh)")
    with tempfile.TemporaryDirectory(prefix="opsicle-bench-") as home:
        env = {
            **os.environ,
            "XDG_CACHE_HOME": f"{home}/cache",
            "XDG_CONFIG_HOME": f"{home}/config",
            "PYTHONPYCACHEPREFIX": f"{home}/pycache",
        }
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env.pop("OPSICLE_CACHE_DIR", None)
        if binary.is_file():
            wall, cpu = once(commands["frozen: opsicle version"], env)
            print(
                f"# frozen first start (empty cache): wall {wall * 1000:.1f} ms, "
                f"CPU {cpu * 1000:.1f} ms"
            )
        for argv in commands.values():
            once(argv, env)  # bytecode cache and page cache warm; not counted
        print(f"# {args.runs} runs each, interleaved; before: {load()}")
        walls: dict[str, list[float]] = {label: [] for label in commands}
        cpus: dict[str, list[float]] = {label: [] for label in commands}
        for _ in range(args.runs):
            for label, argv in commands.items():
                wall, cpu = once(argv, env)
                walls[label].append(wall * 1000)
                cpus[label].append(cpu * 1000)
    print(f"# after: {load()}")
    base = percentile(walls["python3 -c pass"], 0.5)
    for label in commands:
        wall_ms, cpu_ms = walls[label], cpus[label]
        print(
            f"{label:<24} wall p50 {percentile(wall_ms, 0.5):7.1f} ms  "
            f"p90 {percentile(wall_ms, 0.9):7.1f} ms  "
            f"({percentile(wall_ms, 0.5) - base:+7.1f} ms over python3 -c pass)  "
            f"CPU p50 {statistics.median(cpu_ms):6.1f} ms"
        )


if __name__ == "__main__":
    main()
