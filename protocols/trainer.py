"""One fold job (model x fold): train, select weights, write logits/history/checkpoint/DONE; resumable per epoch."""
from __future__ import annotations

import csv
import io
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.safe_load import load_weights_only
from protocols.atomic import write_bytes, write_json, write_text
from protocols.config import Protocol
from protocols.errors import BadInput
from protocols.logits import write_logits

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


def set_activation(model: nn.Module, name: str) -> int:
    """Replace every nn.ReLU module with the named activation; returns how many were replaced.

    The registry builds models with ReLU. For GELU we swap nn.ReLU *modules* after creation (including the
    ReLU inside CBAM's channel MLP); functional relu calls inside a model's forward are not reachable this way,
    so the count is recorded in DONE for the reader to judge.
    """
    if name == "ReLU":
        return 0
    if name != "GELU":
        raise ValueError(f"unsupported activation {name!r} (ReLU or GELU)")
    n = 0
    for parent in model.modules():
        for child_name, child in list(parent.named_children()):
            if isinstance(child, nn.ReLU):
                setattr(parent, child_name, nn.GELU())
                n += 1
    if n == 0:
        raise ValueError(f"{type(model).__name__} has no nn.ReLU modules to swap for GELU")
    return n


def resolve_device(spec: str = "auto") -> torch.device:
    if spec in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda requested but CUDA is not available")
    return torch.device(spec)


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


# ---------------------------------------------------------------- the job


