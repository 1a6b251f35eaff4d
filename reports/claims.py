"""Load and validate a paper's claims file (docs/claims-schema.md) into plain dataclasses; torch-free.

Numbers are kept as printed: "84.90" keeps its two decimals, "98.34%" is a percentage, "6.24e-7" keeps
three significant digits. Every value becomes a `Num` that knows the interval of true values its printed
form allows under a rounding rule, so checks can ask "could k/N have been printed like this?" exactly
(with fractions, no floating-point fuzz).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import yaml

from reports.errors import ReportInputError

SCHEMA = "fibrobench.claims/1"
ROUNDING = ("round", "truncate", "either")
KINDS = ("ensemble", "single_fold", "mean_of_folds", "unspecified")
KIND_BASIS = ("stated", "inferred")

# per-class metric names and the aliases papers print
CLASS_METRICS = ("precision", "recall", "f1", "specificity", "npv")
CLASS_ALIASES = {"sensitivity": "recall", "sens": "recall", "tpr": "recall", "ppv": "precision",
                 "spec": "specificity", "tnr": "specificity", "f1_score": "f1", "f1-score": "f1"}
# overall metrics; macro_avg / weighted_avg = "macro/weighted average" whose metric the paper does not name
OVERALL_METRICS = ("accuracy", "error_rate", "macro_precision", "macro_recall", "macro_f1",
                   "weighted_precision", "weighted_recall", "weighted_f1", "macro_avg", "weighted_avg")
COUNT_FIELDS = ("tp", "fp", "fn", "tn")

_NUM_RE = re.compile(r"^([+-]?)(\d+)(?:\.(\d+))?(?:[eE]([+-]?\d+))?$")


@dataclass(frozen=True)
class Num:
    """A number as printed: exact value (a fraction; percentages divided by 100) and its printed unit."""

    text: str
    value: Fraction
    ulp: Fraction          # one unit in the last printed place, on the same scale as value
    percent: bool = False

    def interval(self, rounding: str = "round") -> tuple[Fraction, Fraction, bool]:
        """(lo, hi, hi_open): true values that print as this text. round: [v-u/2, v+u/2] (ties either way);
        truncate: [v, v+u) (toward zero, for non-negative values); either: the union [v-u/2, v+u)."""
        half = self.ulp / 2
        if self.ulp == 0:
            return self.value, self.value, False
        if rounding == "round":
            return self.value - half, self.value + half, False
        if rounding == "truncate":
            return self.value, self.value + self.ulp, True
        if rounding == "either":
            return self.value - half, self.value + self.ulp, True
        raise ValueError(f"unknown rounding {rounding!r}")

    def admits(self, x: Fraction, rounding: str = "round") -> bool:
        lo, hi, hi_open = self.interval(rounding)
        return lo <= x and (x < hi if hi_open else x <= hi)

    @property
    def decimals(self) -> int:
        """Decimal places of the printed value on its printed scale (percent points for percentages)."""
        u = self.ulp * (100 if self.percent else 1)
        d = 0
        while u and u < 1:
            u *= 10
            d += 1
        return d

    def __float__(self) -> float:
        return float(self.value)

    def show(self, x: Fraction | float, extra: int = 2) -> str:
        """x on this number's printed scale, with `extra` more decimals than printed."""
        scale = 100 if self.percent else 1
        s = f"{float(x) * scale:.{self.decimals + extra}f}"
        return s + ("%" if self.percent else "")


_MAX_EXP = 300    # printed numbers beyond ~1e300 (float's range) are typos or hostile input


