"""Inference latency, throughput, peak memory and training-step cost of the registered models.

Method (as timm's benchmark.py and torch.utils.benchmark do it): the model is built once per
precision, inputs live on the device, `warmup` untimed calls first, then every timed call is
bracketed by a device synchronisation and `time.perf_counter()` (host view of one request:
kernel launches included). cudnn.benchmark is on for CUDA. Peak memory is reset before each
measurement and read over the timed calls only (after warm-up, so one-off cuDNN autotuning
workspaces are excluded; what persists, weights and optimiser state, is included):
`torch.cuda.max_memory_allocated/reserved` on CUDA (after `empty_cache`, so the
reserved peak is this measurement's own); on CPU the process peak RSS (VmHWM) after resetting it
through /proc/self/clear_refs (Linux >= 4.0; otherwise ru_maxrss, not resettable, flagged).

JSON schema "fibrobench.latency/1" (written by `fibrobench latency --json` and RUN_DIR/latency.json):

    {"schema": "fibrobench.latency/1",
     "device": {"type": "cpu"|"cuda", "name", "driver", "cuda", "cudnn", "torch", "threads",
                "cpu", "cpu_count", "gpu_memory_bytes", "capability"},
     "packages": {name: version}, "provenance": bench.provenance.collect(...),
     "settings": {"input_size", "batch_sizes", "precisions", "channels_last", "compile", "runs",
                  "warmup", "throughput_runs", "max_batch", "max_batch_cap", "train_batch",
                  "train_runs", "train_warmup", "cudnn_benchmark", "num_classes",
                  "tf32": {"cudnn_allow_tf32", "matmul_allow_tf32", "float32_matmul_precision"}},
     ("fp32" means torch's defaults: on CUDA convolutions may use TF32, matmuls do not; see "tf32")
     "models": {name: {
        "params": int, "params_trainable": int, "flops": int (per image, forward, FlopCounterMode),
        "facts_source": "models.facts" (counted on the timed module), "input_size": int,
        "fp32"|"bf16": {
            "batch_size", "p50_ms", "p90_ms", "p99_ms": headline latency at the smallest batch (1),
            "images_per_s", "throughput_batch": best throughput over the measured batches and max batch,
            "peak_memory_bytes": peak at the smallest batch (CUDA max_memory_allocated; CPU peak RSS),
            "batch": {"1": TIMING, "64": TIMING, ...},
            "max_batch": {"batch": int|null, "capped": bool, "tried": [[b, fits], ...],
                          "timing": TIMING|null, "note": str|null}},
        "train": {"batch", "precision", "p50_ms", "images_per_s", "peak_memory_bytes" (headline: the first
                  precision measured, fp32 by default),
                  "by_precision": {"fp32"|"bf16": TIMING (one SGD step: forward, loss, backward, step)}},
        "error": str (only when this model failed; its other keys may be missing)}},
     "cross_check": {...} (only with --cross-check: our median vs torch.utils.benchmark.Timer)}

    TIMING = {"batch", "runs", "warmup", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms",
              "min_ms", "max_ms", "images_per_s" (batch / median time),
              "peak_allocated_bytes", "peak_reserved_bytes", "allocated_before_bytes" (CUDA; null on CPU),
              "peak_rss_bytes", "rss_before_bytes", "rss_peak_reset" (CPU; null on CUDA)}
    Peak RSS is the whole process (torch's own libraries included); rss_before_bytes is RSS at the start.
"""
from __future__ import annotations

import contextlib
import gc
import resource
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable

import numpy as np

SCHEMA = "fibrobench.latency/1"
PRECISIONS = ("fp32", "bf16")


# `fibrobench latency` defaults per device: the GPU ones give stable percentiles; on a CPU a ResNet-50 call at 224 px
# takes ~0.1-0.3 s, so the GPU defaults (bf16 too, batch 64, 20 training steps of batch 64) ran for more than
# 10 minutes; the CPU defaults answer in seconds per model, everything else stays available as an option.
DEFAULTS = {
    "cuda": {"batch_sizes": "1,64", "precisions": "fp32,bf16", "runs": 100, "warmup": 20, "throughput_runs": 30,
             "train_batch": 64, "train_runs": 20},
    "cpu": {"batch_sizes": "1", "precisions": "fp32", "runs": 30, "warmup": 3, "throughput_runs": 5,
            "train_batch": 0, "train_runs": 5},
}
PROGRESS_EVERY_S = 10.0   # a measurement longer than this reports its progress


