"""Fold-job trainer: loss equivalence, device-side batching, resume identity after a crash, weight selection."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from models.activations import set_activation
from protocols.config import apply_overrides, from_dict
from protocols.runfiles import read_logits
from protocols.trainer import Batcher, Runtime, loss_fn, seed_job, train_fold

N, S = 48, 16



def _protocol(**over):
    p = from_dict({"name": "t", "models": ["tiny"], "data": {"input_size": S},
                   "train": {"optimizer": "Adam", "lr": 3e-3, "weight_decay": 1e-4, "scheduler": "CosineAnnealingLR",
                             "batch_size": 8, "eval_batch_size": 16, "epochs": 3, "augment": {"flip_p": 0.5},
                             "keep": "last", "deterministic": True, "seed": 0}})
    return apply_overrides(p, over) if over else p


def _tiny(seed=0):
    seed_job(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.2),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5))


def _data():
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (N, 3, S, S), dtype=torch.uint8, generator=g)
    labels = np.arange(N) % 5
    images[:, 0] = (images[:, 0] // 2 + torch.as_tensor(labels * 25, dtype=torch.uint8).view(-1, 1, 1))  # learnable
    ids = [f"img{i:03d}.png" for i in range(N)]
    part = {"train": ids[:30], "val": ids[30:40], "test": ids[40:]}
    return images, labels, ids, part


def test_loss_names_identical_values_and_gradients():
    torch.manual_seed(0)
    logits = torch.randn(7, 5, dtype=torch.float64)
    y = torch.tensor([0, 4, 2, 2, 1, 3, 0])
    grads, values = [], []
    for name in ("CrossEntropyLoss", "SparseCategoricalCrossentropy", "manual"):
        z = logits.clone().requires_grad_(True)
        loss = (-torch.log(torch.exp(z) / torch.exp(z).sum(1, keepdim=True))[torch.arange(7), y].mean()
                if name == "manual" else loss_fn(name)(z, y))
        loss.backward()
        values.append(loss.detach().double())
        grads.append(z.grad)
    assert torch.allclose(values[0], values[2], atol=1e-6) and torch.equal(values[0], values[1])
    assert torch.equal(grads[0], grads[1]) and torch.allclose(grads[0], grads[2], atol=1e-6)
    # textbook gradient of mean CE: (softmax - onehot) / N
    ref = (torch.softmax(logits.float(), 1) - F.one_hot(y, 5)) / 7
    assert torch.allclose(grads[0].float(), ref, atol=1e-6)
    with pytest.raises(ValueError):
        loss_fn("focal")


def test_batcher_normalises_and_flips_like_reference():
    images, *_ = _data()
    rt = Runtime(torch.device("cpu"), None, channels_last=True)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    b = Batcher(images, mean, std, rt)
    rows = torch.tensor([3, 0, 7])
    flip = torch.tensor([True, False, True])
    x = b.batch(rows, flip)
    ref = images[rows].float() / 255
    ref[flip] = ref[flip].flip(3)
    ref = (ref - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert torch.allclose(x, ref, atol=1e-5)
    assert x.is_contiguous(memory_format=torch.channels_last)


def test_set_activation_gelu():
    m = _tiny()
    assert set_activation(m, "GELU") == 1
    assert not any(isinstance(x, nn.ReLU) for x in m.modules()) and any(isinstance(x, nn.GELU) for x in m.modules())
    assert set_activation(m, "ReLU") == 0
    with pytest.raises(ValueError, match="no nn.ReLU"):
        set_activation(nn.Linear(2, 2), "GELU")


def _run(job, p, on_epoch_end=None):
    images, labels, ids, part = _data()
    return train_fold(job, p, _tiny(p.train.seed), images, labels, ids, part, seed=p.train.seed,
                      on_epoch_end=on_epoch_end)


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("keep", ["last", "best_val_loss"])
def test_interrupted_then_resumed_run_is_identical(tmp_path, keep):
    p = _protocol(**{"train.keep": keep})
    ref = tmp_path / "ref"
    _run(ref, p)

    class Killed(RuntimeError):
        pass

    def die(epoch):
        if epoch == 2:
            raise Killed

    job = tmp_path / "job"
    with pytest.raises(Killed):
        _run(job, p, on_epoch_end=die)
    assert (job / "resume.pt").exists() and not (job / "DONE").exists()
    assert not (job / "test_logits.npz").exists()
    assert len(_rows(job / "history.csv")) == 2
    before = _rows(job / "history.csv")
    seen = []
    _run(job, p, on_epoch_end=seen.append)        # a fresh model object, re-initialised, then resumed
    assert seen == [3]                            # continued, not restarted
    assert _rows(job / "history.csv")[:2] == before   # epochs 1-2 (incl. their timings) come from the checkpoint
    assert (job / "DONE").exists() and not (job / "resume.pt").exists()
    for name in ("val_logits.npz", "test_logits.npz"):
        a, b = read_logits(ref / name), read_logits(job / name)
        assert np.array_equal(a["logits"], b["logits"]) and np.array_equal(a["ids"], b["ids"])
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("seconds", "images_per_s")} for r in rows]
    assert strip(_rows(ref / "history.csv")) == strip(_rows(job / "history.csv"))
    ca = torch.load(ref / "checkpoint.pt", weights_only=True)["model"]
    cb = torch.load(job / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(ca[k], cb[k]) for k in ca)


def test_keep_best_val_loss_selects_argmin_and_done_skips(tmp_path):
    p = _protocol(**{"train.keep": "best_val_loss", "train.epochs": 4, "train.lr": 0.05})
    done = _run(tmp_path, p)
    hist = _rows(tmp_path / "history.csv")
    losses = [float(r["val_loss"]) for r in hist]
    assert done["selected_epoch"] == int(np.argmin(losses)) + 1
    # the saved val logits are those of the selected weights: their loss is the selected epoch's val loss
    v = read_logits(tmp_path / "val_logits.npz")
    loss = F.cross_entropy(torch.from_numpy(v["logits"]), torch.from_numpy(v["labels"])).item()
    assert loss == pytest.approx(min(losses), rel=1e-4)
    assert list(v["ids"]) == _data()[3]["val"]
    t = read_logits(tmp_path / "test_logits.npz")
    assert t["logits"].dtype == np.float32 and t["labels"].dtype == np.int64 and len(t["ids"]) == 8
    mtime = (tmp_path / "test_logits.npz").stat().st_mtime_ns
    again = _run(tmp_path, p)                     # DONE present: skipped, nothing rewritten
    assert again == json.loads((tmp_path / "DONE").read_text())
    assert (tmp_path / "test_logits.npz").stat().st_mtime_ns == mtime


def test_learns_something(tmp_path):
    p = _protocol(**{"train.epochs": 6, "train.lr": 0.05, "train.augment.flip_p": 0.0})
    _run(tmp_path, p)
    hist = _rows(tmp_path / "history.csv")
    assert float(hist[-1]["train_loss"]) < float(hist[0]["train_loss"])


def test_bf16_autocast_and_channels_last_on_cpu(tmp_path):
    p = _protocol(**{"train.amp": "bf16", "train.channels_last": True, "train.epochs": 1})
    done = _run(tmp_path, p)
    assert done["amp"] == "bfloat16" and done["channels_last"] is True
    t = read_logits(tmp_path / "test_logits.npz")
    assert np.isfinite(t["logits"]).all() and t["logits"].dtype == np.float32


@pytest.mark.gpu
def test_cuda_path(tmp_path):
    p = _protocol(**{"train.epochs": 2, "train.deterministic": False})
    images, labels, ids, part = _data()
    done = train_fold(tmp_path, p, _tiny(), images, labels, ids, part, seed=0, device="cuda")
    assert done["device"].startswith("cuda") and done["amp"] == "bfloat16" and done["channels_last"]
    assert np.isfinite(read_logits(tmp_path / "test_logits.npz")["logits"]).all()
