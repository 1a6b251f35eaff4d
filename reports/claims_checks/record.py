"""The check record every claims check returns, and the rounding-rule helpers the check families share."""
from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

from reports.claims_numbers import Num

STATUSES = ("pass", "fail", "not_checkable")
# the rounding rules a failed check is retried under, so its reason can say "would pass if truncated"
OTHER_RULES = {"round": ("truncate", "either"), "truncate": ("round", "either"), "either": ()}


@dataclass
class Check:
    """One question asked of the printed numbers: its answer (`status`), why, and the arithmetic shown.

    `values` holds the numbers machine-readably; `also` lists the ids of identical checks merged into this one.
    """

    id: str
    kind: str
    subject: str
    source: str
    status: str
    reason: str
    arithmetic: str = ""
    values: dict = field(default_factory=dict)
    also: list[str] = field(default_factory=list)

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"check {self.id}: status {self.status!r} not one of {', '.join(STATUSES)}")

    def to_dict(self) -> dict:
        """The JSON form (schema fibrobench.claims_audit/1): `also` only when something was merged."""
        d = {"id": self.id, "kind": self.kind, "subject": self.subject, "source": self.source,
             "status": self.status, "reason": self.reason, "arithmetic": self.arithmetic, "values": self.values}
        if self.also:
            d["also"] = list(self.also)
        return d


def iv_str(num: Num, rounding: str) -> str:
    lo, hi, hi_open = num.interval(rounding)
    return f"[{num.show(lo, 2)}, {num.show(hi, 2)}{')' if hi_open else ']'}"


def passes_under(num: Num, x: Fraction, rounding: str) -> str | None:
    """The first other rounding rule under which the printed value admits x, if any."""
    return next((rule for rule in OTHER_RULES.get(rounding, ()) if num.admits(x, rule)), None)


def also_note(num: Num, x: Fraction, rounding: str) -> str:
    """' (consistent if truncated)' etc. when another rounding rule would admit x."""
    for rule in OTHER_RULES.get(rounding, ()):
        if num.admits(x, rule):
            return {"truncate": " (consistent if the value was truncated instead of rounded)",
                    "either": " (consistent only if some values are truncated and others rounded)",
                    "round": " (consistent if the value was rounded instead of truncated)"}[rule]
    return ""
