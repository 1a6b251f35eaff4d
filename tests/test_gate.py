"""The regression gate: CI-aware metric rule, latency/memory rules, identity refusal, JUnit XML, CLI exit codes."""
from __future__ import annotations

import copy
import json
import xml.etree.ElementTree as ET

import pytest

from bench import gate as G
from bench.cli import main as cli
from protocols.errors import BadInput


def _summary(acc=0.80, acc_ci=(0.74, 0.86), f1=0.75, f1_ci=(0.68, 0.82), ece=0.05, ece_ci=(0.03, 0.08)):
    def blk(v, ci):
        return {"value": v, "ci": list(ci)}
    return {"models": {m: {"ensemble": {"accuracy": blk(acc, acc_ci), "macro_f1": blk(f1, f1_ci),
                                        "ece": blk(ece, ece_ci), "n_test": 120}}
                       for m in ("resnet50", "resnet50_cbam")}}


def _latency(p50=20.0, ips=300.0, mem=400e6, train_mem=2e9, name="test cpu", size=224):
    blk = {"batch_size": 1, "p50_ms": p50, "p90_ms": p50 * 1.1, "p99_ms": p50 * 1.2, "images_per_s": ips,
           "peak_memory_bytes": mem, "batch": {}}
    return {"schema": "fibrobench.latency/1", "device": {"type": "cpu", "name": name},
            "settings": {"input_size": size},
            "models": {m: {"params": 1, "flops": 1, "input_size": size, "fp32": dict(blk),
                           "train": {"p50_ms": 100.0, "images_per_s": 10.0, "peak_memory_bytes": train_mem}}
                       for m in ("resnet50", "resnet50_cbam")}}


def _run(tmp_path, name="run", fingerprint="a" * 64, proto="b" * 64, latency=None):
    d = tmp_path / name
    d.mkdir()
    (d / "run.json").write_text(json.dumps({"schema": "fibrobench.run/1", "protocol_sha256": proto,
                                            "data": {"fingerprint": fingerprint}, "splits_sha256": "c" * 64,
                                            "status": "complete"}))
    if latency is not None:
        (d / "latency.json").write_text(json.dumps(latency))
    return d


@pytest.fixture
def summaries(monkeypatch):
    """Map run-dir name -> crafted summarize_run output (reports.summary is not needed)."""
    table = {}
    monkeypatch.setattr(G, "_summarize", lambda run_dir: table[run_dir.name])
    return table


# ---------------------------------------------------------------- metric rule

def test_metric_rule_pass_warn_fail_against_ci_arm():
    base = {"value": 0.80, "ci": [0.74, 0.86]}          # lower arm 0.06
    chk = lambda v: G.metric_check("m", "accuracy", base, {"value": v}, abs_tol=0.01, ci_scale=1.0)  # noqa: E731
    assert chk(0.805)["status"] == "pass"
    assert chk(0.795)["status"] == "pass"               # drop 0.005 <= abs tol
    assert chk(0.77)["status"] == "warn"                # drop 0.03: beyond abs tol, inside the CI arm
    assert chk(0.739)["status"] == "fail"               # drop 0.061 > 0.06
    assert chk(0.739)["limit"] == pytest.approx(0.74)


def test_metric_rule_abs_tol_floor_and_ci_scale():
    base = {"value": 0.90, "ci": [0.895, 0.905]}        # very narrow CI: the abs tol is the floor
    assert G.metric_check("m", "accuracy", base, {"value": 0.885}, 0.02, 1.0)["status"] == "pass"
    assert G.metric_check("m", "accuracy", base, {"value": 0.875}, 0.02, 1.0)["status"] == "fail"
    wide = {"value": 0.90, "ci": [0.80, 0.95]}
    assert G.metric_check("m", "accuracy", wide, {"value": 0.85}, 0.01, 1.0)["status"] == "warn"
    assert G.metric_check("m", "accuracy", wide, {"value": 0.85}, 0.01, 0.25)["status"] == "fail"


def test_lower_is_better_metric_uses_upper_arm():
    base = {"value": 0.05, "ci": [0.03, 0.08]}          # upper arm 0.03
    assert G.metric_check("m", "ece", base, {"value": 0.07}, 0.01, 1.0)["status"] == "warn"
    assert G.metric_check("m", "ece", base, {"value": 0.085}, 0.01, 1.0)["status"] == "fail"
    assert G.metric_check("m", "ece", base, {"value": 0.01}, 0.01, 1.0)["status"] == "pass"


def test_missing_or_nan_metric_fails():
    base = {"value": 0.8, "ci": [0.7, 0.9]}
    assert G.metric_check("m", "accuracy", base, None, 0.01, 1.0)["status"] == "fail"
    assert G.metric_check("m", "accuracy", base, {"value": float("nan")}, 0.01, 1.0)["status"] == "fail"