def parse_num(raw: Any, path, key: str, decimals: int | None = None) -> Num:
    """A printed number: int (exact), or a string like "84.90", "98.34%", "1,267", "6.24e-7"."""
    if isinstance(raw, bool) or raw is None:
        raise ReportInputError(path, key, f"expected a number as printed, got {raw!r}")
    if isinstance(raw, int):
        return Num(str(raw), Fraction(raw), Fraction(0) if decimals is None else Fraction(1, 10 ** decimals))
    if isinstance(raw, float):
        if decimals is None:
            raise ReportInputError(path, key, f"bare float {raw!r} loses its printed precision: quote it "
                                   f"(e.g. '{raw}') or give {{value: ..., decimals: N}}")
        raw = f"{raw:.{decimals}f}"
    if not isinstance(raw, str):
        raise ReportInputError(path, key, f"expected a number as printed, got {type(raw).__name__}")
    text = raw.strip()
    s = text.replace(",", "").replace(" ", "")
    percent = s.endswith("%")
    if percent:
        s = s[:-1]
    m = _NUM_RE.match(s)
    if not m:
        raise ReportInputError(path, key, f"not a number as printed: {raw!r}")
    sign, whole, frac, exp = m.groups()
    frac = frac or ""
    exp = int(exp or 0)
    if abs(exp + len(whole)) > _MAX_EXP or len(whole + frac) > 60:   # before 10 ** exp / int() are built:
        shown = repr(raw) if len(repr(raw)) <= 40 else repr(raw)[:36] + "...'"   # 1e999999999 would hang
        raise ReportInputError(path, key, f"{shown} is out of range for a printed statistic")
    mant = Fraction(int(whole + frac), 10 ** len(frac)) * (-1 if sign == "-" else 1)
    places = len(frac) if decimals is None else decimals
    value = mant * Fraction(10) ** exp
    ulp = Fraction(1, 10 ** places) * Fraction(10) ** exp
    if percent:
        value, ulp = value / 100, ulp / 100
    return Num(text, value, ulp, percent)


def _num_field(raw: Any, path, key: str) -> Num:
    if isinstance(raw, dict):
        if "value" not in raw:
            raise ReportInputError(path, key, "a number given as a mapping needs 'value'")
        dec = raw.get("decimals")
        if dec is not None and (not isinstance(dec, int) or dec < 0):
            raise ReportInputError(path, f"{key}.decimals", "must be a non-negative integer")
        return parse_num(raw["value"], path, f"{key}.value", dec)
    return parse_num(raw, path, key)


def _count(raw: Any, path, key: str) -> int:
    if isinstance(raw, str) and re.fullmatch(r"\d{1,3}(,\d{3})+|\d+", raw.strip()):
        raw = int(raw.replace(",", ""))
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 0:
        raise ReportInputError(path, key, f"expected a non-negative integer count, got {raw!r}")
    return raw


@dataclass
class SampleSet:
    name: str
    counts: dict[str, int]
    total: int | None
    source: str
    fraction: Num | None = None


@dataclass
class Partition:
    id: str
    whole: str
    parts: list[str]
    source: str
    stratified: bool = False


@dataclass
class Result:
    """One block of numbers the paper reports for one model evaluation (a table row group, a sentence)."""

    id: str
    model: str
    source: str
    kind: str = "unspecified"
    kind_basis: str = "stated"
    kind_note: str = ""
    evaluated_on: str | None = None
    n_folds: int | None = None
    equivalent_to: str | None = None
    config: dict = field(default_factory=dict)
    note: str = ""
    metrics: dict[str, Num] = field(default_factory=dict)
    per_class: dict[str, dict[str, Num]] = field(default_factory=dict)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    n_correct: int | None = None
    n_total: int | None = None
    confusion: list[list[int]] | None = None   # rows = true class, columns = predicted, in class_names order


@dataclass
class Folds:
    source: str
    evaluated_on: str | None
    values: dict[str, list[Num]]           # metric -> one value per fold
    ranges: list[dict] = field(default_factory=list)   # {metric, low?, high?, strict, source}


@dataclass
class Model:
    name: str
    label: str
    origin: str
    run_name: str | None
    params: Num | None
    params_source: str
    results: list[Result]
    folds: Folds | None


@dataclass
class Statistic:
    id: str
    test: str
    source: str
    a: str
    b: str
    metric: str
    reported: dict[str, Any]               # name -> Num (ci -> [Num, Num])
    ci_level: Fraction = Fraction(95, 100)
    alternative: str = "two-sided"