def train_fold(job_dir, protocol: Protocol, model: nn.Module, images: torch.Tensor, labels, ids, partition: dict,
               *, seed: int, device: str | torch.device = "cpu", progress: bool = False,
               on_epoch_end: Callable[[int], None] | None = None, extra_done: dict | None = None) -> dict:
    """Train `model` on partition['train'], validate on ['val'], predict ['test']; resume from JOB/resume.pt.

    images: uint8 [N,3,S,S] (all manifest rows); labels: int [N]; ids: image ids [N] in the same order.
    A job whose DONE exists is skipped (its DONE is returned). The model is built by the caller *after*
    torch.manual_seed(seed) (see seed_job) so initialisation is reproducible too.
    """
    job_dir = Path(job_dir)
    done_path = job_dir / "DONE"
    if done_path.exists():
        import json
        return json.loads(done_path.read_text())
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
    sched = make_scheduler(protocol, opt)
    crit = loss_fn(t.loss)
    gen = torch.Generator().manual_seed(seed)           # shuffling + flips: a private, checkpointed stream
    history: list[dict] = []
    best_metric, best_state, best_epoch = None, None, None
    sel_val_logits = None     # val logits of the selected weights (computed once, at that epoch's validation)
    start_epoch = 1

    resume_path = job_dir / RESUME
    if resume_path.exists():
        ck = load_weights_only(resume_path, "resume", "resume checkpoint", RESTART_HINT)
        try:
            model.load_state_dict(ck["model"])
            opt.load_state_dict(ck["optimizer"])
            sched.load_state_dict(ck["scheduler"])
            gen.set_state(ck["gen_state"])
            torch.set_rng_state(ck["torch_rng"])
            if dev.type == "cuda" and ck.get("cuda_rng") is not None:
                torch.cuda.set_rng_state(ck["cuda_rng"], dev)
            history, start_epoch = ck["history"], ck["epoch"] + 1
            best_metric, best_state, best_epoch = ck["best_metric"], ck["best_state"], ck["best_epoch"]
            sel_val_logits = ck["sel_val_logits"]
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
            raise BadInput(resume_path, "resume", f"not a resume checkpoint of this job ({type(exc).__name__}: "
                                                  f"{str(exc).splitlines()[0][:200] if str(exc) else ''}); {RESTART_HINT}") from None

    n_train = len(rows["train"])
    # a trailing batch of one image cannot go through BatchNorm where the feature map is 1x1 (small inputs);
    # it is left out of that epoch (the order is reshuffled every epoch, so no image is left out for good)
    n_used = n_train - 1 if n_train > 1 and n_train % t.batch_size == 1 else n_train
    show = progress and sys.stderr.isatty()
    from tqdm import tqdm
    t_job = time.perf_counter()
    for epoch in range(start_epoch, t.epochs + 1):
        model.train()
        t0 = time.perf_counter()
        order = rows["train"][torch.randperm(n_train, generator=gen)]
        flips = torch.rand(n_train, generator=gen) < t.augment.flip_p
        loss_sum = torch.zeros((), device=dev)
        correct = torch.zeros((), device=dev, dtype=torch.long)
        bar = tqdm(range(0, n_used, t.batch_size), disable=not show, leave=False,
                   desc=f"epoch {epoch}/{t.epochs}", unit="batch", file=sys.stderr)
        for i in bar:
            j = min(i + t.batch_size, n_used)
            idx = order[i:j]
            x = batcher.batch(idx, flips[i:j])
            y = y_dev[idx.to(dev)]
            with rt.autocast():
                out = model(x)
            loss = crit(out, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.detach() * len(idx)
            correct += (out.detach().argmax(1) == y).sum()
            if show:
                el = time.perf_counter() - t0
                bar.set_postfix(loss=f"{loss.item():.4f}", img_s=f"{(i + len(idx)) / max(el, 1e-9):.0f}")
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)        # count queued kernels in this epoch's time, not the next one's
        train_s = time.perf_counter() - t0
        lr = opt.param_groups[0]["lr"]
        sched.step()
        val_logits = predict(model, batcher, rows["val"], t.eval_batch_size)
        y_val = y_all[rows["val"]]
        h = {"epoch": epoch, "train_loss": float(loss_sum) / n_used, "train_acc": float(correct) / n_used,
             "val_loss": float(F.cross_entropy(val_logits, y_val)),
             "val_acc": float((val_logits.argmax(1) == y_val).float().mean()), "lr": float(lr),
             "seconds": time.perf_counter() - t0, "images_per_s": n_used / train_s}
        history.append(h)
        if t.keep == "last":
            sel_val_logits = val_logits
        elif _better(t.keep, h, best_metric):
            best_metric = h["val_loss"] if t.keep == "best_val_loss" else h["val_acc"]
            best_state, best_epoch, sel_val_logits = _cpu_state(model), epoch, val_logits
        _save_torch(resume_path, {
            "model": _cpu_state(model), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "gen_state": gen.get_state(), "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None,
            "epoch": epoch, "history": history,
            "best_metric": best_metric, "best_state": best_state, "best_epoch": best_epoch,
            "sel_val_logits": sel_val_logits})
        write_text(job_dir / "history.csv", _history_csv(history))
        if show:
            print(f"epoch {epoch}/{t.epochs} loss {h['train_loss']:.4f} val_loss {h['val_loss']:.4f} "
                  f"val_acc {h['val_acc']:.3f} {h['images_per_s']:.0f} img/s", file=sys.stderr)
        if on_epoch_end is not None:
            on_epoch_end(epoch)

    if t.keep == "last":
        selected = t.epochs
    else:
        model.load_state_dict(best_state)
        selected = best_epoch
    test_logits = predict(model, batcher, rows["test"], t.eval_batch_size)
    write_logits(job_dir / "val_logits.npz", partition["val"], sel_val_logits.numpy(), y_all[rows["val"]].numpy())
    write_logits(job_dir / "test_logits.npz", partition["test"], test_logits.numpy(), y_all[rows["test"]].numpy())
    _save_torch(job_dir / "checkpoint.pt", {"model": _cpu_state(model), "selected_epoch": selected,
                                            "keep": t.keep, "seed": seed})
    ips = [h["images_per_s"] for h in history]
    done = {"seconds": sum(h["seconds"] for h in history), "wall_seconds_this_process": time.perf_counter() - t_job,
            "images_per_s": float(np.median(ips[1:] if len(ips) > 1 else ips)),
            "epochs": t.epochs, "selected_epoch": selected, "keep": t.keep, "seed": seed, "device": str(dev),
            "amp": str(rt.amp_dtype).replace("torch.", "") if rt.amp_dtype else None,
            "channels_last": rt.channels_last, "deterministic": t.deterministic,
            "n_train": n_train, "n_train_per_epoch": n_used, "n_val": len(rows["val"]), "n_test": len(rows["test"]),
            **(extra_done or {})}
    write_json(done_path, done)
    resume_path.unlink(missing_ok=True)
    return done


def seed_job(seed: int) -> None:
    """Seed torch's global RNG before building the model, so weight init is the same on every re-run."""
    torch.manual_seed(seed)
