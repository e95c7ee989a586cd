"""Phase start-up cost of each runner; prints figures and setup.

Run: uv run python bench/local_runs.py [--runs N] [--docker-host URL]
(The CLI's own start-up time is measured by bench/startup.py.)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Sequence

from adapters.runners.docker import DockerRunner, docker_available, image_exists
from adapters.runners.process import ProcessRunner
from adapters.system import SystemClock
from domain.automations import new_run
from domain.ports import Runner
from domain.resources import AutomationSpec, Phase
from domain.services.execution import Execution, Progress, execute


def percentile(samples: Sequence[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def bench_runner(runner: Runner, runs: int) -> list[float]:
    spec = AutomationSpec(phases=(Phase("noop", "busybox:latest", ("true",)),))
    clock = SystemClock()

    async def sink(event: Progress) -> None:
        return None

    durations = []
    with tempfile.TemporaryDirectory() as workdir:
        for i in range(runs):
            run, _ = new_run(f"bench-{i}", spec, clock.now())
            started = time.perf_counter()
            await execute(run, Execution(runner=runner, clock=clock, workdir=workdir), sink)
            durations.append(time.perf_counter() - started)
    return durations


def report(label: str, seconds: Sequence[float]) -> None:
    ms = [s * 1000 for s in seconds]
    print(
        f"{label:<34} n={len(ms):<4} p50={percentile(ms, 0.5):7.1f} ms  "
        f"p99={percentile(ms, 0.99):7.1f} ms  mean={statistics.fmean(ms):7.1f} ms"
        f"  => {1000 / statistics.fmean(ms):6.1f} runs/s sequential"
    )


async def bench_runners(runs: int, docker_host: str | None) -> None:
    print(f"# one-phase runs of `true`, sequential, {runs} each, through domain execute()")
    for sandbox in (True, False):
        runner = ProcessRunner(sandbox=sandbox)
        label = f"process ({'bubblewrap' if sandbox else 'unsandboxed'})"
        report(label, await bench_runner(runner, runs))
    docker = DockerRunner(docker_host)
    if await docker_available(docker.url) and await image_exists(docker.url, "busybox:latest"):
        report("docker (busybox:latest)", await bench_runner(docker, max(5, runs // 5)))
    else:
        print(f"docker: skipped (no engine with busybox:latest at {docker.url})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--docker-host", default=os.environ.get("DOCKER_HOST"))
    args = parser.parse_args()
    print(f"# {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    asyncio.run(bench_runners(args.runs, args.docker_host))


if __name__ == "__main__":
    main()
