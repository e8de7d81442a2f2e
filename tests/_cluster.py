"""Start and stop real Dask clusters (scheduler and worker processes) on 127.0.0.1."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field

DASK = os.path.join(os.path.dirname(sys.executable), "dask")


@dataclass
class LocalCluster:
    """A ``dask scheduler`` and ``dask worker`` processes; ``stop()`` ends them all."""

    address: str
    scheduler: subprocess.Popen
    workers: list = field(default_factory=list)

    def stop(self):
        for process in [*self.workers, self.scheduler]:
            if process.poll() is None:
                process.terminate()
        for process in [*self.workers, self.scheduler]:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def start_cluster(workdir, n_workers=2, *, nanny=True) -> LocalCluster:
    """Start a scheduler and ``n_workers`` one-thread workers, all bound to 127.0.0.1."""
    from distributed import Client

    os.makedirs(workdir, exist_ok=True)
    scheduler_file = os.path.join(workdir, "scheduler.json")
    if os.path.exists(scheduler_file):
        os.unlink(scheduler_file)
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    scheduler = subprocess.Popen(
        [DASK, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
         "--scheduler-file", scheduler_file], **quiet)
    cluster = LocalCluster("", scheduler)
    try:
        deadline = time.time() + 60
        while not os.path.exists(scheduler_file) and time.time() < deadline:
            time.sleep(0.1)
        for i in range(n_workers):
            cluster.workers.append(subprocess.Popen(
                [DASK, "worker", "--scheduler-file", scheduler_file, "--host", "127.0.0.1",
                 "--nthreads", "1", "--name", f"w{i}", "--no-dashboard",
                 "--local-directory", os.path.join(workdir, f"w{i}"),
                 *([] if nanny else ["--no-nanny"])], **quiet))
        with Client(scheduler_file=scheduler_file, timeout=60) as client:
            client.wait_for_workers(n_workers, timeout=60)
            cluster.address = client.scheduler.address
        assert cluster.address.startswith("tcp://127.0.0.1:")
        return cluster
    except BaseException:
        cluster.stop()
        raise