@dataclass
class Equality:
    id: str
    quantity: str
    values: list[tuple[Any, str]]          # (Num or str, source)
    note: str = ""


@dataclass
class Comparison:
    id: str
    source: str
    a: str                                  # result id
    b: str
    metric: str
    text: str = ""


@dataclass
class Claims:
    path: Path
    paper: dict
    rounding: str
    class_names: list[str]
    sets: dict[str, SampleSet]
    partitions: list[Partition]
    models: dict[str, Model]
    statistics: list[Statistic]
    equalities: list[Equality]
    comparisons: list[Comparison]
    hyperparameters: dict
    notes: list[str]

    def results(self) -> list[Result]:
        return [r for m in self.models.values() for r in m.results]

    def result(self, rid: str) -> Result:
        for r in self.results():
            if r.id == rid:
                return r
        raise KeyError(rid)


def _req(d: dict, key: str, path, where: str, typ=None):
    if not isinstance(d, dict) or key not in d:
        raise ReportInputError(path, f"{where}.{key}" if where else key, "missing")
    v = d[key]
    if typ is not None and not isinstance(v, typ):
        raise ReportInputError(path, f"{where}.{key}" if where else key,
                               f"expected {getattr(typ, '__name__', typ)}, got {type(v).__name__}")
    return v


def _metric_name(name: str, path, key: str, per_class: bool) -> str:
    n = str(name).strip().lower()
    if per_class:
        n = CLASS_ALIASES.get(n, n)
        if n not in CLASS_METRICS:
            raise ReportInputError(path, key, f"unknown per-class metric {name!r} (one of {', '.join(CLASS_METRICS)}"
                                   f" or an alias {', '.join(CLASS_ALIASES)})")
    elif n not in OVERALL_METRICS:
        raise ReportInputError(path, key, f"unknown metric {name!r} (one of {', '.join(OVERALL_METRICS)})")
    return n


def _parse_result(raw: dict, model: str, path, where: str, classes: list[str]) -> Result:
    if not isinstance(raw, dict):
        raise ReportInputError(path, where, "expected a mapping")
    r = Result(id=str(_req(raw, "id", path, where)), model=model, source=str(_req(raw, "source", path, where)))
    r.kind = str(raw.get("kind", "unspecified"))
    if r.kind not in KINDS:
        raise ReportInputError(path, f"{where}.kind", f"{r.kind!r} not one of {', '.join(KINDS)}")
    r.kind_basis = str(raw.get("kind_basis", "stated"))
    if r.kind_basis not in KIND_BASIS:
        raise ReportInputError(path, f"{where}.kind_basis", f"{r.kind_basis!r} not one of {', '.join(KIND_BASIS)}")
    r.kind_note = str(raw.get("kind_note", ""))
    r.note = str(raw.get("note", ""))
    r.evaluated_on = raw.get("evaluated_on")
    r.equivalent_to = raw.get("equivalent_to")
    r.config = dict(raw.get("config") or {})
    if raw.get("n_folds") is not None:
        r.n_folds = _count(raw["n_folds"], path, f"{where}.n_folds")
    for k, v in (raw.get("metrics") or {}).items():
        name = _metric_name(k, path, f"{where}.metrics.{k}", per_class=False)
        r.metrics[name] = _num_field(v, path, f"{where}.metrics.{k}")
    for cls, mets in (raw.get("per_class") or {}).items():
        if cls not in classes:
            raise ReportInputError(path, f"{where}.per_class.{cls}", f"unknown class (class_names: {classes})")
        if not isinstance(mets, dict):
            raise ReportInputError(path, f"{where}.per_class.{cls}", "expected a mapping metric -> value")
        r.per_class[cls] = {_metric_name(k, path, f"{where}.per_class.{cls}.{k}", True):
                            _num_field(v, path, f"{where}.per_class.{cls}.{k}") for k, v in mets.items()}
    for cls, cnt in (raw.get("counts") or {}).items():
        if cls not in classes:
            raise ReportInputError(path, f"{where}.counts.{cls}", f"unknown class (class_names: {classes})")
        if not isinstance(cnt, dict):
            raise ReportInputError(path, f"{where}.counts.{cls}", "expected a mapping tp/fp/fn/tn -> count")
        out = {}
        for k, v in cnt.items():
            kk = str(k).lower()
            if kk not in COUNT_FIELDS:
                raise ReportInputError(path, f"{where}.counts.{cls}.{k}", "not one of tp, fp, fn, tn")
            out[kk] = _count(v, path, f"{where}.counts.{cls}.{k}")
        r.counts[cls] = out
    for k in ("n_correct", "n_total"):
        if raw.get(k) is not None:
            setattr(r, k, _count(raw[k], path, f"{where}.{k}"))
    if raw.get("confusion") is not None:
        cm = raw["confusion"]
        if not isinstance(cm, list) or len(cm) != len(classes) or \
                any(not isinstance(row, list) or len(row) != len(classes) for row in cm):
            raise ReportInputError(path, f"{where}.confusion", f"expected a {len(classes)}x{len(classes)} list of rows")
        r.confusion = [[_count(v, path, f"{where}.confusion[{i}][{j}]") for j, v in enumerate(row)]
                       for i, row in enumerate(cm)]
    known = {"id", "source", "kind", "kind_basis", "kind_note", "note", "evaluated_on", "equivalent_to",
             "config", "n_folds", "metrics", "per_class", "counts", "n_correct", "n_total", "confusion"}
    extra = set(raw) - known
    if extra:
        raise ReportInputError(path, f"{where}.{sorted(extra)[0]}", f"unknown key (allowed: {', '.join(sorted(known))})")
    return r