def test_parse_metric_tol():
    assert G.parse_metric_tol("0.02") == {"default": 0.02}
    t = G.parse_metric_tol("accuracy=0.005,macro_f1=0.03")
    assert t["accuracy"] == 0.005 and t["macro_f1"] == 0.03 and t["default"] == G.DEFAULTS["metric_tol"]
    with pytest.raises(BadInput):
        G.parse_metric_tol("accuracy=abc")


# ---------------------------------------------------------------- snapshot comparison

def _snap(summary, latency=None, fp="a" * 64, proto="b" * 64):
    lat = None
    if latency is not None:
        lat = {"device": latency["device"], "input_size": latency["settings"]["input_size"], "models": {
            m: {"fp32": {k: v["fp32"][k] for k in ("p50_ms", "images_per_s", "peak_memory_bytes")},
                "train": {k: v["train"][k] for k in ("p50_ms", "peak_memory_bytes")}}
            for m, v in latency["models"].items()}}
    return {"schema": G.BASELINE_SCHEMA, "run_dir": "r", "protocol_sha256": proto, "data_fingerprint": fp,
            "metrics": G.metrics_from_summary(summary), "latency": lat}


def test_compare_identity_refused_unless_allowed():
    base = _snap(_summary())
    with pytest.raises(BadInput, match="data_fingerprint"):
        G.compare(base, _snap(_summary(), fp="d" * 64))
    with pytest.raises(BadInput, match="protocol_sha256"):
        G.compare(base, _snap(_summary(), proto="e" * 64))
    checks = G.compare(base, _snap(_summary(), fp="d" * 64), allow_different=True)
    ident = [c for c in checks if c["kind"] == "identity"]
    assert [c["status"] for c in ident] == ["warn", "pass"]


def test_compare_gates_known_metrics_only_and_flags_missing_model():
    base = _snap(_summary())
    cur = _snap(_summary())
    del cur["metrics"]["resnet50_cbam"]
    checks = G.compare(base, cur)
    names = {c["name"]: c["status"] for c in checks}
    assert names["metric/resnet50_cbam"] == "fail"
    assert names["metric/resnet50/accuracy"] == "pass"
    assert not any("n_test" in n for n in names)        # not a {value, ci} metric
    only = G.compare(base, _snap(_summary()), metrics=["macro_f1"])
    assert {c["name"] for c in only if c["kind"] == "metric"} == {"metric/resnet50/macro_f1",
                                                                   "metric/resnet50_cbam/macro_f1"}


def test_latency_and_memory_rules():
    base = _snap(_summary(), _latency())
    ok = G.compare(base, _snap(_summary(), _latency(p50=23.0, ips=250.0, mem=430e6)))   # +15 %, -16.7 %, +7.5 %
    assert all(c["status"] == "pass" for c in ok)
    slow = G.compare(base, _snap(_summary(), _latency(p50=25.0)))                        # +25 % > 20 %
    failed = {c["name"] for c in slow if c["status"] == "fail"}
    assert failed == {"latency/resnet50/fp32/p50_ms", "latency/resnet50_cbam/fp32/p50_ms"}
    fat = G.compare(base, _snap(_summary(), _latency(train_mem=2.3e9)), memory_tol=10)     # +15 %
    assert {c["name"] for c in fat if c["status"] == "fail"} == {"memory/resnet50/train/peak_memory_bytes",
                                                                  "memory/resnet50_cbam/train/peak_memory_bytes"}
    slow_tp = G.compare(base, _snap(_summary(), _latency(ips=200.0)))
    assert sum(c["kind"] == "throughput" and c["status"] == "fail" for c in slow_tp) == 2


def test_latency_skipped_on_other_device_or_missing():
    base = _snap(_summary(), _latency())
    other = G.compare(base, _snap(_summary(), _latency(p50=99.0, name="other cpu")))
    lat = [c for c in other if c["kind"] == "latency"]
    assert len(lat) == 1 and lat[0]["status"] == "skip" and "device" in lat[0]["message"]
    none = G.compare(base, _snap(_summary()))
    assert [c["status"] for c in none if c["kind"] == "latency"] == ["skip"]


def test_junit_counts_and_structure():
    base = _snap(_summary(), _latency())
    checks = G.compare(base, _snap(_summary(acc=0.70, acc_ci=(0.6, 0.8)), _latency(p50=30.0)))
    res = G.result(checks, {}, "b.json", "r")
    root = ET.fromstring(G.junit_xml(res).split("\n", 1)[1])
    suite = root.find("testsuite")
    cases = suite.findall("testcase")
    assert len(cases) == len(checks) == int(suite.get("tests"))
    n_fail = sum(c["status"] == "fail" for c in checks)
    assert n_fail == 4 and int(suite.get("failures")) == n_fail
    assert sum(tc.find("failure") is not None for tc in cases) == n_fail
    assert res["verdict"] == "fail"


