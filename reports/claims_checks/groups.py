"""Result blocks grouped into evaluations (blocks declared `equivalent_to` each other) and what a group holds."""
from __future__ import annotations

from reports.claims import Claims, Result
from reports.claims_numbers import Num


def result_supports(claims: Claims, r: Result):
    """(class supports in class_names order, N) of the set a block was evaluated on, or (None, None)."""
    s = claims.sets.get(r.evaluated_on) if r.evaluated_on else None
    if s is None:
        return None, None
    return [s.counts[c] for c in claims.class_names], (s.total if s.total is not None else sum(s.counts.values()))


def groups(claims: Claims) -> list[list[Result]]:
    """Result blocks the claims file declares to be the same evaluation (equivalent_to), as connected groups."""
    parent = {r.id: r.id for r in claims.results()}

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for r in claims.results():
        if r.equivalent_to:
            parent[find(r.id)] = find(r.equivalent_to)
    out: dict[str, list[Result]] = {}
    for r in claims.results():
        out.setdefault(find(r.id), []).append(r)
    return list(out.values())


def group_supports(claims: Claims, g: list[Result]):
    """(supports, N, set name) of the first block of the group that names its evaluation set."""
    for r in g:
        sup, n = result_supports(claims, r)
        if sup is not None:
            return sup, n, r.evaluated_on
    return None, None, None


def block_counts(r: Result, classes: list[str]):
    """(class, field, count, source) from a block's TP/FP/FN/TN table and from its confusion matrix."""
    for cls, cnt in r.counts.items():
        for k, v in cnt.items():
            yield cls, k, v, r.source
    if r.confusion is not None:
        n = sum(map(sum, r.confusion))
        for c, cls in enumerate(classes):
            tp = r.confusion[c][c]
            fn = sum(r.confusion[c]) - tp
            fp = sum(row[c] for row in r.confusion) - tp
            for k, v in (("tp", tp), ("fp", fp), ("fn", fn), ("tn", n - tp - fp - fn)):
                yield cls, k, v, f"{r.source} (confusion matrix)"


def group_counts(claims: Claims, g: list[Result]) -> dict[str, dict[str, tuple[int, str]]]:
    """class -> tp/fp/fn/tn -> (count, source), the first printed value of each across the group's blocks."""
    merged: dict[str, dict[str, tuple[int, str]]] = {}
    for r in g:
        for cls, k, v, src in block_counts(r, claims.class_names):
            merged.setdefault(cls, {}).setdefault(k, (v, src))
    return merged


def as_one_note(g: list[Result], set_name) -> str:
    """A note when no block of the group says what kind of number it is."""
    if all(r.kind == "unspecified" for r in g):
        return f" (the paper does not say what kind of numbers these are; checked as one evaluation on {set_name})"
    return ""


def group_source(g: list[Result]) -> str:
    """Sources of the blocks whose per-class values or accuracy a group check uses."""
    used = [r.source for r in g if r.kind != "mean_of_folds" and r.per_class]
    for m in ("accuracy", "error_rate"):
        first = next((r for r in g if r.kind != "mean_of_folds" and m in r.metrics), None)
        if first is not None:
            used.append(first.source)
    return "; ".join(dict.fromkeys(used))


def merged_per_class(g: list[Result]) -> dict[str, dict[str, Num]]:
    """class -> metric -> the first printed value across the group's single-evaluation blocks."""
    per: dict[str, dict[str, Num]] = {}
    for r in g:
        if r.kind == "mean_of_folds":
            continue
        for cls, mets in r.per_class.items():
            for m, num in mets.items():
                per.setdefault(cls, {}).setdefault(m, num)
    return per


def merged_metric(g: list[Result], m: str) -> Num | None:
    """The first printed overall metric `m` across the group's single-evaluation blocks."""
    for r in g:
        if r.kind != "mean_of_folds" and m in r.metrics:
            return r.metrics[m]
    return None


def kinds(g: list[Result]) -> set[str]:
    return {r.kind for r in g}


def mirror_binary(per: dict[str, dict], classes: list[str]) -> dict[str, dict]:
    """In a two-class paper a class's recall is the other's specificity and its precision the other's NPV:
    fill in what the paper prints only for the positive class (a copy; printed values win)."""
    if len(classes) != 2:
        return per
    out = {c: dict(per.get(c, {})) for c in classes}
    for cls, other in (classes, classes[::-1]):
        for m, mirror in (("recall", "specificity"), ("precision", "npv"), ("specificity", "recall"),
                          ("npv", "precision")):
            if m not in out[cls] and mirror in per.get(other, {}):
                out[cls][m] = per[other][mirror]
    return {c: v for c, v in out.items() if v}
