"""torch.load(weights_only=True) of a user's file, failing with one line that names the file (never torch's advice
to retry with weights_only=False, which would execute code from the file)."""
from __future__ import annotations

import re
from pathlib import Path

from models.errors import BadInput

_TORCH_BOILERPLATE = re.compile(   # advice and apologies around the cause; the advice must never reach the user
    r"weights only load failed|weights_only\W*(set\W*)?to\W*false|weights_only=false|retry with|re-running|"
    r"pytorch 2\.6|arbitrary code execution|trusted|check the documentation|please file an issue|"
    r"no automatic unsafe|internal miniz error|high likelihood|can happen if", re.IGNORECASE)


def reason(exc: BaseException) -> str:
    """The specific cause in torch's message (e.g. 'Unsupported global: posix.system'), without its advice."""
    if isinstance(exc, EOFError):
        return "the file is empty or truncated"
    sentences = [s.strip() for line in str(exc).splitlines() for s in re.split(r"(?<=\.)\s+", line) if s.strip()]
    kept = [s for s in sentences if not _TORCH_BOILERPLATE.search(s)]
    return (kept[0].rstrip(".") if kept else type(exc).__name__)[:300]


def load_weights_only(path, field: str, what: str = "checkpoint", hint: str = ""):
    """The object stored in `path` if torch can load it with weights_only=True; BadInput(path, field) otherwise
    (`hint`, e.g. what to do about it, ends the message)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise BadInput(path, field, f"{what} not found" if not path.exists() else f"{what} is not a file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - whatever torch raises on a file it cannot read safely
        raise BadInput(path, field, f"not a readable weights-only {what} ({reason(exc)}); fibrobench loads only "
                                    "tensors, never pickled code" + (f"; {hint}" if hint else "")) from None
