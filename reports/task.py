"""The run's label space as the reports read it (torch-free): class names, ordinal or not, cut-offs, positive class.

Read from run.json's resolved protocol (`protocol.task`, written by `fibrobench run`) and checked against
splits.json's `class_names`. Run directories made before the task existed have no `protocol.task`; they were all
five-stage METAVIR runs (class names F0..F4, the only label space the code then knew), so exactly that case reads as
LEGACY_TASK. Any other run without a task is nominal, with no cut-offs.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from protocols.runfiles import LEGACY_CLASS_NAMES
from reports.errors import ReportInputError

# what `fibrobench run` hard-coded before tasks were protocol data (issue 11); used only for such old run dirs
LEGACY_TASK = {"classes": list(LEGACY_CLASS_NAMES), "ordinal": True,
               "cutoffs": {">=F2": "F2", ">=F3": "F3", "F4": "F4"}, "positive": None}
# metrics that only mean something on an ordered scale with at least three classes
ORDINAL_METRICS = ("qwk", "linear_kappa", "mae_stage", "error_ge2_rate")


@dataclass(frozen=True)
class Task:
    classes: tuple[str, ...]
    ordinal: bool = False
    cutoffs: dict = field(default_factory=dict)   # cut-off name -> index of its first positive class
    positive: int | None = None                   # binary tasks: index of the positive class
    source: str = "run.json protocol.task"

    @property
    def binary(self) -> bool:
        return len(self.classes) == 2

    @property
    def ordinal_metrics(self) -> bool:
        """Quadratic/linear kappa and class-step errors: ordinal tasks with at least three classes."""
        return self.ordinal and len(self.classes) >= 3

    @property
    def unit(self) -> str:
        """How the report calls one class: "stage" on an ordered scale, "class" otherwise."""
        return "stage" if self.ordinal else "class"

    @property
    def positive_name(self) -> str | None:
        return None if self.positive is None else self.classes[self.positive]

    def to_dict(self) -> dict:
        return {"classes": list(self.classes), "ordinal": self.ordinal,
                "cutoffs": {k: self.classes[v] for k, v in self.cutoffs.items()},
                "positive": self.positive_name, "source": self.source}


def task_from_dict(d: dict, where, source: str = "run.json protocol.task") -> Task:
    """A Task from a resolved `task` mapping (as protocols.config.TaskCfg.to_dict writes it)."""
    if not isinstance(d, dict) or not isinstance(d.get("classes"), list) or len(d["classes"]) < 2:
        raise ReportInputError(where, "protocol.task.classes", "expected a list of at least 2 class names")
    classes = tuple(str(c) for c in d["classes"])
    cutoffs = {}
    for name, cls in (d.get("cutoffs") or {}).items():
        if cls not in classes:
            raise ReportInputError(where, f"protocol.task.cutoffs.{name}", f"names no class: {cls!r}")
        cutoffs[str(name)] = classes.index(cls)
    pos = d.get("positive")
    if pos is not None and pos not in classes:
        raise ReportInputError(where, "protocol.task.positive", f"names no class: {pos!r}")
    if len(classes) == 2 and pos is None:
        pos, source = classes[1], source + " (no positive class recorded: the second class)"
    return Task(classes, bool(d.get("ordinal")), cutoffs, None if pos is None else classes.index(pos), source)


def task_of(run_json: dict | None, class_names, where="run.json") -> Task:
    """The task of a run: run.json's protocol.task, checked against splits.json's class names (`class_names`)."""
    d = ((run_json or {}).get("protocol") or {}).get("task")
    names = [str(c) for c in class_names]
    if d is not None:
        inferred = str((run_json or {}).get("task_source") or "").startswith("inferred")
        task = task_from_dict(d, where, "inferred by `fibrobench run` from the data's labels, sorted by name (the "
                                        "protocol has no task)" if inferred else "run.json protocol.task")
        if list(task.classes) != names:
            raise ReportInputError(where, "protocol.task.classes",
                                   f"{list(task.classes)} differ from splits.json class_names {names}")
        return task
    if names == LEGACY_TASK["classes"]:
        return task_from_dict(LEGACY_TASK, where, "legacy: run made before tasks were protocol data (F0..F4, ordinal)")
    return task_from_dict({"classes": names, "ordinal": False}, where, "splits.json class names (no task recorded)")
