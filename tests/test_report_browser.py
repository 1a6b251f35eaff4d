"""The report in a real browser: headless Chromium loads it without network, and the DOM holds sections and numbers."""
import shutil
import subprocess

import pytest

from bench.scripts.fake_run import make_fake_run

from reports.render import render_report

pytestmark = pytest.mark.browser


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _run_chromium(tmp_path, *args):
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}"]
    return subprocess.run([_chromium(), *flags, *args], capture_output=True, text=True, timeout=120)


def test_report_renders_in_headless_chromium(tmp_path):
    rd = make_fake_run(tmp_path / "run", models=("resnet50", "resnet50_cbam"), n_patients=30, smoke=True)
    html, summary = render_report(rd, n_boot=200)
    page = tmp_path / "report.html"
    page.write_text(html, encoding="utf-8")
    dom = _run_chromium(tmp_path, "--dump-dom", page.as_uri()).stdout
    assert "<body" in dom, "Chromium returned no DOM"
    for sec in ("verdict", "provenance", "data", "leakage", "models", "per-class", "confusion", "tests",
                "calibration", "efficiency", "claims", "tuning", "banner-smoke"):
        assert f'id="{sec}"' in dom, sec
    acc = summary["models"]["resnet50_cbam"]["ensemble"]["accuracy"]
    assert f"{100 * acc['value']:.2f} %" in dom
    assert f"[{100 * acc['ci'][0]:.2f}, {100 * acc['ci'][1]:.2f}]" in dom
    p = summary["comparisons"][0]["mcnemar"]["p"]
    assert (f"{p:.4f}" if p >= 1e-4 else "&lt; 0.0001") in dom
    assert dom.count("<svg") >= 3  # inline figures survived parsing
    shot = tmp_path / "report.png"
    _run_chromium(tmp_path, "--window-size=1280,4000", f"--screenshot={shot}", page.as_uri())
    assert shot.exists() and shot.stat().st_size > 10_000
    print(f"screenshot: {shot}")