# ---------------------------------------------------------------- CLI

def test_cli_write_baseline_then_gate(tmp_path, summaries):
    summaries["base"] = _summary()
    run = _run(tmp_path, "base", latency=_latency())
    bl = tmp_path / "baseline.json"
    assert cli(["gate", str(run), "--baseline", str(bl), "--write-baseline"]) == 0
    saved = json.loads(bl.read_text())
    assert saved["schema"] == G.BASELINE_SCHEMA and saved["data_fingerprint"] == "a" * 64
    assert saved["metrics"]["resnet50"]["accuracy"] == {"value": 0.80, "ci": [0.74, 0.86]}
    assert saved["latency"]["models"]["resnet50"]["fp32"]["p50_ms"] == 20.0
    assert "git" in saved["provenance"]

    # the same run passes; JSON and JUnit are written
    out, xml = tmp_path / "gate.json", tmp_path / "gate.xml"
    assert cli(["gate", str(run), "--baseline", str(bl), "--json", str(out), "--junit", str(xml)]) == 0
    res = json.loads(out.read_text())
    assert res["schema"] == G.RESULT_SCHEMA and res["verdict"] == "pass" and res["counts"]["fail"] == 0
    assert int(ET.parse(xml).getroot().find("testsuite").get("failures")) == 0

    # a regressed run fails with exit 1 and the failure lands in the JUnit file
    summaries["worse"] = _summary(f1=0.60)
    worse = _run(tmp_path, "worse", latency=_latency())
    assert cli(["gate", str(worse), "--baseline", str(bl), "--junit", str(xml)]) == 1
    failures = [tc for tc in ET.parse(xml).getroot().iter("testcase") if tc.find("failure") is not None]
    assert sorted(tc.get("classname") + "/" + tc.get("name") for tc in failures) == [
        "gate.metric.resnet50/macro_f1", "gate.metric.resnet50_cbam/macro_f1"]


def test_cli_exit_2_on_different_data_and_bad_baseline(tmp_path, summaries, capsys):
    summaries["base"] = summaries["other"] = _summary()
    bl = tmp_path / "baseline.json"
    assert cli(["gate", str(_run(tmp_path, "base")), "--baseline", str(bl), "--write-baseline"]) == 0
    other = _run(tmp_path, "other", fingerprint="9" * 64)
    assert cli(["gate", str(other), "--baseline", str(bl)]) == 2
    assert "data_fingerprint" in capsys.readouterr().err
    assert cli(["gate", str(other), "--baseline", str(bl), "--allow-different"]) == 0
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    assert cli(["gate", str(other), "--baseline", str(broken)]) == 2
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"schema": "something/1", "metrics": {}}))
    assert cli(["gate", str(other), "--baseline", str(wrong)]) == 2
    assert cli(["gate", str(tmp_path / "nope"), "--baseline", str(bl)]) == 2
    with pytest.raises(SystemExit) as usage:       # a bad option value is an argparse usage error: exit 2
        cli(["gate", str(other), "--baseline", str(bl), "--latency-tol", "-5"])
    assert usage.value.code == 2


def test_cli_latency_regression_via_latency_option(tmp_path, summaries):
    summaries["base"] = summaries["new"] = _summary()
    bl = tmp_path / "baseline.json"
    assert cli(["gate", str(_run(tmp_path, "base", latency=_latency())), "--baseline", str(bl),
                "--write-baseline"]) == 0
    new = _run(tmp_path, "new")
    lat = tmp_path / "lat.json"
    lat.write_text(json.dumps(_latency(mem=500e6)))                                   # +25 % memory
    assert cli(["gate", str(new), "--baseline", str(bl), "--latency", str(lat)]) == 1
    assert cli(["gate", str(new), "--baseline", str(bl), "--latency", str(lat), "--memory-tol", "30"]) == 0
    bad = copy.deepcopy(_latency())
    bad["schema"] = "x"
    lat.write_text(json.dumps(bad))
    assert cli(["gate", str(new), "--baseline", str(bl), "--latency", str(lat)]) == 2