def _parse_folds(raw: dict, path, where: str) -> Folds:
    if not isinstance(raw, dict):
        raise ReportInputError(path, where, "expected a mapping")
    values = {}
    for k, v in (raw.get("values") or {}).items():
        if not isinstance(v, list) or not v:
            raise ReportInputError(path, f"{where}.values.{k}", "expected a non-empty list, one value per fold")
        values[str(k)] = [_num_field(x, path, f"{where}.values.{k}[{i}]") for i, x in enumerate(v)]
    lens = {len(v) for v in values.values()}
    if len(lens) > 1:
        raise ReportInputError(path, f"{where}.values", f"fold lists differ in length: {sorted(lens)}")
    ranges = []
    for i, rr in enumerate(raw.get("ranges") or []):
        w = f"{where}.ranges[{i}]"
        metric = str(_req(rr, "metric", path, w))
        if metric not in values:
            raise ReportInputError(path, f"{w}.metric", f"{metric!r} has no fold values")
        ent = {"metric": metric, "source": str(_req(rr, "source", path, w)), "strict": bool(rr.get("strict", False))}
        for b in ("low", "high"):
            if rr.get(b) is not None:
                ent[b] = _num_field(rr[b], path, f"{w}.{b}")
        if "low" not in ent and "high" not in ent:
            raise ReportInputError(path, w, "a range needs low and/or high")
        ranges.append(ent)
    return Folds(source=str(_req(raw, "source", path, where)), evaluated_on=raw.get("evaluated_on"),
                 values=values, ranges=ranges)


