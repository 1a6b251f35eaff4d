"""Where fold jobs run: in this process, packed into worker processes (CPU workers, N per GPU), or a Slurm array.

Every executor gets the job function, the run directory and [(model, fold), ...], and calls
`job(run_dir, model, fold, device, progress) -> dict` once per pair (bench.runner passes its run_job; like
submitit's map_array, the function must be a module-level, picklable callable). The run directory is the only
shared state, so a failed or killed executor is recovered by running the same command again; the job's lock
(protocols.joblock, taken by run_job) keeps two executors from running the same job.
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import os
import queue
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

JobFn = Callable[[str, str, int, str, bool], dict]
log = logging.getLogger("fibrobench.run")


class LocalExecutor:
    """Jobs on this machine: in this process one after another, or packed into worker processes that each run one
    job at a time, pulling the next from a shared queue in the order given (bench.runner orders largest first):
    `workers` processes on the CPU; on CUDA, `jobs_per_gpu` processes per GPU used (an integer, or "auto": from
    the jobs' measured peak memory and the GPU's free memory, bench.packing) and `workers` GPUs (default all)."""

    def __init__(self, device: str = "auto", workers: int | None = None, progress: bool = True,
                 jobs_per_gpu: int | str = 1, threads: int | None = None, memory_probe: Callable | None = None):
        self.device, self.workers, self.progress = device, workers, progress
        self.jobs_per_gpu, self.threads, self.memory_probe = jobs_per_gpu, threads, memory_probe

    def _gpus(self) -> list[int]:
        """Indices of the GPUs this executor uses (none on the CPU)."""
        text = str(self.device).strip().lower()
        if text == "cpu":
            return []
        import torch
        if not torch.cuda.is_available():
            return []
        if text.startswith("cuda:"):
            return [int(text.split(":", 1)[1])]
        n = torch.cuda.device_count()
        return list(range(min(self.workers or n, n)))

    def slots(self, run_dir, jobs) -> list[str]:
        """The device of each worker process: ['cpu'] * workers, or each GPU jobs_per_gpu times (interleaved
        cuda:0, cuda:1, cuda:0, ... so the first jobs spread over the GPUs); never more than there are jobs."""
        gpus = self._gpus()
        if not gpus:
            return ["cpu"] * max(1, min(self.workers or 1, len(jobs)))
        per = self.jobs_per_gpu
        if per == "auto":
            from bench.packing import auto_jobs_per_gpu
            per = auto_jobs_per_gpu(run_dir, sorted({m for m, _ in jobs}), f"cuda:{gpus[0]}", n_jobs=len(jobs),
                                    probe=self.memory_probe)
        return [f"cuda:{g}" for _ in range(int(per)) for g in gpus][:max(1, len(jobs))]

    def run(self, job: JobFn, run_dir, jobs) -> list[dict]:
        if not jobs:
            return []
        slots = self.slots(run_dir, jobs)
        if len(slots) <= 1:
            out = []
            for i, (m, k) in enumerate(jobs, 1):
                log.info("job %d/%d: %s fold %d", i, len(jobs), m, k)
                out.append(job(str(run_dir), m, k, self.device, self.progress))
            return out
        threads = self.threads or threads_per_worker(len(slots))
        log.info("%d job(s) on %d worker processes (%s), %d CPU thread(s) each", len(jobs), len(slots),
                 ", ".join(f"{slots.count(d)} on {d}" for d in dict.fromkeys(slots)), threads)
        return process_pool(job, str(run_dir), jobs, slots, threads)


def threads_per_worker(n_workers: int) -> int:
    """torch CPU threads per worker process: OMP_NUM_THREADS when set, else the CPU cores shared out evenly."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
               // max(1, n_workers))


def _worker(job, run_dir, device, tasks, results, threads=None, current=None, slot=0):
    """Run (i, (model, fold)) items from `tasks` on `device` until a None arrives; results or tracebacks back."""
    import torch
    if threads:
        torch.set_num_threads(threads)
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
    while True:
        item = tasks.get()
        if item is None:
            return
        i, (m, k) = item
        if current is not None:
            current[slot] = i           # shared memory, written at once: the parent knows the job if we are killed
        try:
            results.put((i, job(run_dir, m, k, device, False), None))
        except BaseException:  # noqa: BLE001 - reported to the parent, which fails the run
            results.put((i, None, traceback.format_exc()))


def process_pool(job: JobFn, run_dir: str, jobs, devices: list[str], threads: int | None = None) -> list[dict]:
    """One spawned worker process per entry of `devices` ('cpu', 'cuda:0', 'cuda:0', 'cuda:1', ...), pulling jobs
    from one queue in the order of `jobs`; results in that order. Each job is its own function call in a worker,
    with all of its state in the run directory. Any failed job fails the pool, after every job has run."""
    ctx = mp.get_context("spawn")           # CUDA needs spawn
    tasks, results = ctx.Queue(), ctx.Queue()
    for i, pair in enumerate(jobs):
        tasks.put((i, pair))
    for _ in devices:
        tasks.put(None)
    current = ctx.Array("i", [-1] * len(devices))          # the job each worker is on
    procs = [ctx.Process(target=_worker, args=(job, run_dir, d, tasks, results, threads, current, w), daemon=False)
             for w, d in enumerate(devices)]
    for pr in procs:
        pr.start()
    out, errors, reported, dead = [None] * len(jobs), [], set(), set()
    while len(reported) < len(jobs):
        try:
            i, res, err = results.get(timeout=1.0)
        except queue.Empty:             # a worker killed mid-job (OOM killer, kill -9) never reports: look
            for w, pr in enumerate(procs):
                i = current[w]
                if pr.exitcode not in (None, 0) and w not in dead:
                    dead.add(w)
                    if i >= 0 and i not in reported:
                        reported.add(i)
                        errors.append(f"{jobs[i][0]} fold {jobs[i][1]}: worker pid {pr.pid} died (exit code "
                                      f"{pr.exitcode}); re-run the same command to resume it")
                        log.error("job %s: its worker died", jobs[i])
            if len(reported) < len(jobs) and all(pr.exitcode is not None for pr in procs):
                lost = [f"{jobs[i][0]} fold {jobs[i][1]}" for i in range(len(jobs)) if i not in reported]
                errors.append(f"not run (every worker process has exited): {', '.join(lost)}")
                break
            continue
        reported.add(i)
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
                  slurm: dict | None = None, jobs_per_gpu: int | str = 1, memory_probe: Callable | None = None):
    """`memory_probe(run_dir, models, device) -> [{model, peak_reserved_bytes, ...}]` serves --jobs-per-gpu auto."""
    if kind == "local":
        return LocalExecutor(device, workers, progress, jobs_per_gpu, memory_probe=memory_probe)
    if kind == "slurm":
        return SlurmExecutor(Path(run_dir) / "slurm", dict(slurm or {}), device)
    raise ValueError(f"unknown executor {kind!r} (local or slurm)")