def test_gate_on_fake_runs_with_the_real_summary(tmp_path, monkeypatch):
    """End to end with reports.summary.summarize_run on the shared fake RUN_DIR helper."""
    from bench.scripts.fake_run import make_fake_run
    from reports import summary
    monkeypatch.setattr(G, "_summarize", lambda d: summary.summarize_run(d, n_boot=300, seed=0))
    base = make_fake_run(tmp_path / "base", models=("resnet50", "resnet50_cbam"))
    same = make_fake_run(tmp_path / "same", models=("resnet50", "resnet50_cbam"))
    worse = make_fake_run(tmp_path / "worse", models=("resnet50", "resnet50_cbam"), quality={"resnet50_cbam": 0.3})
    bl = tmp_path / "bl.json"
    assert cli(["gate", str(base), "--baseline", str(bl), "--write-baseline"]) == 0
    assert cli(["gate", str(same), "--baseline", str(bl)]) == 0
    out = tmp_path / "g.json"
    assert cli(["gate", str(worse), "--baseline", str(bl), "--json", str(out)]) == 1
    failed = {c["name"] for c in json.loads(out.read_text())["checks"] if c["status"] == "fail"}
    assert "metric/resnet50_cbam/accuracy" in failed and not any("/resnet50/" in n for n in failed)


# ---------------------------------------------------------------- pytest-benchmark gate (bench/scripts/bench_gate.py)

def _bench_json(path, medians, mins=None, brand="Test CPU 9000", count=4):
    mins = mins or {k: 0.9 * v for k, v in medians.items()}
    path.write_text(json.dumps({"machine_info": {"machine": "x86_64", "cpu": {"brand_raw": brand, "count": count}},
                                "commit_info": {"id": "abc"}, "benchmarks": [
        {"fullname": k, "name": k, "stats": {"median": v, "min": mins[k], "max": 1.2 * v, "mean": v, "iqr": 0.1 * v,
                                             "q1": 0.95 * v, "q3": 1.05 * v, "rounds": 5, "stddev": 0.05 * v}}
        for k, v in medians.items()]}))
    return path


def test_bench_gate_rule_needs_median_and_min_both_slower_by_the_threshold():
    from bench.scripts.bench_gate import compare
    base = {"a": {"median": 1.0, "min": 0.9}}
    assert compare(base, {"a": {"median": 1.6, "min": 1.4}}, 0.5)[0]["status"] == "regression"
    assert compare(base, {"a": {"median": 1.6, "min": 1.3}}, 0.5)[0]["status"] == "ok"    # min x1.44: load
    assert compare(base, {"a": {"median": 1.6, "min": 0.95}}, 0.5)[0]["status"] == "ok"   # noisy, not slower
    assert compare(base, {"a": {"median": 1.4, "min": 1.3}}, 0.5)[0]["status"] == "ok"    # within +50 %
    assert compare(base, {"a": {"median": 0.5, "min": 0.4}}, 0.5)[0]["status"] == "faster"
    rows = {r["name"]: r["status"] for r in compare(base, {"b": {"median": 1.0, "min": 1.0}}, 0.5)}
    assert rows == {"a": "missing", "b": "new"}


def test_bench_gate_records_then_gates(tmp_path, monkeypatch, capsys):
    from bench.scripts import bench_gate as BG
    monkeypatch.setattr(BG, "_gpu_name", lambda: None)
    bl = tmp_path / "baselines"
    first = _bench_json(tmp_path / "r1.json", {"t::a": 0.010, "t::b": 0.100})
    assert BG.main([str(first), "--baselines", str(bl)]) == 0
    assert "no baseline for this machine" in capsys.readouterr().out
    stored = json.loads((bl / "x86-64-test-cpu-9000-4c.json").read_text())
    assert stored["schema"] == BG.SCHEMA and stored["benchmarks"]["t::a"]["median"] == 0.010
    assert BG.main([str(first), "--baselines", str(bl)]) == 0
    slow = _bench_json(tmp_path / "r2.json", {"t::a": 0.030, "t::b": 0.100})
    out = tmp_path / "cmp.json"
    assert BG.main([str(slow), "--baselines", str(bl), "--json", str(out)]) == 1
    assert json.loads(out.read_text())["regressions"] == 1
    assert BG.main([str(slow), "--baselines", str(bl), "--threshold", "3"]) == 0
    other = _bench_json(tmp_path / "r3.json", {"t::a": 0.030}, brand="Other CPU")
    assert BG.main([str(other), "--baselines", str(bl)]) == 0        # another machine: records its own
    assert (bl / "x86-64-other-cpu-4c.json").exists()
    assert BG.main([str(slow), "--baselines", str(bl), "--update"]) == 0
    assert BG.main([str(slow), "--baselines", str(bl)]) == 0
    (tmp_path / "bad.json").write_text("[]")
    assert BG.main([str(tmp_path / "bad.json"), "--baselines", str(bl)]) == 2
