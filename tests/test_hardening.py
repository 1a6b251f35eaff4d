"""Issue 16, item by item: each bad input gets one line and exit 2 (or the outcome a careful user expects), and
the error funnel itself (bench/funnel.py): OS errors on user paths -> 2, anything unexpected -> traceback and 3."""
from __future__ import annotations

import argparse
import errno
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from bench import funnel
from bench.cli import main
from protocols.errors import BadInput

ROOT = Path(__file__).resolve().parent.parent
CLAIMS = ROOT / "protocols/afif2025/claims.yaml"


def _err_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [ln for ln in err.strip().splitlines() if " error: " in ln]
    assert len(lines) == 1 and err.strip().splitlines()[-1] == lines[0], err
    return lines[0]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from protocols.synth import generate_dataset
    d = tmp_path_factory.mktemp("data") / "D"
    generate_dataset(d, n_patients=6, size=(48, 40), seed=0, overwrite=True)
    return d


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory):
    from bench.scripts.fake_run import make_fake_run
    return make_fake_run(tmp_path_factory.mktemp("runs") / "run", models=("resnet50",), n_patients=20,
                         images_per_patient=2, n_folds=2)


def _protocol(tmp_path, **top) -> Path:
    doc = {"include": str(ROOT / "protocols/smoke/protocol.yaml"), "name": "tiny", "data": {"input_size": 32},
           "split": {"n_folds": 2}, "train": {"epochs": 1, "batch_size": 16}, "models": ["efficientnet_b0"], **top}
    p = tmp_path / "p.yaml"
    p.write_text(yaml.safe_dump(doc))
    return p


def _copy_run(src: Path, dst: Path) -> Path:
    import shutil
    shutil.copytree(src, dst)
    return dst


# ---------------------------------------------------------------- the funnel


def _args(**kw) -> argparse.Namespace:
    return argparse.Namespace(command="x", argv=[], **kw)


def test_os_error_on_a_user_path_is_bad_input_elsewhere_a_bug():
    args = _args(out="/data/runs/r1", json=None)
    for exc in (PermissionError(errno.EACCES, "Permission denied", "/data/runs/r1/jobs"),   # under --out
                NotADirectoryError(errno.ENOTDIR, "Not a directory", "/data/runs"),          # above --out
                FileExistsError(errno.EEXIST, "File exists", "/data/runs/r1")):
        code, msg = funnel.classify(exc, args)
        assert code == 2 and "--out" in msg and exc.filename in msg
    # a file nobody named: an internal error, shown with its traceback
    assert funnel.classify(FileNotFoundError(errno.ENOENT, "No such file", "/usr/lib/x.so"), args) == (3, None)
    assert funnel.classify(KeyError("model"), args) == (3, None)
    # disk full / read-only file system: the environment, whatever the file
    assert funnel.classify(OSError(errno.ENOSPC, "No space left on device"), args)[0] == 2
    assert funnel.classify(BadInput("f.yaml", "a.b", "line one\nline two"), args) == (2, "f.yaml: a.b: line one line two")


def test_messages_are_one_line_with_terminal_escapes_shown_and_bounded():
    assert funnel.one_line("bad\x1b[31mred\x1b[0m\r\nname") == "bad\\x1b[31mred\\x1b[0m name"
    long = funnel.one_line("x" * 5000)
    assert len(long) < funnel.MAX_MESSAGE + 40 and long.endswith("(4000 more characters)")


def test_an_unexpected_error_shows_its_traceback_and_exits_3(monkeypatch, capsys):
    from bench.commands import models as cmd

    def boom(args):
        raise ZeroDivisionError("a bug")
    monkeypatch.setattr(cmd, "main", boom)
    assert main(["models", "--models", "resnet50"]) == 3
    err = capsys.readouterr().err
    assert "Traceback" in err and "ZeroDivisionError: a bug" in err and "internal error" in err.splitlines()[-1]


