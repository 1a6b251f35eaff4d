"""Latency measurement: percentiles, OOM search logic, CPU schema, bf16/channels_last paths, peak RSS, the CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from bench import latency as L
from bench.cli import main as cli


def tiny_factory(name, input_size, num_classes=5):
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes))


# by hand: conv 3->8 3x3 (216 weights + 8 bias), BatchNorm 8 (weight + bias), linear 8->5 (40 + 5)
TINY_PARAMS = 216 + 8 + 16 + 45


def tiny_flops(size: int) -> int:
    """2 FLOPs per multiply-accumulate: conv 3x3x3 per output value x 8 channels x size^2, linear 8x5 (no bias)."""
    return 2 * 27 * 8 * size * size + 2 * 8 * 5


def test_model_facts_count_the_timed_module_by_hand():
    m = tiny_factory("tiny", 32)
    m.train()
    f = L.model_facts(m, 32)
    assert (f["params"], f["params_trainable"], f["flops"]) == (TINY_PARAMS, TINY_PARAMS, tiny_flops(32))
    assert m.training                                  # left as it was found


def test_latency_takes_cuda_n_and_refuses_unknown_devices():
    from protocols.device import resolve_device
    from protocols.errors import BadInput
    assert resolve_device("cpu") == torch.device("cpu")
    for bad in ("tpu", "cuda:", "cuda:-1", "gpu0"):
        with pytest.raises(BadInput):
            resolve_device(bad)
    if not torch.cuda.is_available():
        for spec in ("cuda", "cuda:0"):
            with pytest.raises(BadInput, match="not available"):
                resolve_device(spec)
        assert resolve_device("auto") == torch.device("cpu")
    else:
        assert resolve_device("cuda:0") == torch.device("cuda:0")
        with pytest.raises(BadInput, match="visible"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")


def tiny_cfg(**kw):
    base = dict(input_size=32, batch_sizes=(1, 4), precisions=("fp32", "bf16"), runs=12, warmup=2,
                throughput_runs=3, train_batch=4, train_runs=3, train_warmup=1)
    return L.LatencyConfig(**{**base, **kw})


# ---------------------------------------------------------------- pure helpers

def test_summarize_times_matches_numpy_and_is_ordered():
    rng = np.random.default_rng(0)
    t = rng.lognormal(-4, 0.5, 200)
    s = L.summarize_times(t)
    ref = np.percentile(t * 1e3, [50, 90, 99])
    assert [s["p50_ms"], s["p90_ms"], s["p99_ms"]] == pytest.approx(list(ref))
    assert s["min_ms"] <= s["p50_ms"] <= s["p90_ms"] <= s["p99_ms"] <= s["max_ms"]
    assert s["std_ms"] == pytest.approx(np.std(t * 1e3, ddof=1)) and s["runs"] == 200
    # textbook: 1..101 ms -> median 51, p90 91, p99 100 (linear interpolation)
    u = L.summarize_times(np.arange(1, 102) / 1e3)
    assert (u["p50_ms"], u["p90_ms"], u["p99_ms"]) == pytest.approx((51.0, 91.0, 100.0))
    with pytest.raises(ValueError):
        L.summarize_times([])


class FakeAllocator:
    """Raises an OOM error above `limit` images, like the CUDA caching allocator would."""

    def __init__(self, limit, exc=None):
        self.limit, self.calls, self.freed = limit, [], 0
        self.exc = exc or torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    def __call__(self, batch):
        self.calls.append(batch)
        if batch > self.limit:
            raise self.exc

    def free(self):
        self.freed += 1


def test_find_max_batch_doubles_until_oom():
    fake = FakeAllocator(300)
    r = L.find_max_batch(fake, start=64, cap=4096, on_oom=fake.free)
    assert r["batch"] == 256 and not r["capped"]
    assert fake.calls == [64, 128, 256, 512] and fake.freed == 1
    assert r["tried"] == [[64, True], [128, True], [256, True], [512, False]]


def test_find_max_batch_respects_cap_and_halves_when_start_too_big():
    capped = L.find_max_batch(FakeAllocator(10**9), start=64, cap=256)
    assert capped["batch"] == 256 and capped["capped"]
    fake = FakeAllocator(20)
    small = L.find_max_batch(fake, start=64, cap=1024)
    assert small["batch"] == 16 and fake.calls == [64, 32, 16] and not small["capped"]
    nothing = L.find_max_batch(FakeAllocator(0), start=4, cap=8)
    assert nothing["batch"] is None


def test_find_max_batch_oom_as_runtime_error_and_other_errors_propagate():
    msg = FakeAllocator(100, RuntimeError("CUDA error: out of memory"))
    assert L.find_max_batch(msg, start=32, cap=1024)["batch"] == 64
    with pytest.raises(ValueError):
        L.find_max_batch(FakeAllocator(100, ValueError("shape mismatch")), start=32, cap=1024)
    assert not L.is_oom_error(ValueError("out of memory"))


# ---------------------------------------------------------------- CPU code paths

def test_bf16_autocast_and_channels_last_on_cpu():
    model = tiny_factory("t", 32).to(memory_format=torch.channels_last).eval()
    x = L._input(2, 32, torch.device("cpu"), channels_last=True)
    assert x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    with torch.inference_mode(), L.autocast(torch.device("cpu"), "bf16"):
        assert model[0](x).dtype == torch.bfloat16
    with torch.inference_mode(), L.autocast(torch.device("cpu"), "fp32"):
        assert model(x).dtype == torch.float32
    with pytest.raises(ValueError):
        L.autocast(torch.device("cpu"), "fp8")


def _fresh_pages(nbytes: int):
    """nbytes of fresh anonymous pages, every page touched (caller closes it): a malloc'd array may reuse pages
    an earlier test freed but that are still resident (glibc raises its mmap threshold after large frees), and
    then RSS does not grow at all."""
    import mmap
    buf = mmap.mmap(-1, nbytes)
    for off in range(0, len(buf), mmap.PAGESIZE):
        buf[off] = 1
    return buf


def test_peak_rss_sees_an_allocation_inside_the_window():
    with L.PeakMemory(torch.device("cpu")) as pm:
        buf = _fresh_pages(64 * 2**20)
    r = pm.result
    assert r["peak_allocated_bytes"] is None and r["peak_rss_bytes"] > 0
    if r["rss_peak_reset"]:
        assert r["peak_rss_bytes"] - r["rss_before_bytes"] >= 0.9 * 64 * 2**20
    buf.close()


def test_peak_window_excludes_warmup_one_offs_but_sees_steady_state():
    mib = 2**20
    calls = []

    def first_call_heavy():
        if not calls:                       # a one-off, like cuDNN autotuning workspaces
            _fresh_pages(96 * mib).close()
        calls.append(1)

    def always_heavy():
        _fresh_pages(96 * mib).close()

    _, once = L._timed_window(first_call_heavy, runs=3, warmup=1, device=torch.device("cpu"))
    _, every = L._timed_window(always_heavy, runs=3, warmup=1, device=torch.device("cpu"))
    if not (once["rss_peak_reset"] and every["rss_peak_reset"]):
        pytest.skip("peak RSS cannot be reset on this OS")
    assert once["peak_rss_bytes"] - once["rss_before_bytes"] < 48 * mib
    assert every["peak_rss_bytes"] - every["rss_before_bytes"] >= 90 * mib


def test_run_latency_cpu_schema_and_ordering():
    res = L.run_latency(["tiny"], tiny_cfg(), "cpu", factory=tiny_factory, command=["latency"])
    assert res["schema"] == L.SCHEMA and res["device"]["type"] == "cpu" and res["packages"]["torch"]
    assert res["settings"]["batch_sizes"] == [1, 4] and res["settings"]["cudnn_benchmark"] is False
    m = res["models"]["tiny"]
    assert "error" not in m and m["params"] == sum(p.numel() for p in tiny_factory("t", 32).parameters())
    assert m["flops"] > 0 and m["input_size"] == 32
    for prec in ("fp32", "bf16"):
        blk = m[prec]
        b1 = blk["batch"]["1"]
        assert b1["runs"] == 12 and blk["batch"]["4"]["runs"] == 3
        assert 0 < b1["p50_ms"] <= b1["p90_ms"] <= b1["p99_ms"]
        assert (blk["batch_size"], blk["p50_ms"]) == (1, b1["p50_ms"])
        assert blk["images_per_s"] == max(t["images_per_s"] for t in blk["batch"].values())
        assert blk["peak_memory_bytes"] == b1["peak_rss_bytes"] > 0
        assert blk["max_batch"]["batch"] is None and "CPU" in blk["max_batch"]["note"]
        assert isinstance(res["settings"]["tf32"]["cudnn_allow_tf32"], bool)
        tr = m["train"]["by_precision"][prec]
        assert tr["batch"] == 4 and tr["runs"] == 3 and tr["p50_ms"] > 0
    assert m["train"]["precision"] == "fp32" and m["train"]["peak_memory_bytes"] > 0
    json.dumps(res)  # serialisable as is


def test_run_latency_records_a_failing_model_and_goes_on():
    def factory(name, size, nc=5):
        if name == "broken":
            raise RuntimeError("cannot build")
        return tiny_factory(name, size, nc)
    seen = []
    res = L.run_latency(["broken", "tiny"], tiny_cfg(precisions=("fp32",), train_batch=None), "cpu",
                        factory=factory, on_model=lambda r: seen.append(list(r["models"])))
    assert "cannot build" in res["models"]["broken"]["error"]
    assert "fp32" in res["models"]["tiny"] and res["models"]["tiny"]["train"] == {}
    assert seen == [["broken"], ["broken", "tiny"]]


def test_cross_check_compares_two_measurements_of_the_same_call():
    r = L.cross_check(tiny_factory("t", 32), torch.device("cpu"), 1, 32, rounds=2, runs=5, warmup=1)
    assert r["ours_median_ms"] > 0 and r["timer_median_ms"] > 0
    assert r["rel_diff"] == pytest.approx(abs(r["ours_median_ms"] - r["timer_median_ms"]) / r["timer_median_ms"])


# ---------------------------------------------------------------- CLI

@pytest.fixture
def tiny_registry(monkeypatch):
    import models
    monkeypatch.setattr(models, "list_models", lambda: ["tiny"], raising=False)
    monkeypatch.setattr(models, "create_model", lambda name, num_classes=5, pretrained=None, input_size=224,
                        **kw: tiny_factory(name, input_size, num_classes), raising=False)


def test_cli_latency_cpu_writes_json(tmp_path, tiny_registry, capsys):
    out = tmp_path / "lat.json"
    rc = cli(["latency", "--device", "cpu", "--input-size", "32", "--batch-sizes", "1,2", "--runs", "5",
              "--warmup", "1", "--throughput-runs", "2", "--train-batch", "2", "--train-runs", "2",
              "--precisions", "fp32", "--no-channels-last", "--quiet", "--json", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["schema"] == "fibrobench.latency/1" and res["settings"]["channels_last"] is False
    m = res["models"]["tiny"]
    assert (m["params"], m["flops"], m["facts_source"]) == (TINY_PARAMS, tiny_flops(32), "models.facts")
    assert set(m["fp32"]["batch"]) == {"1", "2"} and "bf16" not in m
    assert not (tmp_path / "lat.json.partial").exists()
    assert "tiny" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["--precisions", "fp16"], ["--models", "nope"], ["--batch-sizes", "1,x"],
                                  ["--runs", "0"], ["--batch-sizes", "0"], ["--device", "tpu"]])
def test_cli_latency_bad_input_exit_2(tiny_registry, argv):
    assert cli(["latency", "--device", "cpu", *argv]) == 2


def test_cli_latency_info_only(tmp_path, tiny_registry):
    out = tmp_path / "info.json"
    assert cli(["latency", "--device", "cpu", "--info-only", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["models"]["tiny"]["params"] == TINY_PARAMS and "fp32" not in res["models"]["tiny"]
    assert res["models"]["tiny"]["flops"] == tiny_flops(224)      # the default input size


# ---------------------------------------------------------------- CUDA

@pytest.mark.gpu
def test_run_latency_cuda_peak_memory_and_max_batch():
    res = L.run_latency(["tiny"], tiny_cfg(max_batch_cap=256), "cuda", factory=tiny_factory)
    m = res["models"]["tiny"]
    assert res["device"]["type"] == "cuda" and res["device"]["name"]
    for prec in ("fp32", "bf16"):
        b1 = m[prec]["batch"]["1"]
        assert b1["peak_allocated_bytes"] >= b1["allocated_before_bytes"] > 0
        assert b1["peak_reserved_bytes"] >= b1["peak_allocated_bytes"]
        assert m[prec]["max_batch"]["batch"] == 256 and m[prec]["max_batch"]["capped"]
        assert m["train"]["by_precision"][prec]["peak_allocated_bytes"] > 0


def test_cli_latency_takes_input_size_and_models_from_protocol(tmp_path):
    from pathlib import Path
    smoke = str(Path(__file__).resolve().parents[1] / "protocols" / "smoke" / "protocol.yaml")
    out = tmp_path / "info.json"
    assert cli(["latency", "--device", "cpu", "--protocol", smoke, "--info-only", "--json", str(out)]) == 0
    from protocols.config import load_protocol
    p = load_protocol(smoke)
    res = json.loads(out.read_text())
    assert list(res["models"]) == list(p.models)
    assert all(m["input_size"] == p.data.input_size and m["params"] > 0 for m in res["models"].values())
