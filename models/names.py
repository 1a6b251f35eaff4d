"""The grammar of model names (torch-free): built-in, `timm/<name>`, `tv/<name>` and `package.module:factory`.

Every accepted name is also a safe relative path (the run directory stores `jobs/<model>/fold<k>/`): no empty
component, no `..`, no absolute path, ASCII letters, digits, `_`, `.` (not leading), `/` only after the
`timm`/`tv` prefix and `:` only between a module path and a factory name.
"""
from __future__ import annotations

import re
import sys

BUILTIN = "builtin"
TIMM = "timm"
TV = "tv"
FACTORY = "factory"

_BUILTIN_RE = re.compile(r"[a-z0-9_]+", re.ASCII)
_TIMM_RE = re.compile(r"timm/([A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)?)", re.ASCII)  # architecture[.pretrained_tag]
_TV_RE = re.compile(r"tv/([a-z0-9_]+)", re.ASCII)
_FACTORY_RE = re.compile(r"([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*):([A-Za-z_]\w*)", re.ASCII)

SYNTAX = ("a built-in name, timm/<timm model name>, tv/<torchvision model name> "
          "or package.module:factory")


def parse_name(name) -> tuple[str, str]:
    """(kind, identifier) of a model name; ValueError (with the rule) when it follows no form.

    kind: 'builtin' (identifier = the name), 'timm' (timm model name, optionally with a pretrained tag),
    'tv' (torchvision builder name) or 'factory' (identifier = 'package.module:factory').
    Only the syntax is checked here; whether such a model exists is the registry's question.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"expected a model name ({SYNTAX}), got {name!r}")
    for kind, rx in ((TIMM, _TIMM_RE), (TV, _TV_RE)):
        if name.startswith(kind + "/"):
            m = rx.fullmatch(name)
            if m is None:
                raise ValueError(f"{name!r}: after '{kind}/' expected a {kind} model name "
                                 f"(letters, digits, '_'{', one .tag' if kind == TIMM else ''})")
            return kind, m.group(1)
    if ":" in name:
        m = _FACTORY_RE.fullmatch(name)
        if m is None:
            raise ValueError(f"{name!r}: expected package.module:factory (Python identifiers)")
        top = m.group(1).split(".")[0]
        if top in sys.stdlib_module_names or top in ("builtins", "torch", "torchvision", "timm"):
            raise ValueError(f"{name!r}: {top} is not a user model package; name your own module "
                             f"(or use timm/<name>, tv/<name>)")
        return FACTORY, name
    if _BUILTIN_RE.fullmatch(name):
        return BUILTIN, name
    raise ValueError(f"{name!r} is not a model name: expected {SYNTAX}")