def test_atomic_writer_refuses_a_directory_a_file_parent_and_an_unwritable_parent(tmp_path, monkeypatch):
    from protocols import atomic
    (tmp_path / "d").mkdir()
    (tmp_path / "f").write_text("x")
    with pytest.raises(BadInput, match="is a directory"):
        atomic.write_json(tmp_path / "d", {})
    with pytest.raises(BadInput, match="parent path is a file"):
        atomic.write_json(tmp_path / "f" / "out.json", {})

    def denied(*a, **k):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path))
    monkeypatch.setattr(atomic.tempfile, "mkstemp", denied)
    with pytest.raises(BadInput, match="Permission denied") as ei:
        atomic.write_json(tmp_path / "ok.json", {})
    assert ei.value.path == str(tmp_path / "ok.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "f"]      # no temp file left


def test_output_paths_are_checked_before_any_work(tmp_path, monkeypatch, capsys):
    """An unwritable --out parent is refused before the command runs (root ignores permission bits, so the
    access check is simulated)."""
    locked = tmp_path / "locked"
    locked.mkdir()
    real = os.access
    monkeypatch.setattr(funnel.os, "access", lambda p, mode: False if Path(p) == locked else real(p, mode))
    assert main(["synth", str(locked / "D"), "--patients", "5", "--size", "32x32", "--quiet"]) == 2     # item 4
    line = _err_line(capsys)
    assert str(locked / "D") in line and "not writable" in line and not (locked / "D").exists()
    assert main(["audit-claims", str(CLAIMS), "--json", str(locked / "a.json")]) == 2                   # item 3
    assert "not writable" in _err_line(capsys)


# ---------------------------------------------------------------- items 1, 2, 9, 13: run


def test_item1_unavailable_device_exits_2_before_anything_is_written(tmp_path, data, monkeypatch, capsys):
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    proto = _protocol(tmp_path)
    for device in ("cuda", "tpu"):
        out = tmp_path / f"run-{device}"
        assert main(["run", str(proto), "--data", str(data), "--out", str(out), "--device", device,
                     "--no-progress"]) == 2
        assert "--device" in _err_line(capsys) and not out.exists()


def test_item2_out_is_an_existing_file_or_under_one(tmp_path, data, capsys):
    proto = _protocol(tmp_path)
    f = tmp_path / "afile"
    f.write_text("keep me")
    for out in (f, f / "run"):
        assert main(["run", str(proto), "--data", str(data), "--out", str(out), "--device", "cpu"]) == 2
        line = _err_line(capsys)
        assert str(out) in line and "--out" in line
    assert f.read_text() == "keep me"


def test_item2_out_that_cannot_be_created_is_bad_input(tmp_path, data, monkeypatch, capsys):
    """mkdir failing with EACCES (not reproducible as root): the run names --out and exits 2."""
    proto = _protocol(tmp_path)
    out = tmp_path / "ro" / "run"
    real_mkdir = Path.mkdir

    def mkdir(self, *a, **k):
        if self == out:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_mkdir(self, *a, **k)
    monkeypatch.setattr(Path, "mkdir", mkdir)
    assert main(["run", str(proto), "--data", str(data), "--out", str(out), "--device", "cpu"]) == 2
    line = _err_line(capsys)
    assert str(out) in line and "Permission denied" in line


@pytest.mark.parametrize("name", ["../../escaped", "a/b", "..", ".hidden", "a\\b", "x" * 201, ""])
def test_item9_protocol_names_cannot_escape_runs(tmp_path, data, monkeypatch, capsys, name):
    monkeypatch.chdir(tmp_path)
    proto = _protocol(tmp_path, name=name)
    assert main(["run", str(proto), "--data", str(data), "--device", "cpu", "--no-progress"]) == 2
    assert "name" in _err_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.yaml"]        # neither runs/ nor anything beside it


def test_item9_names_and_grid_variant_ids_are_single_safe_path_components(tmp_path):
    from protocols.config import expand_grid, load_protocol
    p = load_protocol(_protocol(tmp_path, name="afif2025-patient_v2+x=1@b",
                                grid={"models": [["resnet50", "timm/resnet18"]], "train.lr": [1e-3]}))
    (v,) = expand_grid(p)
    vid = v.variant["id"]
    assert "/" not in vid and "\\" not in vid and not vid.startswith(".") and len(vid) < 140
    assert Path("runs", vid).parent == Path("runs")


def test_item13_unknown_model_or_missing_weights_leave_no_run_directory(tmp_path, data, capsys):
    out = tmp_path / "run"
    assert main(["run", str(_protocol(tmp_path, models=["nosuchnet"])), "--data", str(data), "--out", str(out),
                 "--device", "cpu"]) == 2
    line = _err_line(capsys)
    assert "p.yaml: models[0]" in line and "nosuchnet" in line and not out.exists()
    assert main(["run", str(_protocol(tmp_path)), "--data", str(data), "--out", str(out), "--device", "cpu",
                 "--models", "resnet50,nosuchnet"]) == 2
    assert "--models" in _err_line(capsys) and not out.exists()
    missing = _protocol(tmp_path, pretrained=str(tmp_path / "no-such-weights.pth"), allow_random_init=False)
    assert main(["run", str(missing), "--data", str(data), "--out", str(out), "--device", "cpu"]) == 2
    assert "no-such-weights.pth" in _err_line(capsys) and not out.exists()


# ---------------------------------------------------------------- item 5: report on a damaged run


def test_item5_report_on_truncated_logits_names_the_file(tmp_path, fake_run, capsys):
    for rel in ("jobs/resnet50/fold0/test_logits.npz", "ensemble/resnet50.npz"):
        run = _copy_run(fake_run, tmp_path / rel.replace("/", "_"))
        f = run / rel
        f.write_bytes(f.read_bytes()[:200])
        assert main(["report", str(run), "--n-boot", "10"]) == 2
        line = _err_line(capsys)
        assert rel.split("/")[-1] in line and not (run / "report.html").exists()


def test_item5_report_without_splits_json_renders_with_a_warning(tmp_path, fake_run, capsys):
    run = _copy_run(fake_run, tmp_path / "run")
    (run / "splits.json").unlink()
    assert main(["report", str(run), "--n-boot", "10", "--json", str(tmp_path / "s.json")]) == 0
    assert "Traceback" not in capsys.readouterr().err
    assert any("splits.json missing" in w for w in json.loads((tmp_path / "s.json").read_text())["warnings"])


# ---------------------------------------------------------------- item 6: audit-claims


@pytest.mark.parametrize("value", ['"1e400"', '"-1e400%"', '"1e999999999"', '"1e-400"', '"' + "9" * 5000 + '"'])
def test_item6_out_of_range_printed_numbers_are_bad_input(tmp_path, capsys, value):
    text = CLAIMS.read_text()
    assert 'accuracy: "84.98%"' in text
    bad = tmp_path / "claims.yaml"
    bad.write_text(text.replace('accuracy: "84.98%"', f"accuracy: {value}", 1))
    assert main(["audit-claims", str(bad)]) == 2
    line = _err_line(capsys)
    assert "metrics.accuracy" in line and "out of range" in line and len(line) < 400


# ---------------------------------------------------------------- items 7, 10: gate


@pytest.fixture(scope="module")
def baseline(fake_run, tmp_path_factory):
    b = tmp_path_factory.mktemp("base") / "base.json"
    assert main(["gate", str(fake_run), "--baseline", str(b), "--write-baseline"]) == 0
    return json.loads(b.read_text())


@pytest.mark.parametrize("value,field", [("high", "accuracy.value"), (float("inf"), "accuracy.value"),
                                         (float("nan"), "accuracy.value"), (True, "accuracy.value")])
def test_item7_item10_baseline_values_must_be_finite_numbers(tmp_path, fake_run, baseline, capsys, value, field):
    doc = json.loads(json.dumps(baseline))
    doc["metrics"]["resnet50"]["accuracy"]["value"] = value
    b = tmp_path / "b.json"
    b.write_text(json.dumps(doc))                  # json writes inf/nan as Infinity/NaN, as Python reads them
    assert main(["gate", str(fake_run), "--baseline", str(b), "--json", str(tmp_path / "g.json")]) == 2
    assert f"metrics.resnet50.{field}" in _err_line(capsys) and not (tmp_path / "g.json").exists()


def test_item10_empty_baseline_unknown_metric_and_failed_run(tmp_path, fake_run, baseline, capsys):
    doc = json.loads(json.dumps(baseline))
    doc["metrics"] = {}
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps(doc))
    assert main(["gate", str(fake_run), "--baseline", str(empty)]) == 2
    assert "metrics" in _err_line(capsys)

    good = tmp_path / "good.json"
    good.write_text(json.dumps(baseline))
    assert main(["gate", str(fake_run), "--baseline", str(good), "--metrics", "nosuchmetric"]) == 2
    assert "--metrics" in (line := _err_line(capsys)) and "nosuchmetric" in line
    assert main(["gate", str(fake_run), "--baseline", str(good), "--metrics", "accuracy"]) == 0

    failed = _copy_run(fake_run, tmp_path / "failed")
    run = json.loads((failed / "run.json").read_text())
    run["status"] = "failed"
    (failed / "run.json").write_text(json.dumps(run))
    new = tmp_path / "new-base.json"
    assert main(["gate", str(failed), "--baseline", str(new), "--write-baseline"]) == 2
    assert "status" in _err_line(capsys) and not new.exists()


