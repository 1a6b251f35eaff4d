"""Protocols as data: YAML (with `include:`) validated onto frozen dataclasses, hashed, and grid-expanded."""
from __future__ import annotations

import copy
import dataclasses
import itertools
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from protocols.atomic import sha256_of
from protocols.errors import BadInput

# canonical spellings; lookup is case-insensitive
OPTIMIZERS = ("Adam", "AdamW", "SGD")
SCHEDULERS = ("CosineAnnealingLR", "none")
# with integer labels these two are the same loss (softmax + negative log-likelihood); see protocols.trainer.loss_fn
LOSSES = ("CrossEntropyLoss", "SparseCategoricalCrossentropy")
ACTIVATIONS = ("ReLU", "GELU")
KEEPS = ("last", "best_val_loss", "best_val_acc")
LEVELS = ("image", "patient", "cluster")
GATES = ("warn", "fail", "off")
ENSEMBLES = ("logit_mean",)
AMPS = ("auto", "bf16", "off")
# torch.compile modes (protocols.trainer.compile_model); "none" = eager. reduce-overhead adds CUDA graphs.
COMPILES = ("none", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass(frozen=True)
class DataCfg:
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


@dataclass(frozen=True)
class SplitCfg:
    level: str
    test_fraction: float
    n_folds: int
    seed: int


@dataclass(frozen=True)
class AugmentCfg:
    flip_p: float


@dataclass(frozen=True)
class TrainCfg:
    optimizer: str
    lr: float
    weight_decay: float
    scheduler: str
    batch_size: int
    epochs: int
    loss: str
    activation: str
    augment: AugmentCfg
    keep: str
    amp: str               # auto = bf16 autocast on CUDA, off on CPU
    channels_last: Any     # "auto" (on for CUDA) | True | False
    deterministic: bool
    seed: int              # fold k trains with seed + k, the same for every model
    eval_batch_size: int
    compile: str = "none"  # torch.compile mode for training and evaluation (COMPILES); "none" = eager


@dataclass(frozen=True)
class LeakageCfg:
    gate: str


@dataclass(frozen=True)
class TaskCfg:
    """The label space: class names in order; ordinal or not; dataset label -> class; cut-offs; binary positive."""
    classes: tuple[str, ...]
    ordinal: bool = False
    map: dict | None = None        # dataset label (folder name / CSV label, case-insensitive) -> class name
    cutoffs: dict | None = None    # ordinal only: cut-off name -> first positive class ("class >= it" is positive)
    positive: str | None = None    # two classes only: the positive class

    @property
    def dataset_labels(self) -> tuple[str, ...]:
        """The labels a dataset may use: the map's keys (in file order) or, without a map, the class names."""
        return tuple(self.map) if self.map else self.classes

    def class_of(self, dataset_label: str) -> str:
        return self.map[dataset_label] if self.map else dataset_label

    def to_dict(self) -> dict:
        return {"classes": list(self.classes), "ordinal": self.ordinal,
                "map": dict(self.map) if self.map else None,
                "cutoffs": dict(self.cutoffs) if self.cutoffs else None, "positive": self.positive}


@dataclass(frozen=True)
class Protocol:
    name: str
    description: str
    smoke: bool
    data: DataCfg
    split: SplitCfg
    train: TrainCfg
    models: tuple[str, ...]
    pretrained: str | None
    allow_random_init: bool
    ensemble: str
    leakage: LeakageCfg
    task: TaskCfg | None = None    # None: the dataset's own labels, sorted (resolved and recorded by `run`)
    grid: dict | None = None       # {"train.lr": [..], ...}; None after expansion
    variant: dict | None = None    # {"id": str, "overrides": {...}} for grid-expanded protocols
    source: str | None = None      # file it was loaded from (not hashed)

    def to_dict(self) -> dict:
        """The resolved protocol as plain JSON-able data (what run.json records and what is hashed)."""
        d = dataclasses.asdict(self)
        d.pop("source")
        d["models"] = list(self.models)
        d["data"]["mean"] = list(self.data.mean)
        d["data"]["std"] = list(self.data.std)
        if self.task is None:   # hashed only when set: run dirs made before the task section keep their hash
            del d["task"]
        else:
            d["task"] = self.task.to_dict()
        if d["train"]["compile"] == "none":   # hashed only when set: run dirs made before the field keep their hash
            del d["train"]["compile"]
        return d


def protocol_sha256(p: Protocol) -> str:
    """sha256 of the canonical JSON of the resolved protocol."""
    return sha256_of(p.to_dict())


# ---------------------------------------------------------------- loading + include


# sections that an including file replaces as a whole (a task is one label space, never a blend of two)
ATOMIC_SECTIONS = ("task",)


def deep_merge(base: dict, over: dict, atomic: tuple = ()) -> dict:
    """`over` wins; mappings merge recursively (except top-level keys in `atomic`), everything else is replaced."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k not in atomic:
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def load_raw(path: str | Path, _stack: tuple = ()) -> dict:
    """Read one YAML file and resolve its `include:` chain (relative paths, cycles refused)."""
    path = Path(path).resolve()
    if path in _stack:
        chain = " -> ".join(p.name for p in (*_stack, path))
        raise BadInput(path, "include", f"include cycle: {chain}")
    if not path.is_file():
        where = _stack[-1] if _stack else path
        raise BadInput(where, "include" if _stack else None, f"protocol file not found: {path}")
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise BadInput(path, None, f"not valid YAML: {str(exc).splitlines()[0]}") from None
    except UnicodeDecodeError as exc:
        raise BadInput(path, None, f"not a UTF-8 text file ({exc.reason} at byte {exc.start})") from None
    except (ValueError, RecursionError) as exc:   # an integer of > 4,300 digits, nesting deeper than the stack
        raise BadInput(path, None, f"not usable YAML ({type(exc).__name__}: "
                                   f"{str(exc).splitlines()[0][:200] if str(exc) else ''})") from None
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise BadInput(path, None, f"expected a mapping at the top level, got {type(doc).__name__}")
    inc = doc.pop("include", None)
    if inc is None:
        return doc
    incs = [inc] if isinstance(inc, str) else inc
    if not isinstance(incs, list) or not all(isinstance(i, str) for i in incs):
        raise BadInput(path, "include", f"expected a relative path or list of paths, got {inc!r}")
    base: dict = {}
    for i in incs:
        base = deep_merge(base, load_raw(path.parent / i, (*_stack, path)), ATOMIC_SECTIONS)
    return deep_merge(base, doc, ATOMIC_SECTIONS)


def load_protocol(path: str | Path) -> Protocol:
    """Load, include-resolve and validate a protocol YAML file."""
    raw = load_raw(path)
    return from_dict(raw, source=str(Path(path)))


# ---------------------------------------------------------------- validation


_PATH_NAME = re.compile(r"[A-Za-z0-9_+=@-][A-Za-z0-9._+=@-]{0,199}")


class _V:
    """Validator bound to one file: every error names the file and the dotted key path."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, key: str, msg: str):
        raise BadInput(self.source, key, msg)

    def section(self, d: Any, key: str, allowed: dict) -> dict:
        if d is None:
            d = {}
        if not isinstance(d, dict):
            self.fail(key, f"expected a mapping, got {d!r}")
        for k in d:
            if k not in allowed:
                where = f"{key}.{k}" if key else str(k)
                self.fail(where, f"unknown key (allowed: {', '.join(sorted(allowed))})")
        out = {}
        for k, (check, default) in allowed.items():
            where = f"{key}.{k}" if key else k
            if k in d:
                out[k] = check(d[k], where)
            elif default is _REQUIRED:
                self.fail(where, "missing required key")
            else:
                out[k] = default
        return out

    # scalar checks -------------------------------------------------------
    def pos_number(self, v, k):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            self.fail(k, f"expected a positive number, got {v!r}")
        return float(v)

    def nonneg_number(self, v, k):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            self.fail(k, f"expected a number >= 0, got {v!r}")
        return float(v)

    def probability(self, v, k):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
            self.fail(k, f"expected a number in [0, 1], got {v!r}")
        return float(v)

    def fraction(self, v, k):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < 1:
            self.fail(k, f"expected a number strictly between 0 and 1, got {v!r}")
        return float(v)

    def pos_int(self, v, k):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            self.fail(k, f"expected a positive integer, got {v!r}")
        return v

    def nonneg_int(self, v, k):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            self.fail(k, f"expected an integer >= 0, got {v!r}")
        return v

    def boolean(self, v, k):
        if not isinstance(v, bool):
            self.fail(k, f"expected true or false, got {v!r}")
        return v

    def string(self, v, k):
        if not isinstance(v, str):
            self.fail(k, f"expected a string, got {v!r}")
        return v

    def path_name(self, v, k):
        """A name that becomes part of a file name (the default run directory): one safe path component."""
        v = self.string(v, k)
        if not _PATH_NAME.fullmatch(v):
            self.fail(k, f"{v!r} cannot name a run directory: use letters, digits and . _ + = @ - (no '/', "
                         "not starting with '.', at most 200 characters)")
        return v

    def choice(self, options):
        def check(v, k):
            if isinstance(v, str):
                for o in options:
                    if o.lower() == v.lower():
                        return o
            self.fail(k, f"expected one of {', '.join(options)}, got {v!r}")
        return check

    def triple(self, positive: bool):
        def check(v, k):
            if not isinstance(v, (list, tuple)) or len(v) != 3:
                self.fail(k, f"expected a list of 3 numbers, got {v!r}")
            num = self.pos_number if positive else self.nonneg_number
            return tuple(num(x, f"{k}[{i}]") for i, x in enumerate(v))
        return check

    def models(self, v, k):
        if isinstance(v, str):
            v = [v]
        if not isinstance(v, (list, tuple)) or not v:
            self.fail(k, f"expected a non-empty list of model names, got {v!r}")
        from models.names import parse_name
        for i, m in enumerate(v):
            try:
                parse_name(m)  # syntax only (also keeps jobs/<model>/ inside the run directory)
            except ValueError as exc:
                self.fail(f"{k}[{i}]", str(exc))
        if len(set(v)) != len(v):
            self.fail(k, f"duplicate model names in {list(v)}")
        return tuple(v)

    def pretrained(self, v, k):
        if v is None or v is False or (isinstance(v, str) and v.lower() in ("none", "null", "")):
            return None
        if v is True:  # timm's spelling: pretrained=True is the model's published ImageNet weights
            return "imagenet"
        if isinstance(v, str):
            return "imagenet" if v.lower() == "imagenet" else v
        self.fail(k, f"expected 'imagenet' (or true), a weights file path, or null (or false), got {v!r}")

    def channels_last(self, v, k):
        if v == "auto" or isinstance(v, bool):
            return v
        self.fail(k, f"expected auto, true or false, got {v!r}")

    def grid(self, v, k):
        if v is None:
            return None
        if not isinstance(v, dict) or not v:
            self.fail(k, f"expected a mapping of dotted keys to lists of values, got {v!r}")
        out = {}
        for key, vals in v.items():
            if key not in GRID_KEYS:
                self.fail(f"{k}.{key}", f"not a grid-able key (allowed: {', '.join(GRID_KEYS)})")
            if not isinstance(vals, list) or not vals:
                self.fail(f"{k}.{key}", f"expected a non-empty list of values, got {vals!r}")
            out[key] = list(vals)
        return out


_REQUIRED = object()
GRID_KEYS = ("train.lr", "train.weight_decay", "train.activation", "train.loss", "train.optimizer",
             "train.batch_size", "train.epochs", "train.keep", "models")


def from_dict(raw: dict, source: str = "<protocol>") -> Protocol:
    """Validate a resolved protocol mapping; unknown keys and bad values raise BadInput(file, key path)."""
    v = _V(source)
    top = v.section(raw, "", {
        "name": (v.path_name, _REQUIRED),
        "description": (v.string, ""),
        "smoke": (v.boolean, False),
        "data": (lambda d, k: d, {}),
        "split": (lambda d, k: d, {}),
        "train": (lambda d, k: d, _REQUIRED),
        "models": (v.models, _REQUIRED),
        "pretrained": (v.pretrained, None),
        "allow_random_init": (v.boolean, False),
        "ensemble": (v.choice(ENSEMBLES), "logit_mean"),
        "leakage": (lambda d, k: d, {}),
        "task": (lambda d, k: d, None),
        "grid": (v.grid, None),
        "variant": (lambda d, k: d, None),
    })
    data = v.section(top["data"], "data", {
        "input_size": (v.pos_int, 224),
        "mean": (v.triple(False), (0.485, 0.456, 0.406)),
        "std": (v.triple(True), (0.229, 0.224, 0.225)),
    })
    split = v.section(top["split"], "split", {
        "level": (v.choice(LEVELS), "image"),
        "test_fraction": (v.fraction, 0.2),
        "n_folds": (v.pos_int, 5),
        "seed": (v.nonneg_int, 0),
    })
    if split["n_folds"] < 2:
        v.fail("split.n_folds", f"expected at least 2 folds, got {split['n_folds']}")
    train = v.section(top["train"], "train", {
        "optimizer": (v.choice(OPTIMIZERS), _REQUIRED),
        "lr": (v.pos_number, _REQUIRED),
        "weight_decay": (v.nonneg_number, 0.0),
        "scheduler": (v.choice(SCHEDULERS), "none"),
        "batch_size": (v.pos_int, _REQUIRED),
        "eval_batch_size": (v.pos_int, 256),
        "epochs": (v.pos_int, _REQUIRED),
        "loss": (v.choice(LOSSES), "CrossEntropyLoss"),
        "activation": (v.choice(ACTIVATIONS), "ReLU"),
        "augment": (lambda d, k: d, {}),
        "keep": (v.choice(KEEPS), "last"),
        "amp": (v.choice(AMPS), "auto"),
        "channels_last": (v.channels_last, "auto"),
        "deterministic": (v.boolean, False),
        "seed": (v.nonneg_int, 0),
        "compile": (v.choice(COMPILES), "none"),
    })
    augment = v.section(train.pop("augment"), "train.augment", {"flip_p": (v.probability, 0.0)})
    leak = v.section(top["leakage"], "leakage", {"gate": (v.choice(GATES), "warn")})
    variant = top["variant"]
    if variant is not None and not (isinstance(variant, dict) and set(variant) == {"id", "overrides"}):
        v.fail("variant", "is set by grid expansion only ({id, overrides})")
    p = Protocol(
        name=top["name"], description=top["description"], smoke=top["smoke"],
        data=DataCfg(**data), split=SplitCfg(**split),
        train=TrainCfg(augment=AugmentCfg(**augment), **train),
        models=top["models"], pretrained=top["pretrained"], allow_random_init=top["allow_random_init"],
        ensemble=top["ensemble"], leakage=LeakageCfg(**leak), task=task_from_dict(top["task"], v),
        grid=top["grid"], variant=variant,
        source=source,
    )
    if p.grid:  # every grid value must itself be valid: fail now, not halfway through a study
        bare = dataclasses.replace(p, grid=None)
        for key, vals in p.grid.items():
            for i, val in enumerate(vals):
                try:
                    apply_overrides(bare, {key: val})
                except BadInput as exc:
                    raise BadInput(source, f"grid.{key}[{i}]", exc.message) from None
    return p


def _label(v: _V, x, k: str) -> str:
    """A class name or dataset label: a non-empty string (an integer is taken as its decimal string)."""
    if isinstance(x, int) and not isinstance(x, bool):
        x = str(x)
    if not isinstance(x, str) or not x.strip():
        v.fail(k, f"expected a non-empty name, got {x!r}")
    return x.strip()


def _names_mapping(v: _V, d, k: str) -> dict:
    if not isinstance(d, dict) or not d:
        v.fail(k, f"expected a non-empty mapping, got {d!r}")
    out, seen = {}, {}
    for key, val in d.items():
        name = _label(v, key, f"{k}.{key}")
        if name.lower() in seen:
            v.fail(f"{k}.{key}", f"{name!r} and {seen[name.lower()]!r} name the same label (matching ignores case)")
        seen[name.lower()] = name
        out[name] = _label(v, val, f"{k}.{key}")
    return out


def task_from_dict(raw, v: _V) -> TaskCfg | None:
    """Validate a `task:` section (None when the protocol has none)."""
    if raw is None:
        return None
    t = v.section(raw, "task", {"classes": (lambda d, k: d, _REQUIRED), "ordinal": (v.boolean, False),
                                "map": (lambda d, k: d, None), "cutoffs": (lambda d, k: d, None),
                                "positive": (lambda d, k: d, None)})
    if not isinstance(t["classes"], list) or len(t["classes"]) < 2:
        v.fail("task.classes", f"expected a list of at least 2 class names, got {t['classes']!r}")
    classes = tuple(_label(v, c, f"task.classes[{i}]") for i, c in enumerate(t["classes"]))
    lower = [c.lower() for c in classes]
    for i, c in enumerate(lower):
        if c in lower[:i]:
            v.fail(f"task.classes[{i}]", f"{classes[i]!r} repeats {classes[lower.index(c)]!r} (names ignore case)")
    mapping = None
    if t["map"] is not None:
        mapping = _names_mapping(v, t["map"], "task.map")
        for key, cls in mapping.items():
            if cls not in classes:
                v.fail(f"task.map.{key}", f"unknown class {cls!r} (task.classes: {', '.join(classes)})")
        for cls in classes:
            if cls not in mapping.values():
                v.fail("task.map", f"no dataset label maps to class {cls!r}")
    cutoffs = None
    if t["cutoffs"] is not None:
        if not t["ordinal"]:
            v.fail("task.cutoffs", "cut-offs split an ordered scale: set task.ordinal: true, or remove them")
        cutoffs = _names_mapping(v, t["cutoffs"], "task.cutoffs")
        for name, cls in cutoffs.items():
            if cls not in classes:
                v.fail(f"task.cutoffs.{name}", f"names no class: {cls!r} (task.classes: {', '.join(classes)})")
            if cls == classes[0]:
                v.fail(f"task.cutoffs.{name}", f"a cut-off at the first class {cls!r} leaves no negatives")
    positive = None
    if len(classes) == 2:
        if t["positive"] is None:
            v.fail("task.positive", f"a two-class task needs its positive class (one of {', '.join(classes)})")
        positive = _label(v, t["positive"], "task.positive")
        if positive not in classes:
            v.fail("task.positive", f"names no class: {positive!r} (task.classes: {', '.join(classes)})")
    elif t["positive"] is not None:
        v.fail("task.positive", f"only for a two-class task; this one has {len(classes)} (use task.cutoffs)")
    return TaskCfg(classes=classes, ordinal=t["ordinal"], map=mapping, cutoffs=cutoffs, positive=positive)


# ---------------------------------------------------------------- overrides + grid


def _set_path(d: dict, dotted: str, value) -> None:
    keys = dotted.split(".")
    for k in keys[:-1]:
        d = d.setdefault(k, {})
    d[keys[-1]] = value


def apply_overrides(p: Protocol, overrides: dict) -> Protocol:
    """A new validated Protocol with dotted-key overrides applied (e.g. {"train.epochs": 1})."""
    d = p.to_dict()
    for key, value in overrides.items():
        _set_path(d, key, copy.deepcopy(value))
    return from_dict(d, source=p.source or "<protocol>")


def _fmt(v) -> str:
    """A grid value as it appears in a variant id (a folder name): characters outside _PATH_NAME become '_'."""
    if isinstance(v, (list, tuple)):
        text = "+".join(str(x) for x in v)
    else:
        text = f"{v:g}" if isinstance(v, float) else str(v)
    return re.sub(r"[^A-Za-z0-9._+=@-]", "_", text)


def expand_grid(p: Protocol) -> list[Protocol]:
    """The grid's cartesian product as protocols (no grid), each with a stable variant id.

    The id is readable (`lr=1e-05_weight_decay=0.0001_...`, keys in sorted order) and followed by the
    first 8 hex digits of the sha256 of its overrides, so it does not depend on YAML key order.
    Without a grid, returns [p].
    """
    if not p.grid:
        return [p]
    keys = sorted(p.grid)
    out = []
    for combo in itertools.product(*(p.grid[k] for k in keys)):
        overrides = dict(zip(keys, combo))
        label = "_".join(f"{k.split('.')[-1]}={_fmt(v)}" for k, v in overrides.items())
        vid = f"{label[:120]}-{sha256_of(overrides)[:8]}"   # a folder name: bounded, unique by the hash
        q = apply_overrides(dataclasses.replace(p, grid=None), overrides)
        out.append(dataclasses.replace(q, name=f"{p.name}@{vid}", variant={"id": vid, "overrides": overrides}))
    return out