@dataclass
class LatencyConfig:
    """What to measure; defaults are the documented GPU defaults (DEFAULTS["cuda"])."""
    input_size: int = 224
    batch_sizes: tuple = (1, 64)
    precisions: tuple = PRECISIONS
    channels_last: bool = True
    compile: bool = False
    runs: int = 100            # timed calls at batch 1 (percentiles need >= 100)
    warmup: int = 20
    throughput_runs: int = 30  # timed calls at every batch > 1
    max_batch: bool = True     # doubling search for the largest batch that fits (CUDA only)
    max_batch_cap: int = 1024
    train_batch: int | None = 64
    train_runs: int = 20
    train_warmup: int = 5
    num_classes: int = 5
    extra: dict = field(default_factory=dict)


# ---------------------------------------------------------------- pure helpers

def summarize_times(times_s: Iterable[float]) -> dict:
    """Percentiles (linear interpolation, numpy default) of per-call wall times, in milliseconds."""
    t = np.asarray(list(times_s), dtype=float) * 1e3
    if t.size == 0:
        raise ValueError("no timings to summarize")
    p50, p90, p99 = np.percentile(t, [50, 90, 99])
    return {"runs": int(t.size), "p50_ms": float(p50), "p90_ms": float(p90), "p99_ms": float(p99),
            "mean_ms": float(t.mean()), "std_ms": float(t.std(ddof=1)) if t.size > 1 else 0.0,
            "min_ms": float(t.min()), "max_ms": float(t.max())}


def is_oom_error(exc: BaseException) -> bool:
    """True for a device out-of-memory error (torch.cuda.OutOfMemoryError or an allocator message)."""
    try:
        import torch
        if isinstance(exc, torch.cuda.OutOfMemoryError):
            return True
    except ImportError:  # pragma: no cover
        pass
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def find_max_batch(probe: Callable[[int], object], start: int = 64, cap: int = 1024,
                   is_oom: Callable[[BaseException], bool] = is_oom_error,
                   on_oom: Callable[[], None] | None = None) -> dict:
    """Largest batch for which `probe(batch)` runs: double from `start` up to `cap`; if `start`
    itself does not fit, halve down to 1. Errors other than OOM propagate.
    Returns {"batch": int|None, "capped": bool (stopped at the cap, not by OOM), "tried": [[b, fits]]}."""
    if start < 1 or cap < 1:
        raise ValueError("start and cap must be >= 1")
    start = min(start, cap)
    tried: list[list] = []

    def fits(b: int) -> bool:
        oom = False
        try:
            probe(b)
        except Exception as exc:  # noqa: BLE001 - anything but OOM is re-raised
            if not is_oom(exc):
                raise
            oom = True
        tried.append([b, not oom])
        if oom and on_oom is not None:  # outside `except`: the traceback no longer pins the tensors
            on_oom()
        return not oom

    best, b = None, start
    while b <= cap and fits(b):
        best, b = b, b * 2
    if best is None:
        b = start // 2
        while b >= 1 and not fits(b):
            b //= 2
        best = b if b >= 1 else None
    capped = best is not None and all(ok for _, ok in tried) and best * 2 > cap
    return {"batch": best, "capped": bool(capped), "tried": tried}


# ---------------------------------------------------------------- device helpers

def synchronize(device) -> None:
    import torch
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device, precision: str):
    """bf16 autocast on the given device type; fp32 is a no-op context."""
    import torch
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    raise ValueError(f"unknown precision {precision!r} ({', '.join(PRECISIONS)})")


class Progress:
    """Calls `log(message)` at most every `every_s` seconds while a long measurement runs (None: silent)."""

    def __init__(self, log: Callable[[str], None] | None, label: str, every_s: float = PROGRESS_EVERY_S):
        self.log, self.label, self.every_s = log, label, every_s
        self.t_last = time.perf_counter()

    def __call__(self, phase: str, done: int, total: int, elapsed_s: float) -> None:
        now = time.perf_counter()
        if self.log is None or now - self.t_last < self.every_s or done >= total:
            return
        self.t_last = now
        self.log(f"{self.label}: {phase} {done}/{total}, ~{elapsed_s / done * (total - done):.0f} s left in this phase")