# ---------------------------------------------------------------- items 8, 11: checkpoints and weights


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _bad_checkpoints(tmp_path) -> dict[str, bytes]:
    import torch
    p = tmp_path / "ok.pt"
    torch.save({"w": torch.zeros(3)}, p)
    ok = p.read_bytes()
    p.unlink()
    return {"random": np.random.default_rng(0).bytes(600), "empty": b"", "truncated": ok[: len(ok) // 2],
            "code": pickle.dumps({"x": _Evil(tmp_path / "PWNED")}), "wrong_keys": ok}


def test_item8_invalid_resume_checkpoint_is_one_line_without_weights_only_advice(tmp_path, data, capsys):
    proto = _protocol(tmp_path)
    for kind, blob in _bad_checkpoints(tmp_path).items():
        out = tmp_path / f"run-{kind}"
        job = out / "jobs" / "efficientnet_b0" / "fold0"
        job.mkdir(parents=True)
        (job / "resume.pt").write_bytes(blob)
        assert main(["run", str(proto), "--data", str(data), "--out", str(out), "--device", "cpu", "--folds", "0",
                     "--no-progress"]) == 2, kind
        line = _err_line(capsys)
        assert "resume.pt: resume:" in line and "delete it" in line, line
        assert "weights_only=False" not in line and "weights_only` set to `False" not in line
        assert not (job / "DONE").exists()
    assert not (tmp_path / "PWNED").exists()


def test_item11_bad_weights_file_message_is_one_line_without_the_unsafe_advice(tmp_path):
    from models import create_model
    for kind, blob in _bad_checkpoints(tmp_path).items():
        if kind == "wrong_keys":
            continue
        f = tmp_path / f"{kind}.pth"
        f.write_bytes(blob)
        with pytest.raises(BadInput) as ei:
            create_model("resnet50", num_classes=5, pretrained=str(f), input_size=32)
        msg = str(ei.value)
        assert "\n" not in msg and "weights_only=False" not in msg and "trusted" not in msg, msg
        assert msg.startswith(f"{f}: pretrained:"), msg
    assert not (tmp_path / "PWNED").exists()


def test_item11_n_boot_0_says_no_ci(tmp_path, fake_run):
    out = tmp_path / "r.html"
    assert main(["report", str(fake_run), "--n-boot", "0", "-o", str(out)]) == 0
    html = out.read_text()
    assert "CI , none)" not in html and ", none)" not in html
    assert "(no CI)" in html and "--n-boot 0" in html


def test_item11_decompression_bomb_warning_is_one_log_line(data):
    """In a real process (pytest would capture the raw warning itself): Pillow's limit lowered so that every 48x40
    frame is "large" but none is refused."""
    code = ("import sys; from PIL import Image; Image.MAX_IMAGE_PIXELS = 961; from bench.cli import main; "
            f"sys.argv[1:] = ['leakage', '--data', {str(data)!r}, '--no-probe', '--no-thumbs']; sys.exit(main())")
    res = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(ROOT)},
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if "decompression-bomb" in ln]
    assert len(lines) == 1 and lines[0].startswith("fibrobench data: ") and str(data) in lines[0], res.stderr
    assert "DecompressionBombWarning" not in res.stderr and "warnings.warn" not in res.stderr, res.stderr
    # other libraries' warnings (scikit-learn on 6 patients) are one line each too, not two raw lines
    assert all(ln.startswith("fibrobench ") for ln in res.stderr.splitlines()), res.stderr