def _parse_statistic(raw: dict, path, where: str) -> Statistic:
    st = Statistic(id=str(_req(raw, "id", path, where)), test=str(_req(raw, "test", path, where)),
                   source=str(_req(raw, "source", path, where)), a=str(_req(raw, "a", path, where)),
                   b=str(_req(raw, "b", path, where)), metric=str(raw.get("metric", "accuracy")), reported={})
    if st.test != "paired_t":
        raise ReportInputError(path, f"{where}.test", f"{st.test!r}: only 'paired_t' is supported")
    st.alternative = str(raw.get("alternative", "two-sided"))
    if st.alternative not in ("two-sided", "less", "greater"):
        raise ReportInputError(path, f"{where}.alternative", "one of two-sided, less, greater")
    if raw.get("ci_level") is not None:
        st.ci_level = _num_field(raw["ci_level"], path, f"{where}.ci_level").value
    rep = _req(raw, "reported", path, where, dict)
    allowed = {"mean_a", "sd_a", "mean_b", "sd_b", "mean_diff", "sd_diff", "ci", "t", "df", "p", "n"}
    for k, v in rep.items():
        if k not in allowed:
            raise ReportInputError(path, f"{where}.reported.{k}", f"unknown (allowed: {', '.join(sorted(allowed))})")
        if k == "ci":
            if not isinstance(v, list) or len(v) != 2:
                raise ReportInputError(path, f"{where}.reported.ci", "expected [low, high]")
            st.reported["ci"] = [_num_field(x, path, f"{where}.reported.ci[{i}]") for i, x in enumerate(v)]
        else:
            st.reported[k] = _num_field(v, path, f"{where}.reported.{k}")
    return st


