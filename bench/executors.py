"""Where fold jobs run: in this process, one worker process per visible GPU, or a Slurm array (submitit).

Every executor gets the job function, the run directory and [(model, fold), ...], and calls
`job(run_dir, model, fold, device, progress) -> dict` once per pair (bench.runner passes its run_job; like
submitit's map_array, the function must be a module-level, picklable callable). The run directory is the only
shared state, so a failed or killed executor is recovered by running the same command again.
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

JobFn = Callable[[str, str, int, str, bool], dict]
log = logging.getLogger("fibrobench.run")


class LocalExecutor:
    """Sequential in this process; with several visible GPUs (device auto/cuda), one worker process per GPU."""

    def __init__(self, device: str = "auto", workers: int | None = None, progress: bool = True):
        self.device, self.workers, self.progress = device, workers, progress

    def _gpus(self) -> int:
        if self.device not in ("auto", "cuda"):
            return 0
        import torch
        return torch.cuda.device_count() if torch.cuda.is_available() else 0

    def run(self, job: JobFn, run_dir, jobs) -> list[dict]:
        n_gpu = self._gpus()
        n = min(self.workers or n_gpu or 1, max(n_gpu, 1), len(jobs))
        if n <= 1:
            out = []
            for i, (m, k) in enumerate(jobs, 1):
                log.info("job %d/%d: %s fold %d", i, len(jobs), m, k)
                out.append(job(str(run_dir), m, k, self.device, self.progress))
            return out
        return process_pool(job, str(run_dir), jobs, [f"cuda:{g}" for g in range(n)])


def _worker(job, run_dir, device, tasks, results):
    """Run (i, (model, fold)) items from `tasks` on `device` until a None arrives; results or tracebacks back."""
    if device.startswith("cuda"):
        import torch
        torch.cuda.set_device(torch.device(device))
    while True:
        item = tasks.get()
        if item is None:
            return
        i, (m, k) = item
        try:
            results.put((i, job(run_dir, m, k, device, False), None))
        except BaseException:  # noqa: BLE001 - reported to the parent, which fails the run
            results.put((i, None, traceback.format_exc()))


def process_pool(job: JobFn, run_dir: str, jobs, devices: list[str]) -> list[dict]:
    """One spawned worker process per entry of `devices` (one per GPU: 'cuda:0', 'cuda:1', ...), pulling jobs from
    one queue; results in the order of `jobs`. Any failed job fails the pool, after every job has run."""
    ctx = mp.get_context("spawn")           # CUDA needs spawn
    tasks, results = ctx.Queue(), ctx.Queue()
    for i, pair in enumerate(jobs):
        tasks.put((i, pair))
    for _ in devices:
        tasks.put(None)
    procs = [ctx.Process(target=_worker, args=(job, run_dir, d, tasks, results), daemon=False) for d in devices]
    for pr in procs:
        pr.start()
    out, errors = [None] * len(jobs), []
    for _ in jobs:
        i, res, err = results.get()
        out[i] = res
        if err:
            errors.append(f"{jobs[i][0]} fold {jobs[i][1]}:\n{err}")
            log.error("job %s failed", jobs[i])
    for pr in procs:
        pr.join()
    if errors:
        raise RuntimeError("fold job(s) failed:\n" + "\n".join(errors))
    return out


@dataclass
class SlurmExecutor:
    """One submitit array task per (model, fold), all sharing the run directory.

    `executor` defaults to submitit.AutoExecutor(folder=RUN_DIR/slurm) with the given Slurm parameters;
    tests pass submitit.LocalExecutor / DebugExecutor instead.
    """
    folder: Path
    params: dict
    device: str = "auto"
    executor: object | None = None

    def _make(self):
        if self.executor is not None:
            return self.executor
        import submitit
        ex = submitit.AutoExecutor(folder=str(self.folder))
        ex.update_parameters(**self.params)
        return ex

    def run(self, job: JobFn, run_dir, jobs) -> list[dict]:
        if not jobs:
            return []
        ex = self._make()
        args = list(zip(*[(str(run_dir), m, k, self.device, False) for m, k in jobs]))
        submitted = ex.map_array(job, *args)
        log.info("submitted %d job(s): %s%s", len(submitted), ", ".join(str(j.job_id) for j in submitted[:5]),
                 " ..." if len(submitted) > 5 else "")
        out, errors = [], []
        for (m, k), j in zip(jobs, submitted):
            try:
                out.append(j.result())
            except Exception as exc:  # noqa: BLE001 - collect every failure, then fail once
                errors.append(f"{m} fold {k}: {exc}")
        if errors:
            raise RuntimeError("fold job(s) failed:\n" + "\n".join(errors))
        return out


def make_executor(kind: str, run_dir, device: str = "auto", workers: int | None = None, progress: bool = True,
                  slurm: dict | None = None):
    if kind == "local":
        return LocalExecutor(device, workers, progress)
    if kind == "slurm":
        return SlurmExecutor(Path(run_dir) / "slurm", dict(slurm or {}), device)
    raise ValueError(f"unknown executor {kind!r} (local or slurm)")