# ---------------------------------------------------------------- item 13: killed synth


def _synth_proc(out: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "bench.cli", "synth", str(out), "--patients", "400", "--size",
                             "160x120", "--workers", "1", "--quiet"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


def _wait_for_tmp(out: Path, proc, timeout=60.0) -> list[Path]:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        found = [p for p in out.parent.glob(f".{out.name}.tmp-*") if any(p.rglob("*.png"))]
        if found:
            return found
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.2)
    raise AssertionError("synth wrote no temporary folder")


@pytest.mark.slow
def test_item13_killed_synth_leaves_its_temp_folder_and_the_next_synth_removes_it(tmp_path):
    out = tmp_path / "D"
    proc = _synth_proc(out)
    try:
        (tmp,) = _wait_for_tmp(out, proc)
    finally:
        proc.kill()
        proc.wait()
    assert tmp.exists() and not out.exists()                     # SIGKILL: nothing can clean up at once
    assert main(["synth", str(out), "--patients", "5", "--size", "32x32", "--quiet"]) == 0
    assert not tmp.exists() and (out / "manifest.csv").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["D"]


@pytest.mark.slow
def test_item13_sigterm_cleans_up_at_once(tmp_path):
    out = tmp_path / "D"
    proc = _synth_proc(out)
    try:
        _wait_for_tmp(out, proc)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 143
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert list(tmp_path.iterdir()) == []


