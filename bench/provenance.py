"""Provenance stamped on every result: git sha/dirty, command line, package versions, device, seeds."""
from __future__ import annotations

import datetime as _dt
import importlib.metadata as md
import os
import platform
import subprocess
import sys
from pathlib import Path

PACKAGES = ["fibrobench", "torch", "torchvision", "timm", "numpy", "scipy", "scikit-learn",
            "statsmodels", "pandas", "jinja2", "pyyaml", "matplotlib", "pillow", "submitit", "pulp",
            "huggingface-hub", "safetensors",  # how timm weights are found and read
            "grad-cam"]                        # the shortcut audit's Grad-CAM

_REPO = Path(__file__).resolve().parent.parent


def git_state(repo: Path = _REPO) -> dict:
    """git sha and dirty flag of the fibrobench checkout (None when not a git checkout)."""
    def _git(*a):
        return subprocess.run(["git", "-C", str(repo), *a], capture_output=True, text=True, timeout=10)

    try:
        sha = _git("rev-parse", "HEAD")
        if sha.returncode != 0:
            return {"sha": None, "dirty": None}
        dirty = _git("status", "--porcelain", "--untracked-files=no")
        return {"sha": sha.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"sha": None, "dirty": None}


def package_versions(names=PACKAGES) -> dict:
    out = {}
    for n in names:
        try:
            out[n] = md.version(n)
        except md.PackageNotFoundError:
            out[n] = None
    return out


def device_info(device: str | None = None) -> dict:
    """torch / CUDA / cuDNN versions and the accelerator in use (imports torch lazily)."""
    info = {"python": sys.version.split()[0], "platform": platform.platform(),
            "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count()}
    try:
        import torch
    except ImportError:
        return info
    info.update({"torch": torch.__version__, "cuda": torch.version.cuda,
                 "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
                 "cuda_available": torch.cuda.is_available(), "device": device,
                 "torch_threads": torch.get_num_threads()})
    if torch.cuda.is_available():
        idx = torch.cuda.current_device()
        props = torch.cuda.get_device_properties(idx)
        info.update({"gpu_name": props.name, "gpu_memory_bytes": props.total_memory,
                     "gpu_capability": f"{props.major}.{props.minor}", "driver": _nvidia_driver()})
    return info


def _nvidia_driver() -> str | None:
    try:
        r = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                           capture_output=True, text=True, timeout=10)
        return r.stdout.strip().splitlines()[0] if r.returncode == 0 and r.stdout.strip() else None
    except (OSError, subprocess.SubprocessError, IndexError):
        return None


def collect(command: list[str] | None = None, device: str | None = None, seeds: dict | None = None) -> dict:
    """Everything a result needs to say where it came from."""
    return {
        "git": git_state(),
        "command": ["fibrobench", *(command if command is not None else sys.argv[1:])],
        "packages": package_versions(),
        "device": device_info(device),
        "seeds": seeds or {},
        "hostname": platform.node(),
        "time_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