def load_claims(path) -> Claims:
    """Read and validate a claims YAML; raise ReportInputError naming the file and key on anything wrong."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReportInputError(path, None, "claims file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ReportInputError(path, None, f"cannot read: {exc}") from None
    except yaml.YAMLError as exc:
        raise ReportInputError(path, None, f"not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise ReportInputError(path, None, "top level must be a mapping")
    if raw.get("schema") != SCHEMA:
        raise ReportInputError(path, "schema", f"expected {SCHEMA!r}, got {raw.get('schema')!r}")
    paper = _req(raw, "paper", path, "", dict)
    _req(paper, "id", path, "paper")
    rounding = str(raw.get("rounding", "round"))
    if rounding not in ROUNDING:
        raise ReportInputError(path, "rounding", f"{rounding!r} not one of {', '.join(ROUNDING)}")
    classes = _req(raw, "class_names", path, "", list)
    if not classes or len(set(map(str, classes))) != len(classes):
        raise ReportInputError(path, "class_names", "must be a non-empty list of distinct names")
    classes = [str(c) for c in classes]

    sets = {}
    for name, s in (raw.get("sets") or {}).items():
        w = f"sets.{name}"
        cnt = _req(s, "counts", path, w, dict)
        if set(cnt) != set(classes):
            raise ReportInputError(path, f"{w}.counts", f"classes {sorted(cnt)} differ from class_names {classes}")
        sets[name] = SampleSet(name=str(name), counts={c: _count(cnt[c], path, f"{w}.counts.{c}") for c in classes},
                               total=_count(s["total"], path, f"{w}.total") if s.get("total") is not None else None,
                               source=str(_req(s, "source", path, w)),
                               fraction=_num_field(s["fraction"], path, f"{w}.fraction") if s.get("fraction") else None)
    partitions = []
    for i, p in enumerate(raw.get("partitions") or []):
        w = f"partitions[{i}]"
        part = Partition(id=str(_req(p, "id", path, w)), whole=str(_req(p, "whole", path, w)),
                         parts=[str(x) for x in _req(p, "parts", path, w, list)], source=str(_req(p, "source", path, w)),
                         stratified=bool(p.get("stratified", False)))
        for n in [part.whole, *part.parts]:
            if n not in sets:
                raise ReportInputError(path, w, f"names set {n!r}, which is not under sets")
        partitions.append(part)

    models = {}
    for name, m in (_req(raw, "models", path, "", dict)).items():
        w = f"models.{name}"
        if not isinstance(m, dict):
            raise ReportInputError(path, w, "expected a mapping")
        results = [_parse_result(r, str(name), path, f"{w}.results[{i}]", classes)
                   for i, r in enumerate(m.get("results") or [])]
        models[str(name)] = Model(
            name=str(name), label=str(m.get("label", name)), origin=str(m.get("origin", "this_paper")),
            run_name=m.get("run_name"),
            params=_num_field(m["params"], path, f"{w}.params") if m.get("params") is not None else None,
            params_source=str(m.get("params_source", "")), results=results,
            folds=_parse_folds(m["folds"], path, f"{w}.folds") if m.get("folds") else None)
    ids = [r.id for mm in models.values() for r in mm.results]
    dup = {i for i in ids if ids.count(i) > 1}
    if dup:
        raise ReportInputError(path, "models", f"result id {sorted(dup)[0]!r} used twice")
    for mm in models.values():
        for r in mm.results:
            if r.equivalent_to is not None and r.equivalent_to not in ids:
                raise ReportInputError(path, f"models.{mm.name}.results[{r.id}].equivalent_to",
                                       f"no result with id {r.equivalent_to!r}")
            if r.evaluated_on is not None and r.evaluated_on not in sets:
                raise ReportInputError(path, f"models.{mm.name}.results[{r.id}].evaluated_on",
                                       f"no set named {r.evaluated_on!r}")
        if mm.folds and mm.folds.evaluated_on is not None and mm.folds.evaluated_on not in sets:
            raise ReportInputError(path, f"models.{mm.name}.folds.evaluated_on", f"no set named {mm.folds.evaluated_on!r}")

    statistics = []
    for i, s in enumerate(raw.get("statistics") or []):
        st = _parse_statistic(s, path, f"statistics[{i}]")
        for side in (st.a, st.b):
            if side not in models:
                raise ReportInputError(path, f"statistics[{i}]", f"names model {side!r}, which is not under models")
        statistics.append(st)
    equalities = []
    for i, e in enumerate(raw.get("equalities") or []):
        w = f"equalities[{i}]"
        vals = []
        for j, v in enumerate(_req(e, "values", path, w, list)):
            src = str(_req(v, "source", path, f"{w}.values[{j}]"))
            x = _req(v, "value", path, f"{w}.values[{j}]")
            is_num = isinstance(x, (int, float)) or (isinstance(x, str) and _NUM_RE.match(
                x.strip().replace(",", "").replace(" ", "").rstrip("%")))
            vals.append((_num_field(v if "decimals" in v else x, path, f"{w}.values[{j}].value")
                         if is_num else str(x), src))
        if len(vals) < 2:
            raise ReportInputError(path, f"{w}.values", "an equality needs at least two reported values")
        equalities.append(Equality(id=str(_req(e, "id", path, w)), quantity=str(_req(e, "quantity", path, w)),
                                   values=vals, note=str(e.get("note", ""))))
    comparisons = []
    for i, c in enumerate(raw.get("comparisons") or []):
        w = f"comparisons[{i}]"
        cmp_ = Comparison(id=str(_req(c, "id", path, w)), source=str(_req(c, "source", path, w)),
                          a=str(_req(c, "a", path, w)), b=str(_req(c, "b", path, w)),
                          metric=str(c.get("metric", "accuracy")), text=str(c.get("text", "")))
        for side in (cmp_.a, cmp_.b):
            if side not in ids:
                raise ReportInputError(path, w, f"names result {side!r}, which is not a result id")
        comparisons.append(cmp_)
    return Claims(path=path, paper=paper, rounding=rounding, class_names=classes, sets=sets, partitions=partitions,
                  models=models, statistics=statistics, equalities=equalities, comparisons=comparisons,
                  hyperparameters=dict(raw.get("hyperparameters") or {}), notes=list(raw.get("notes") or []))


def audit_claims(claims_path, run_dir=None, rounding: str | None = None, summary: dict | None = None) -> dict:
    """The claims audit as a JSON-able dict (schema fibrobench.claims_audit/1); see reports.claims_checks.

    `summary` (a reports.summary.summarize_run dict) can be passed instead of run_dir when it is already computed.
    """
    from reports.claims_checks import audit_claims as _audit

    return _audit(claims_path, run_dir=run_dir, rounding=rounding, summary=summary)


def render_claims_section(audit: dict) -> str:
    """The claims-audit HTML section (templates/claims.html.j2), autoescaped; for previews and tests."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(Path(__file__).parent / "templates")),
                             autoescape=jinja2.select_autoescape(["html", "j2"], default=True))
    return env.get_template("claims.html.j2").render(claims_audit=audit)
