"""The Celery side of bench/dispatch.py: a Redis-brokered app whose one task runs `true`.

Configured from the environment by bench/dispatch.py, which starts the worker with
``celery -A celery_tasks worker``; every Redis key it makes carries ``OPSICLE_BENCH_PREFIX``.
"""

from __future__ import annotations

import os
import subprocess
import time

from celery import Celery

REDIS_URL = os.environ.get("OPSICLE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
PREFIX = os.environ.get("OPSICLE_BENCH_PREFIX", "opsicle-bench:")

app = Celery("opsicle_bench", broker=REDIS_URL, backend=REDIS_URL)
app.conf.update(
    # Keys of the broker and of the result backend both carry the prefix, so the benchmark can
    # remove exactly what it made.
    broker_transport_options={"global_keyprefix": PREFIX},
    result_backend_transport_options={"global_keyprefix": PREFIX},
    result_expires=600,
    # No broadcast mailbox, gossip or mingle: nothing outside the prefix, nothing but the work.
    worker_enable_remote_control=False,
    broker_connection_retry_on_startup=True,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
)


@app.task(name="bench.true")
def run_true() -> tuple[float, float]:
    """Run `true` as a child process; return wall-clock times before it starts and after it ends."""
    before = time.time()
    subprocess.run(["true"], check=True)
    return before, time.time()
