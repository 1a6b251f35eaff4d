"""One fold job (model x fold): train, select weights, write logits/history/checkpoint/DONE; resumable per epoch."""
from __future__ import annotations

import csv
import io
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.safe_load import load_weights_only
from protocols.atomic import write_bytes, write_json, write_text
from protocols.config import Protocol
from protocols.device import resolve_device
from protocols.errors import BadInput
from protocols.runfiles import DONE, LOGITS, read_done, write_logits

HISTORY_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", "images_per_s")
RESUME = "resume.pt"
RESTART_HINT = "delete it to restart this fold from epoch 1"


# ---------------------------------------------------------------- pieces (pure where possible)


def loss_fn(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Both accepted names are softmax + negative log-likelihood of the integer label, averaged over the batch.

    Keras' SparseCategoricalCrossentropy(from_logits=True) with integer labels is exactly torch's CrossEntropyLoss
    (tests/test_trainer.py checks values and gradients against each other and a hand-written -log softmax).
    """
    if name in ("CrossEntropyLoss", "SparseCategoricalCrossentropy"):
        return lambda logits, y: F.cross_entropy(logits.float(), y)
    raise ValueError(f"unknown loss {name!r}")


def configure_determinism(deterministic: bool, device: torch.device) -> None:
    """Deterministic: no cudnn autotuning, deterministic kernels where torch has them (warn otherwise)."""
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    else:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.deterministic = False
        torch.backends.cudnn.benchmark = device.type == "cuda"


@dataclass(frozen=True)
class Runtime:
    """Device-level choices derived from the protocol (amp / channels_last 'auto' mean: on for CUDA)."""
    device: torch.device
    amp_dtype: torch.dtype | None
    channels_last: bool

    @classmethod
    def from_protocol(cls, p: Protocol, device: torch.device) -> "Runtime":
        amp = p.train.amp == "bf16" or (p.train.amp == "auto" and device.type == "cuda")
        cl = p.train.channels_last is True or (p.train.channels_last == "auto" and device.type == "cuda")
        return cls(device, torch.bfloat16 if amp else None, cl)

    def autocast(self):
        if self.amp_dtype is None:
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast(self.device.type, dtype=self.amp_dtype)


class Batcher:
    """uint8 images held on the device; batches are index + (flip) + float + normalise, all on the device."""

    def __init__(self, images: torch.Tensor, mean, std, rt: Runtime):
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected uint8 [N,3,H,W] images, got {images.dtype} {list(images.shape)}")
        self.images = images.to(rt.device, non_blocking=True)
        self.rt = rt
        m = torch.tensor(mean, dtype=torch.float32, device=rt.device).view(1, 3, 1, 1) * 255.0
        s = torch.tensor(std, dtype=torch.float32, device=rt.device).view(1, 3, 1, 1) * 255.0
        self.scale, self.shift = 1.0 / s, -m / s          # (x - 255 m) / (255 s) = x * scale + shift

    def batch(self, rows: torch.Tensor, flip: torch.Tensor | None = None) -> torch.Tensor:
        x = self.images[rows.to(self.rt.device, non_blocking=True)]
        if flip is not None and bool(flip.any()):
            f = flip.to(self.rt.device, non_blocking=True).view(-1, 1, 1, 1)
            x = torch.where(f, x.flip(3), x)
        x = x.float().mul_(self.scale).add_(self.shift)
        if self.rt.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x


def make_optimizer(p: Protocol, params):
    t = p.train
    if t.optimizer == "Adam":
        return torch.optim.Adam(params, lr=t.lr, weight_decay=t.weight_decay)
    if t.optimizer == "AdamW":
        return torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)
    return torch.optim.SGD(params, lr=t.lr, weight_decay=t.weight_decay, momentum=0.9)


def make_scheduler(p: Protocol, opt):
    """CosineAnnealingLR with T_max = epochs, stepped once per epoch (eta_min 0); 'none' = constant lr."""
    if p.train.scheduler == "CosineAnnealingLR":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=p.train.epochs)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 1.0)


@torch.inference_mode()
def predict(model: nn.Module, batcher: Batcher, rows: torch.Tensor, batch_size: int) -> torch.Tensor:
    """float32 logits [len(rows), C] on the CPU (eval mode, no augmentation)."""
    model.eval()
    out = []
    for i in range(0, len(rows), batch_size):
        with batcher.rt.autocast():
            out.append(model(batcher.batch(rows[i:i + batch_size])).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, 0)


def _history_csv(history: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=HISTORY_COLUMNS, lineterminator="\n")
    w.writeheader()
    for h in history:
        w.writerow({k: (f"{h[k]:.6g}" if isinstance(h[k], float) else h[k]) for k in HISTORY_COLUMNS})
    return buf.getvalue()


def _save_torch(path: Path, obj) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    write_bytes(path, buf.getvalue())


def _cpu_state(model: nn.Module) -> dict:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _better(keep: str, h: dict, best: float | None) -> bool:
    if keep == "best_val_loss":
        return best is None or h["val_loss"] < best
    return best is None or h["val_acc"] > best        # best_val_acc: ties keep the earlier epoch


# ---------------------------------------------------------------- the job, piece by piece


@dataclass
class FitState:
    """Where a job stands after an epoch: history and the selected weights so far (all of it goes into resume.pt)."""
    history: list[dict] = field(default_factory=list)
    best_metric: float | None = None
    best_state: dict | None = None
    best_epoch: int | None = None
    sel_val_logits: torch.Tensor | None = None   # val logits of the selected weights, kept from that epoch's validation

    @property
    def next_epoch(self) -> int:
        return len(self.history) + 1


@dataclass
class Fit:
    """What one job trains with: the model on its device, its optimiser, scheduler, loss, batcher and the private
    generator that draws the shuffling order and flips."""
    model: nn.Module
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    crit: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    batcher: Batcher
    gen: torch.Generator
    net: nn.Module | None = None    # what runs forward passes: torch.compile(model) or, eager, None (= model)

    @property
    def device(self) -> torch.device:
        return self.batcher.rt.device

    @property
    def forward(self) -> nn.Module:
        return self.model if self.net is None else self.net


def save_resume(path: Path, fit: Fit, epoch: int, st: FitState) -> None:
    """Everything needed to continue after `epoch` exactly as if the process had not stopped."""
    dev = fit.device
    _save_torch(path, {
        "model": _cpu_state(fit.model), "optimizer": fit.opt.state_dict(), "scheduler": fit.sched.state_dict(),
        "gen_state": fit.gen.get_state(), "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None,
        "epoch": epoch, "history": st.history,
        "best_metric": st.best_metric, "best_state": st.best_state, "best_epoch": st.best_epoch,
        "sel_val_logits": st.sel_val_logits})


def load_resume(path: Path, fit: Fit) -> FitState:
    """Restore model, optimiser, scheduler and RNG streams from resume.pt; a fresh FitState when there is none."""
    if not path.exists():
        return FitState()
    ck = load_weights_only(path, "resume", "resume checkpoint", RESTART_HINT)
    try:
        fit.model.load_state_dict(ck["model"])
        fit.opt.load_state_dict(ck["optimizer"])
        fit.sched.load_state_dict(ck["scheduler"])
        fit.gen.set_state(ck["gen_state"])
        torch.set_rng_state(ck["torch_rng"])
        if fit.device.type == "cuda" and ck.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(ck["cuda_rng"], fit.device)
        if len(ck["history"]) != ck["epoch"]:
            raise ValueError(f"{len(ck['history'])} history rows for epoch {ck['epoch']}")
        return FitState(ck["history"], ck["best_metric"], ck["best_state"], ck["best_epoch"], ck["sel_val_logits"])
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
        detail = str(exc).splitlines()[0][:200] if str(exc) else ""
        raise BadInput(path, "resume", f"not a resume checkpoint of this job ({type(exc).__name__}: {detail}); "
                                       f"{RESTART_HINT}") from None


class EpochLog:
    """Progress of one job on stderr: a tqdm bar per epoch and one line per epoch, only when asked and on a tty."""

    def __init__(self, progress: bool, epochs: int):
        self.show, self.epochs = progress and sys.stderr.isatty(), epochs

    def bar(self, batches, epoch: int):
        from tqdm import tqdm
        return tqdm(batches, disable=not self.show, leave=False, desc=f"epoch {epoch}/{self.epochs}",
                    unit="batch", file=sys.stderr)

    def batch(self, bar, loss: torch.Tensor, n_seen: int, t0: float) -> None:
        if self.show:
            bar.set_postfix(loss=f"{loss.item():.4f}", img_s=f"{n_seen / max(time.perf_counter() - t0, 1e-9):.0f}")

    def epoch(self, h: dict) -> None:
        if self.show:
            print(f"epoch {h['epoch']}/{self.epochs} loss {h['train_loss']:.4f} val_loss {h['val_loss']:.4f} "
                  f"val_acc {h['val_acc']:.3f} {h['images_per_s']:.0f} img/s", file=sys.stderr)


def train_epoch(fit: Fit, order: torch.Tensor, flips: torch.Tensor, y_dev: torch.Tensor, batch_size: int,
                n_used: int, log: EpochLog, epoch: int, t0: float) -> tuple[float, float]:
    """One pass over the first n_used images of `order` in batches: (summed loss, number correct)."""
    model, rt = fit.forward, fit.batcher.rt
    model.train()
    loss_sum = torch.zeros((), device=rt.device)
    correct = torch.zeros((), device=rt.device, dtype=torch.long)
    bar = log.bar(range(0, n_used, batch_size), epoch)
    for i in bar:
        j = min(i + batch_size, n_used)
        idx = order[i:j]
        x = fit.batcher.batch(idx, flips[i:j])
        y = y_dev[idx.to(rt.device)]
        with rt.autocast():
            out = model(x)
        loss = fit.crit(out, y)
        fit.opt.zero_grad(set_to_none=True)
        loss.backward()
        fit.opt.step()
        loss_sum += loss.detach() * len(idx)
        correct += (out.detach().argmax(1) == y).sum()
        log.batch(bar, loss, i + len(idx), t0)
    if rt.device.type == "cuda":
        torch.cuda.synchronize(rt.device)        # count queued kernels in this epoch's time, not the next one's
    return float(loss_sum), float(correct)


def update_selection(keep: str, st: FitState, h: dict, model: nn.Module, val_logits: torch.Tensor) -> None:
    """keep=last: the latest epoch; best_val_loss / best_val_acc: the best so far (ties keep the earlier epoch)."""
    if keep == "last":
        st.sel_val_logits = val_logits
    elif _better(keep, h, st.best_metric):
        st.best_metric = h["val_loss"] if keep == "best_val_loss" else h["val_acc"]
        st.best_state, st.best_epoch, st.sel_val_logits = _cpu_state(model), h["epoch"], val_logits


# ---------------------------------------------------------------- torch.compile


def batch_sizes(n: int, batch_size: int) -> list[int]:
    """The distinct batch sizes a pass over n images in batches of batch_size produces (full, then the remainder)."""
    return sorted({min(batch_size, n), n % batch_size} - {0}, reverse=True)


def compile_model(model: nn.Module, mode: str, trial: Callable[[nn.Module], None]) -> tuple[nn.Module | None, dict]:
    """torch.compile(model, mode) tried out by `trial(compiled)` (every batch shape of the job, train and eval), with
    the model's parameters, buffers, gradients and the RNG streams restored afterwards, so the trial changes nothing
    the job computes. Returns (compiled module or None for eager, record for DONE: mode, status compiled | eager |
    fallback, compile seconds, error). A failure falls back to eager with a one-line warning."""
    if mode == "none":
        return None, {"mode": "none", "status": "eager", "seconds": 0.0, "error": None}
    import logging

    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    cpu_rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    t0 = time.perf_counter()
    net, error = None, None
    try:
        net = torch.compile(model, mode=mode)
        trial(net)
    except Exception as exc:  # noqa: BLE001 - any compiler failure: train eager instead
        root = exc
        while getattr(root, "inner_exception", None) or root.__cause__:      # dynamo wraps the compiler's error
            root = getattr(root, "inner_exception", None) or root.__cause__
        text = str(root).strip().splitlines()
        kind = type(exc).__name__ if root is exc else f"{type(exc).__name__}: {type(root).__name__}"
        error = f"{kind}: {text[0] if text else ''}"[:300]
        net = None
        logging.getLogger("fibrobench.run").warning("torch.compile(mode=%r) failed on %s; training eager (%s)", mode,
                                                    type(model).__name__, error)
    seconds = time.perf_counter() - t0
    model.load_state_dict(state)
    for prm in model.parameters():
        prm.grad = None
    torch.set_rng_state(cpu_rng)
    if cuda_rng is not None:
        torch.cuda.set_rng_state_all(cuda_rng)
    return net, {"mode": mode, "status": "fallback" if error else "compiled", "seconds": seconds, "error": error}


def compile_trial(fit: Fit, y_dev: torch.Tensor, train_sizes: list[int], eval_sizes: list[int]) -> Callable:
    """The trial compile_model runs: forward + backward at each training batch size, forward at each eval size."""
    def batch(n: int, sizes: list[int]) -> torch.Tensor:
        x = fit.batcher.batch(torch.arange(n))
        if n > 1 and len([s for s in sizes if s > 1]) > 1:   # several sizes: one graph, dynamic batch dimension
            torch._dynamo.maybe_mark_dynamic(x, 0)    # instead of static + dynamic recompile (static if the model
                                                      # needs it: mark_dynamic would raise ConstraintViolation)
        return x

    def trial(net: nn.Module) -> None:
        rt = fit.batcher.rt
        net.train()
        for n in train_sizes:
            with rt.autocast():
                out = net(batch(n, train_sizes))
            fit.crit(out, y_dev[:n]).backward()
        net.eval()
        with torch.inference_mode():
            for n in eval_sizes:
                with rt.autocast():
                    net(batch(n, eval_sizes))
        if rt.device.type == "cuda":
            torch.cuda.synchronize(rt.device)
    return trial


def write_outputs(job_dir: Path, model: nn.Module, st: FitState, keep: str, epochs: int, seed: int,
                  test_logits: torch.Tensor, partition: dict, y_val: torch.Tensor, y_test: torch.Tensor) -> int:
    """val/test logits of the selected weights and checkpoint.pt; returns the selected epoch."""
    selected = epochs if keep == "last" else st.best_epoch
    write_logits(job_dir / LOGITS["val"], partition["val"], st.sel_val_logits.numpy(), y_val.numpy())
    write_logits(job_dir / LOGITS["test"], partition["test"], test_logits.numpy(), y_test.numpy())
    _save_torch(job_dir / "checkpoint.pt", {"model": _cpu_state(model), "selected_epoch": selected,
                                            "keep": keep, "seed": seed})
    return selected


def train_fold(job_dir, protocol: Protocol, model: nn.Module, images: torch.Tensor, labels, ids, partition: dict,
               *, seed: int, device: str | torch.device = "cpu", progress: bool = False,
               on_epoch_end: Callable[[int], None] | None = None, extra_done: dict | None = None) -> dict:
    """Train `model` on partition['train'], validate on ['val'], predict ['test']; resume from JOB/resume.pt.

    images: uint8 [N,3,S,S] (all manifest rows); labels: int [N]; ids: image ids [N] in the same order.
    A job whose DONE exists is skipped (its DONE is returned). The model is built by the caller *after*
    torch.manual_seed(seed) (see seed_job) so initialisation is reproducible too.
    """
    job_dir = Path(job_dir)
    done = read_done(job_dir)
    if done is not None:
        return done
    t = protocol.train
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    rt = Runtime.from_protocol(protocol, dev)
    configure_determinism(t.deterministic, dev)

    row_of = {str(i): k for k, i in enumerate(ids)}
    rows = {part: torch.tensor([row_of[i] for i in partition[part]], dtype=torch.long) for part in ("train", "val", "test")}
    y_all = torch.as_tensor(np.array(labels), dtype=torch.long)
    y_dev = y_all.to(dev)
    batcher = Batcher(images, protocol.data.mean, protocol.data.std, rt)

    model = model.to(dev)
    if rt.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = make_optimizer(protocol, model.parameters())
    fit = Fit(model, opt, make_scheduler(protocol, opt), loss_fn(t.loss), batcher,
              torch.Generator().manual_seed(seed))      # shuffling + flips: a private, checkpointed stream
    resume_path = job_dir / RESUME
    st = load_resume(resume_path, fit)

    n_train = len(rows["train"])
    # a trailing batch of one image cannot go through BatchNorm where the feature map is 1x1 (small inputs);
    # it is left out of that epoch (the order is reshuffled every epoch, so no image is left out for good)
    n_used = n_train - 1 if n_train > 1 and n_train % t.batch_size == 1 else n_train
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    eval_sizes = sorted({s for part in ("val", "test") for s in batch_sizes(len(rows[part]), t.eval_batch_size)})
    fit.net, compiled = compile_model(model, t.compile, compile_trial(fit, y_dev, batch_sizes(n_used, t.batch_size),
                                                                      eval_sizes))
    log = EpochLog(progress, t.epochs)
    t_job = time.perf_counter()
    for epoch in range(st.next_epoch, t.epochs + 1):
        t0 = time.perf_counter()
        order = rows["train"][torch.randperm(n_train, generator=fit.gen)]
        flips = torch.rand(n_train, generator=fit.gen) < t.augment.flip_p
        loss_sum, correct = train_epoch(fit, order, flips, y_dev, t.batch_size, n_used, log, epoch, t0)
        train_s = time.perf_counter() - t0
        lr = fit.opt.param_groups[0]["lr"]
        fit.sched.step()
        val_logits = predict(fit.forward, batcher, rows["val"], t.eval_batch_size)
        y_val = y_all[rows["val"]]
        h = {"epoch": epoch, "train_loss": loss_sum / n_used, "train_acc": correct / n_used,
             "val_loss": float(F.cross_entropy(val_logits, y_val)),
             "val_acc": float((val_logits.argmax(1) == y_val).float().mean()), "lr": float(lr),
             "seconds": time.perf_counter() - t0, "images_per_s": n_used / train_s}
        st.history.append(h)
        update_selection(t.keep, st, h, model, val_logits)
        save_resume(resume_path, fit, epoch, st)
        write_text(job_dir / "history.csv", _history_csv(st.history))
        log.epoch(h)
        if on_epoch_end is not None:
            on_epoch_end(epoch)

    if t.keep != "last":
        model.load_state_dict(st.best_state)
    test_logits = predict(fit.forward, batcher, rows["test"], t.eval_batch_size)
    selected = write_outputs(job_dir, model, st, t.keep, t.epochs, seed, test_logits, partition,
                             y_all[rows["val"]], y_all[rows["test"]])
    ips = [h["images_per_s"] for h in st.history]
    done = {"seconds": sum(h["seconds"] for h in st.history), "wall_seconds_this_process": time.perf_counter() - t_job,
            "images_per_s": float(np.median(ips[1:] if len(ips) > 1 else ips)),
            "epochs": t.epochs, "selected_epoch": selected, "keep": t.keep, "seed": seed, "device": str(dev),
            "amp": str(rt.amp_dtype).replace("torch.", "") if rt.amp_dtype else None,
            "channels_last": rt.channels_last, "deterministic": t.deterministic, "compile": compiled,
            "torch_threads": torch.get_num_threads(),
            "peak_memory_bytes": int(torch.cuda.max_memory_allocated(dev)) if dev.type == "cuda" else None,
            "n_train": n_train, "n_train_per_epoch": n_used, "n_val": len(rows["val"]), "n_test": len(rows["test"]),
            **(extra_done or {})}
    write_json(job_dir / DONE, done)
    resume_path.unlink(missing_ok=True)
    return done


def seed_job(seed: int) -> None:
    """Seed torch's global RNG before building the model, so weight init is the same on every re-run."""
    torch.manual_seed(seed)
