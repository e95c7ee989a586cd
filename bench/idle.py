"""What an idle `opsicle start standalone` costs: CPU time per second and resident memory.

Run: uv run python bench/idle.py [--seconds S] [--binary dist/opsicle]

Each command starts standalone on a fresh data directory (SQLite, embedded queue and worker),
waits for /readyz, lets it settle for 3 s, then reads the process's CPU time (user + system,
from /proc/PID/stat) and resident set size at the start and the end of S seconds of idling:
no request and no run, only its own loops (lease reaper, approval expiry, webhook delivery,
the outbox relay's and the embedded worker's looks, once a second, for runs other processes
queued). Source and frozen run one after the other, and the load average is printed beside.
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def rss_mb(pid: int) -> float:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE / 1e6


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def idle(label: str, argv: list[str], seconds: float) -> None:
    with tempfile.TemporaryDirectory(prefix="opsicle-bench-idle-") as home:
        listen = f"127.0.0.1:{free_port()}"
        env = {**os.environ, "XDG_CONFIG_HOME": f"{home}/config", "XDG_CACHE_HOME": f"{home}/c"}
        command = [*argv, "start", "standalone", "--listen", listen, "--data-dir", f"{home}/d"]
        with open(f"{home}/log", "wb") as log:
            proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if httpx.get(f"http://{listen}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"{label} did not start:\n{Path(home, 'log').read_text()}")
                time.sleep(0.1)
            time.sleep(3)
            cpu, began = cpu_seconds(proc.pid), time.monotonic()
            time.sleep(seconds)
            cpu, spent = cpu_seconds(proc.pid) - cpu, time.monotonic() - began
            print(
                f"{label:<8} idle CPU {cpu / spent * 1000:5.1f} ms per second "
                f"({cpu / spent * 100:4.2f} % of one core), RSS {rss_mb(proc.pid):5.1f} MB"
            )
        finally:
            proc.terminate()  # a graceful stop; the process is this script's own child
            proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--binary", default="dist/opsicle")
    args = parser.parse_args()
    script = Path(sys.executable).with_name("opsicle")
    source = [str(script)] if script.is_file() else [sys.executable, "-m", "entrypoints.main"]
    binary = Path(args.binary).resolve()
    print(f"# {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(f"# {args.seconds:.0f} s of idling each; before: {load()}")
    idle("source", source, args.seconds)
    if binary.is_file():
        idle("frozen", [str(binary)], args.seconds)
    else:
        print(f"frozen   skipped ({args.binary} not built; run packaging/build.sh)")
    print(f"# after: {load()}")


if __name__ == "__main__":
    main()