def time_calls(fn: Callable[[], object], runs: int, warmup: int, device,
               progress: Progress | None = None) -> list[float]:
    """Seconds per call: `warmup` untimed calls, then each call bracketed by sync + perf_counter."""
    t_phase = time.perf_counter()
    for i in range(warmup):
        fn()
        if progress:
            progress("warm-up", i + 1, warmup, time.perf_counter() - t_phase)
    synchronize(device)
    times = []
    t_phase = time.perf_counter()
    for i in range(runs):
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - t0)
        if progress:
            progress("timed run", i + 1, runs, time.perf_counter() - t_phase)
    return times


def _read_status_kb(key: str = "VmHWM:") -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_rss_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class PeakMemory:
    """Context manager: resets the device's peak-memory counters on entry, reads them on exit (`.result`)."""

    def __init__(self, device):
        self.device = device
        self.result: dict = {}

    def __enter__(self):
        import torch
        gc.collect()
        if self.device.type == "cuda":
            synchronize(self.device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            self._before = torch.cuda.memory_allocated(self.device)
        else:
            self._reset = _reset_rss_peak()
            self._rss_before = _read_status_kb("VmRSS:")
        return self

    def __exit__(self, *exc):
        import torch
        if self.device.type == "cuda":
            synchronize(self.device)
            self.result = {"peak_allocated_bytes": int(torch.cuda.max_memory_allocated(self.device)),
                           "peak_reserved_bytes": int(torch.cuda.max_memory_reserved(self.device)),
                           "allocated_before_bytes": int(self._before),
                           "peak_rss_bytes": None, "rss_before_bytes": None, "rss_peak_reset": None}
        else:
            hwm = _read_status_kb("VmHWM:") if self._reset else None
            if hwm is None:  # ru_maxrss: kilobytes on Linux, bytes on macOS; a lifetime peak
                hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
            self.result = {"peak_allocated_bytes": None, "peak_reserved_bytes": None,
                           "allocated_before_bytes": None, "peak_rss_bytes": int(hwm),
                           "rss_before_bytes": self._rss_before,
                           "rss_peak_reset": bool(self._reset)}
        return False


# ---------------------------------------------------------------- measurements

def _timed_window(fn, runs: int, warmup: int, device, progress: Progress | None = None) -> tuple[list[float], dict]:
    """Warm-up outside, timed calls inside the peak-memory window: one-off workspaces (cuDNN autotuning)
    are excluded, memory that persists (weights, optimiser state) is included."""
    time_calls(fn, 0, warmup, device, progress)
    with PeakMemory(device) as pm:
        times = time_calls(fn, runs, 0, device, progress)
    return times, pm.result


def _input(batch: int, size: int, device, channels_last: bool):
    import torch
    x = torch.randn(batch, 3, size, size, device=device)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def measure_inference(model, device, batch: int, input_size: int, precision: str = "fp32",
                      channels_last: bool = False, runs: int = 100, warmup: int = 20,
                      progress: Progress | None = None) -> dict:
    """Forward-pass timing at one batch size (inference_mode, eval mode), with peak memory."""
    import torch
    model.eval()
    x = _input(batch, input_size, device, channels_last)

    def call():
        with torch.inference_mode(), autocast(device, precision):
            return model(x)

    times, mem = _timed_window(call, runs, warmup, device, progress)
    out = {"batch": batch, "warmup": warmup, **summarize_times(times)}
    out["images_per_s"] = batch / (out["p50_ms"] / 1e3)
    out.update(mem)
    return out


def measure_train_step(model, device, batch: int, input_size: int, precision: str = "fp32",
                       channels_last: bool = False, runs: int = 20, warmup: int = 5,
                       num_classes: int = 5, progress: Progress | None = None) -> dict:
    """One SGD step (forward, cross-entropy, backward, optimiser step) timed per call, with peak memory.
    The optimiser state (made by the first step) stays allocated, so the peak includes it."""
    import torch
    model.train()
    x = _input(batch, input_size, device, channels_last)
    y = torch.randint(0, num_classes, (batch,), device=device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        opt.zero_grad(set_to_none=True)
        with autocast(device, precision):
            loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()

    times, mem = _timed_window(step, runs, warmup, device, progress)
    del opt
    model.eval()
    out = {"batch": batch, "warmup": warmup, **summarize_times(times)}
    out["images_per_s"] = batch / (out["p50_ms"] / 1e3)
    out.update(mem)
    return out


def _empty_cache(device) -> None:
    import torch
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def measure_max_batch(model, device, input_size: int, precision: str, channels_last: bool,
                      start: int, cap: int, runs: int) -> dict:
    """Doubling search for the largest inference batch that fits (CUDA), then its throughput."""
    if device.type != "cuda":
        return {"batch": None, "capped": False, "tried": [], "timing": None,
                "note": "not searched on CPU: host memory is not a per-device limit"}

    def probe(b):
        measure_inference(model, device, b, input_size, precision, channels_last, runs=1, warmup=1)

    found = find_max_batch(probe, start=start, cap=cap, on_oom=lambda: _empty_cache(device))
    timing = None
    if found["batch"]:
        timing = measure_inference(model, device, found["batch"], input_size, precision, channels_last,
                                   runs=max(3, runs // 3), warmup=2)
    return {**found, "timing": timing,
            "note": f"search capped at {cap}" if found["capped"] else None}


def default_factory(name: str, input_size: int, num_classes: int = 5):
    """The registry's model with random weights (latency does not depend on weight values)."""
    import models
    return models.create_model(name, num_classes=num_classes, pretrained=None, input_size=input_size)


def model_facts(model, input_size: int) -> dict:
    """Params and forward FLOPs (batch 1) of the very module that is timed, counted by models.facts."""
    import torch

    from models.facts import count_flops, count_params
    total, trainable = count_params(model)
    was_training = model.training
    model.eval()
    try:
        flops = count_flops(model, torch.zeros(1, 3, input_size, input_size, device=next(model.parameters()).device))
    finally:
        model.train(was_training)
    return {"params": total, "params_trainable": trainable, "flops": flops, "facts_source": "models.facts"}


def measure_model(name: str, cfg: LatencyConfig, device, factory=default_factory,
                  log: Callable[[str], None] = lambda s: None) -> dict:
    """All measurements of one model; the model is rebuilt per precision so training never leaks in."""
    import torch
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    def build():
        m = factory(name, cfg.input_size, cfg.num_classes).to(device)
        if cfg.channels_last:
            m = m.to(memory_format=torch.channels_last)
        return m

    first = build()
    res: dict = {"input_size": cfg.input_size, **model_facts(first, cfg.input_size), "train": {}}
    del first
    for prec in cfg.precisions:
        model = build()
        fwd = torch.compile(model) if cfg.compile else model
        per = {"batch": {}}
        for b in cfg.batch_sizes:
            runs = cfg.runs if b == 1 else cfg.throughput_runs
            label = f"{name} {prec} batch {b}"
            log(f"{label}: {runs} runs")
            per["batch"][str(b)] = measure_inference(fwd, device, b, cfg.input_size, prec, cfg.channels_last,
                                                     runs=runs, warmup=cfg.warmup, progress=Progress(log, label))
        if cfg.max_batch and device.type == "cuda":
            log(f"{name} {prec} max-batch search (cap {cfg.max_batch_cap})")
        per["max_batch"] = (measure_max_batch(fwd, device, cfg.input_size, prec, cfg.channels_last,
                                              start=max(cfg.batch_sizes), cap=cfg.max_batch_cap,
                                              runs=cfg.throughput_runs)
                            if cfg.max_batch else None)
        res[prec] = {**headline(per, device.type), **per}
        if cfg.train_batch:
            label = f"{name} {prec} train step batch {cfg.train_batch}"
            log(label)
            res["train"].setdefault("by_precision", {})[prec] = measure_train_step(fwd, device, cfg.train_batch, cfg.input_size, prec,
                                                    cfg.channels_last, runs=cfg.train_runs,
                                                    warmup=cfg.train_warmup, num_classes=cfg.num_classes,
                                                    progress=Progress(log, label))
        del model, fwd
        _empty_cache(device)
    if res["train"]:
        prec = next(iter(res["train"]["by_precision"]))
        t = res["train"]["by_precision"][prec]
        res["train"].update({"batch": t["batch"], "precision": prec, "p50_ms": t["p50_ms"],
                             "images_per_s": t["images_per_s"], "peak_memory_bytes": peak_bytes(t, device.type)})
    return res


def peak_bytes(timing: dict, device_type: str) -> int | None:
    """The one peak-memory figure of a TIMING: max_memory_allocated on CUDA, peak RSS on CPU."""
    return timing["peak_allocated_bytes"] if device_type == "cuda" else timing["peak_rss_bytes"]


def headline(per: dict, device_type: str) -> dict:
    """Flat summary of one precision block: latency at the smallest batch, best measured throughput."""
    sizes = sorted(per["batch"], key=int)
    first = per["batch"][sizes[0]]
    cands = [per["batch"][k] for k in sizes]
    if per.get("max_batch") and per["max_batch"].get("timing"):
        cands.append(per["max_batch"]["timing"])
    best = max(cands, key=lambda t: t["images_per_s"])
    return {"batch_size": first["batch"], "p50_ms": first["p50_ms"], "p90_ms": first["p90_ms"],
            "p99_ms": first["p99_ms"], "images_per_s": best["images_per_s"], "throughput_batch": best["batch"],
            "peak_memory_bytes": peak_bytes(first, device_type)}


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (platform.processor() is often empty on Linux)."""
    import platform
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_block(prov: dict, device) -> dict:
    d = prov.get("device", {})
    return {"type": device.type, "name": d.get("gpu_name") if device.type == "cuda" else cpu_model(),
            "driver": d.get("driver"), "cuda": d.get("cuda"), "cudnn": d.get("cudnn"), "torch": d.get("torch"),
            "threads": d.get("torch_threads"), "cpu": cpu_model(), "cpu_count": d.get("cpu_count"),
            "gpu_memory_bytes": d.get("gpu_memory_bytes"), "capability": d.get("gpu_capability")}


def run_latency(names: list[str], cfg: LatencyConfig, device="auto", factory=default_factory,
                command: list[str] | None = None, log: Callable[[str], None] = lambda s: None,
                on_model: Callable[[dict], None] | None = None) -> dict:
    """Measure every model; a model that fails records `error` and the others still run.
    `on_model(partial_result)` is called after each model (used to write partial JSON)."""
    from bench.provenance import collect
    if isinstance(device, str):
        from protocols.device import resolve_device
        device = resolve_device(device)
    prov = collect(command, device=str(device))
    out = {"schema": SCHEMA, "device": device_block(prov, device), "packages": prov["packages"],
           "provenance": prov, "models": {},
           "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items() if k != "extra"}}
    out["settings"]["cudnn_benchmark"] = device.type == "cuda"
    import torch
    out["settings"]["tf32"] = {"cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
                               "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
                               "float32_matmul_precision": torch.get_float32_matmul_precision()}
    out["settings"].update(cfg.extra)
    for name in names:
        t0 = time.perf_counter()
        try:
            out["models"][name] = measure_model(name, cfg, device, factory, log)
        except Exception as exc:  # noqa: BLE001 - recorded, the run goes on
            out["models"][name] = {"error": f"{type(exc).__name__}: {exc}"}
            log(f"{name}: FAILED {type(exc).__name__}: {exc}")
        _empty_cache(device)
        log(f"{name}: done in {time.perf_counter() - t0:.1f}s")
        if on_model is not None:
            on_model(out)
    return out


def cross_check(model, device, batch: int, input_size: int, rounds: int = 3, runs: int = 20,
                warmup: int = 5, precision: str = "fp32", channels_last: bool = False) -> dict:
    """Median per call measured here vs torch.utils.benchmark.Timer on the same callable. The two
    alternate call by call, so load drift on a shared machine hits both alike."""
    import torch
    from torch.utils.benchmark import Timer
    model.eval()
    x = _input(batch, input_size, device, channels_last)

    def call():
        with torch.inference_mode(), autocast(device, precision):
            return model(x)

    timer = Timer(stmt="call()", globals={"call": call}, num_threads=torch.get_num_threads())
    for _ in range(warmup):
        call()
    ours, theirs = [], []
    for _ in range(rounds * runs):
        ours += time_calls(call, 1, 0, device)
        theirs.append(timer.timeit(1).median)
    a, b = float(np.median(ours)) * 1e3, float(np.median(theirs)) * 1e3
    return {"batch": batch, "precision": precision, "rounds": rounds, "runs_per_round": runs,
            "ours_median_ms": a, "timer_median_ms": b, "rel_diff": abs(a - b) / b,
            "within_10pct": abs(a - b) / b <= 0.10}