def test_item13_temp_folders_of_live_processes_or_other_hosts_are_kept(tmp_path):
    import socket
    from protocols.synth import clean_stale_tmp
    out = tmp_path / "D"
    host = socket.gethostname()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    keep = [tmp_path / f".D.tmp-{host}-{os.getpid()}-aaaaaaaa", tmp_path / f".D.tmp-otherhost-{dead.pid}-bbbbbbbb",
            tmp_path / ".D.tmp-cccccccc", tmp_path / f".E.tmp-{host}-{dead.pid}-dddddddd"]
    gone = tmp_path / f".D.tmp-{host}-{dead.pid}-eeeeeeee"
    for p in [*keep, gone]:
        p.mkdir()
    assert clean_stale_tmp(out) == [gone]
    assert all(p.exists() for p in keep) and not gone.exists()


# ---------------------------------------------------------------- item 14: latency on a CPU


def test_item14_cpu_defaults_are_short_and_options_still_win(monkeypatch, capsys):
    from bench import latency as L
    seen = []

    def fake_run(names, cfg, device, **kw):
        seen.append(cfg)
        return {"schema": L.SCHEMA, "device": {"type": device.type, "name": "x"}, "models": {}}
    monkeypatch.setattr(L, "run_latency", fake_run)
    assert main(["latency", "--models", "resnet50", "--device", "cpu"]) == 0
    cfg = seen[-1]
    assert (cfg.batch_sizes, cfg.precisions, cfg.runs, cfg.warmup, cfg.train_batch) == ((1,), ("fp32",), 30, 3, None)
    # the command: --batch-sizes 1 on a CPU measures 33 calls of one model, nothing else
    assert cfg.runs + cfg.warmup <= 40 and not cfg.train_batch
    assert main(["latency", "--models", "resnet50", "--device", "cpu", "--batch-sizes", "1,16", "--precisions",
                 "fp32,bf16", "--runs", "100", "--train-batch", "16"]) == 0
    cfg = seen[-1]
    assert (cfg.batch_sizes, cfg.precisions, cfg.runs, cfg.train_batch) == ((1, 16), ("fp32", "bf16"), 100, 16)
    assert L.DEFAULTS["cuda"]["runs"] == 100 and L.DEFAULTS["cuda"]["train_batch"] == 64   # GPU defaults unchanged


def test_item14_long_measurements_report_progress():
    import torch
    from bench import latency as L
    msgs = []
    prog = L.Progress(msgs.append, "m fp32 batch 1", every_s=0.0)
    times = L.time_calls(lambda: time.sleep(0.001), runs=5, warmup=2, device=torch.device("cpu"), progress=prog)
    assert len(times) == 5
    assert [m.split(": ")[1].split(",")[0] for m in msgs] == ["warm-up 1/2", "timed run 1/5", "timed run 2/5",
                                                              "timed run 3/5", "timed run 4/5"]
    assert all(m.startswith("m fp32 batch 1: ") and "s left" in m for m in msgs)
    quiet = []
    L.time_calls(lambda: None, runs=5, warmup=2, device=torch.device("cpu"), progress=L.Progress(quiet.append, "q"))
    assert quiet == []                                   # under 10 s: silent


# ---------------------------------------------------------------- further bad input found while doing this


@pytest.mark.parametrize("argv,flag", [
    (["synth", "X", "--seed", "-1"], "--seed"), (["report", "R", "--seed", "-1"], "--seed"),
    (["run", "p.yaml", "--data", "D", "--workers", "0"], "--workers"), (["leakage", "--data", "D", "--workers", "-1"], "--workers"),
    (["gate", "R", "--baseline", "b.json", "--ci-scale", "nan"], "--ci-scale"),
    (["gate", "R", "--baseline", "b.json", "--latency-tol", "inf"], "--latency-tol"),
    (["gate", "R", "--baseline", "b.json", "--memory-tol", "-5"], "--memory-tol"),
    (["run", "p.yaml"], "--data"), (["nosuchcommand"], "nosuchcommand")])
def test_usage_errors_are_one_line_exit_2(argv, flag, capsys):
    with pytest.raises(SystemExit) as ei:
        main(argv)
    assert ei.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and " error: " in err[0] and flag in err[0] and "--help" in err[0], err


@pytest.mark.parametrize("tol", ["nan", "accuracy=inf", "macro_f1=-0.1"])
def test_gate_metric_tolerance_must_be_finite(tmp_path, fake_run, baseline, capsys, tol):
    b = tmp_path / "b.json"
    b.write_text(json.dumps(baseline))
    assert main(["gate", str(fake_run), "--baseline", str(b), "--metric-tol", tol]) == 2   # a NaN tolerance passed all
    assert "--metric-tol" in _err_line(capsys)


@pytest.mark.parametrize("body", ["a: " + "9" * 5000, "a: " + "[" * 50000 + "]" * 50000])
def test_yaml_that_yaml_cannot_hold_is_bad_input(tmp_path, data, capsys, body):
    f = tmp_path / "x.yaml"
    f.write_text(body)
    assert main(["audit-claims", str(f)]) == 2
    assert str(f) in _err_line(capsys)
    assert main(["run", str(f), "--data", str(data), "--out", str(tmp_path / "r")]) == 2
    assert str(f) in _err_line(capsys) and not (tmp_path / "r").exists()


def test_corrupt_run_json_in_out_is_bad_input(tmp_path, data, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "run.json").write_bytes(b"\xff\xfe{not json")
    assert main(["run", str(_protocol(tmp_path)), "--data", str(data), "--out", str(out), "--device", "cpu"]) == 2
    assert "run.json" in _err_line(capsys)


def test_library_warnings_become_one_log_line():
    code = ("import sys, warnings; from bench.cli import main; import bench.commands.models as m; "
            "m.main = lambda a: warnings.warn('first\\nsecond', UserWarning) or 0; "
            "sys.argv[1:] = ['models']; sys.exit(main())")
    res = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(ROOT)},
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stderr == "fibrobench warning: UserWarning: first second\n", res.stderr
