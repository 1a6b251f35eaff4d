"""Load and validate a paper's claims file (docs/claims-schema.md) into plain dataclasses; torch-free.

Numbers are kept as printed (reports.claims_numbers): every value becomes a `Num` that knows the interval of
true values its printed form allows under a rounding rule.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import yaml

from reports.claims_numbers import Num, count_field, looks_like_number, num_field, parse_p
from reports.errors import ReportInputError

SCHEMA = "fibrobench.claims/1"
ROUNDING = ("round", "truncate", "either")
KINDS = ("ensemble", "single_fold", "mean_of_folds", "unspecified")
KIND_BASIS = ("stated", "inferred")

# per-class metric names and the aliases papers print (auroc: one-vs-rest AUROC of the class)
CLASS_METRICS = ("precision", "recall", "f1", "specificity", "npv", "auroc")
CLASS_ALIASES = {"sensitivity": "recall", "sens": "recall", "tpr": "recall", "ppv": "precision",
                 "spec": "specificity", "tnr": "specificity", "f1_score": "f1", "f1-score": "f1", "auc": "auroc",
                 "roc_auc": "auroc"}
# overall metrics; macro_avg / weighted_avg = "macro/weighted average" whose metric the paper does not name;
# kappa = Cohen's (unweighted); auroc = the positive class's AUROC of a two-class paper (needs `positive`)
OVERALL_METRICS = ("accuracy", "error_rate", "macro_precision", "macro_recall", "macro_f1",
                   "weighted_precision", "weighted_recall", "weighted_f1", "macro_avg", "weighted_avg",
                   "balanced_accuracy", "mcc", "kappa", "quadratic_kappa", "linear_kappa", "auroc", "macro_auroc",
                   "weighted_auroc")
OVERALL_ALIASES = {"bacc": "balanced_accuracy", "balanced_acc": "balanced_accuracy", "matthews": "mcc",
                   "matthews_corrcoef": "mcc", "cohen_kappa": "kappa", "cohens_kappa": "kappa",
                   "qwk": "quadratic_kappa", "lwk": "linear_kappa", "auc": "auroc", "roc_auc": "auroc",
                   "macro_auc": "macro_auroc", "weighted_auc": "weighted_auroc"}
# printed without a class, these are the positive class's per-class metrics of a two-class paper
POSITIVE_CLASS_METRICS = ("sensitivity", "specificity", "ppv", "npv", "precision", "recall", "f1", "tpr", "tnr")
COUNT_FIELDS = ("tp", "fp", "fn", "tn")
STAT_TESTS = ("paired_t", "mcnemar")
MCNEMAR_METHODS = ("exact", "chi2", "chi2_cc", "unspecified")

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
    reported: dict[str, Any]               # name -> Num (ci -> [Num, Num]; p may be a Bound)
    ci_level: Fraction = Fraction(95, 100)
    alternative: str = "two-sided"
    method: str = "unspecified"            # mcnemar: exact | chi2 | chi2_cc | unspecified


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
    positive: str | None = None             # the positive class of a two-class paper

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
        return n
    n = OVERALL_ALIASES.get(n, n)
    if n not in OVERALL_METRICS:
        raise ReportInputError(path, key, f"unknown metric {name!r} (one of {', '.join(OVERALL_METRICS)}, an alias "
                               f"{', '.join(OVERALL_ALIASES)}, or with `positive:` set, "
                               f"{', '.join(POSITIVE_CLASS_METRICS)})")
    return n


def _parse_result(raw: dict, model: str, path, where: str, classes: list[str], positive: str | None = None) -> Result:
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
        r.n_folds = count_field(raw["n_folds"], path, f"{where}.n_folds")
    for cls, mets in (raw.get("per_class") or {}).items():
        if cls not in classes:
            raise ReportInputError(path, f"{where}.per_class.{cls}", f"unknown class (class_names: {classes})")
        if not isinstance(mets, dict):
            raise ReportInputError(path, f"{where}.per_class.{cls}", "expected a mapping metric -> value")
        r.per_class[cls] = {_metric_name(k, path, f"{where}.per_class.{cls}.{k}", True):
                            num_field(v, path, f"{where}.per_class.{cls}.{k}") for k, v in mets.items()}
    for k, v in (raw.get("metrics") or {}).items():
        key = f"{where}.metrics.{k}"
        if str(k).strip().lower() in POSITIVE_CLASS_METRICS:
            # "sensitivity 0.91" of a binary paper: the positive class's per-class value
            if positive is None:
                raise ReportInputError(path, key, f"{k!r} without a class: set the top-level `positive:` (two-class "
                                       f"papers) or write it under per_class")
            name = _metric_name(k, path, key, per_class=True)
            if name in r.per_class.get(positive, {}):
                raise ReportInputError(path, key, f"printed twice in one block (also per_class.{positive}.{name})")
            r.per_class.setdefault(positive, {})[name] = num_field(v, path, key)
            continue
        name = _metric_name(k, path, key, per_class=False)
        if name == "auroc" and positive is None:
            raise ReportInputError(path, key, "an overall `auroc` is the positive class's: set the top-level "
                                   "`positive:` (two-class papers), or use macro_auroc / per_class auroc")
        if name in r.metrics:
            raise ReportInputError(path, key, f"printed twice in one block (as {name})")
        r.metrics[name] = num_field(v, path, key)
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
            out[kk] = count_field(v, path, f"{where}.counts.{cls}.{k}")
        r.counts[cls] = out
    for k in ("n_correct", "n_total"):
        if raw.get(k) is not None:
            setattr(r, k, count_field(raw[k], path, f"{where}.{k}"))
    if raw.get("confusion") is not None:
        cm = raw["confusion"]
        if not isinstance(cm, list) or len(cm) != len(classes) or \
                any(not isinstance(row, list) or len(row) != len(classes) for row in cm):
            raise ReportInputError(path, f"{where}.confusion", f"expected a {len(classes)}x{len(classes)} list of rows")
        r.confusion = [[count_field(v, path, f"{where}.confusion[{i}][{j}]") for j, v in enumerate(row)]
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
        values[str(k)] = [num_field(x, path, f"{where}.values.{k}[{i}]") for i, x in enumerate(v)]
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
                ent[b] = num_field(rr[b], path, f"{w}.{b}")
        if "low" not in ent and "high" not in ent:
            raise ReportInputError(path, w, "a range needs low and/or high")
        ranges.append(ent)
    return Folds(source=str(_req(raw, "source", path, where)), evaluated_on=raw.get("evaluated_on"),
                 values=values, ranges=ranges)


# what each test may report; mcnemar: a_only / b_only = the discordant counts (correct by a only / by b only),
# both / neither = the concordant ones, statistic = the chi-square statistic
STAT_REPORTED = {"paired_t": {"mean_a", "sd_a", "mean_b", "sd_b", "mean_diff", "sd_diff", "ci", "t", "df", "p", "n"},
                 "mcnemar": {"a_only", "b_only", "both", "neither", "n", "statistic", "p"}}
_STAT_COUNTS = {"a_only", "b_only", "both", "neither", "n"}


def _parse_statistic(raw: dict, path, where: str) -> Statistic:
    if not isinstance(raw, dict):
        raise ReportInputError(path, where, "expected a mapping")
    st = Statistic(id=str(_req(raw, "id", path, where)), test=str(_req(raw, "test", path, where)),
                   source=str(_req(raw, "source", path, where)), a=str(_req(raw, "a", path, where)),
                   b=str(_req(raw, "b", path, where)), metric=str(raw.get("metric", "accuracy")), reported={})
    if st.test not in STAT_TESTS:
        raise ReportInputError(path, f"{where}.test", f"{st.test!r}: one of {', '.join(STAT_TESTS)}")
    st.alternative = str(raw.get("alternative", "two-sided"))
    if st.alternative not in ("two-sided", "less", "greater"):
        raise ReportInputError(path, f"{where}.alternative", "one of two-sided, less, greater")
    if raw.get("ci_level") is not None:
        st.ci_level = num_field(raw["ci_level"], path, f"{where}.ci_level").value
    st.method = str(raw.get("method", "unspecified"))
    if st.test == "mcnemar" and st.method not in MCNEMAR_METHODS:
        raise ReportInputError(path, f"{where}.method", f"{st.method!r} not one of {', '.join(MCNEMAR_METHODS)}")
    if st.test != "mcnemar" and raw.get("method") is not None:
        raise ReportInputError(path, f"{where}.method", "only for test: mcnemar")
    rep = _req(raw, "reported", path, where, dict)
    allowed = STAT_REPORTED[st.test]
    for k, v in rep.items():
        if k not in allowed:
            raise ReportInputError(path, f"{where}.reported.{k}", f"unknown for {st.test} "
                                   f"(allowed: {', '.join(sorted(allowed))})")
        if k == "ci":
            if not isinstance(v, list) or len(v) != 2:
                raise ReportInputError(path, f"{where}.reported.ci", "expected [low, high]")
            st.reported["ci"] = [num_field(x, path, f"{where}.reported.ci[{i}]") for i, x in enumerate(v)]
        elif k == "p":
            st.reported["p"] = parse_p(v, path, f"{where}.reported.p")
        elif st.test == "mcnemar" and k in _STAT_COUNTS:
            st.reported[k] = count_field(v, path, f"{where}.reported.{k}")
        else:
            st.reported[k] = num_field(v, path, f"{where}.reported.{k}")
    if st.test == "mcnemar" and not {"a_only", "b_only"} <= set(st.reported):
        raise ReportInputError(path, f"{where}.reported", "mcnemar needs the discordant counts a_only and b_only")
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
    except (ValueError, RecursionError) as exc:   # an integer of > 4,300 digits, nesting deeper than the stack
        raise ReportInputError(path, None, f"not usable YAML ({type(exc).__name__}: "
                                           f"{str(exc).splitlines()[0][:200] if str(exc) else ''})") from None
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
    positive = raw.get("positive")
    if positive is not None:
        positive = str(positive)
        if positive not in classes:
            raise ReportInputError(path, "positive", f"{positive!r} is not in class_names {classes}")
        if len(classes) != 2:
            raise ReportInputError(path, "positive", f"only for a two-class paper; this one has {len(classes)} "
                                   "classes (write per-class values under per_class)")

    sets = {}
    for name, s in (raw.get("sets") or {}).items():
        w = f"sets.{name}"
        cnt = _req(s, "counts", path, w, dict)
        if set(cnt) != set(classes):
            raise ReportInputError(path, f"{w}.counts", f"classes {sorted(cnt)} differ from class_names {classes}")
        sets[name] = SampleSet(name=str(name), counts={c: count_field(cnt[c], path, f"{w}.counts.{c}") for c in classes},
                               total=count_field(s["total"], path, f"{w}.total") if s.get("total") is not None else None,
                               source=str(_req(s, "source", path, w)),
                               fraction=num_field(s["fraction"], path, f"{w}.fraction") if s.get("fraction") else None)
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
        results = [_parse_result(r, str(name), path, f"{w}.results[{i}]", classes, positive)
                   for i, r in enumerate(m.get("results") or [])]
        models[str(name)] = Model(
            name=str(name), label=str(m.get("label", name)), origin=str(m.get("origin", "this_paper")),
            run_name=m.get("run_name"),
            params=num_field(m["params"], path, f"{w}.params") if m.get("params") is not None else None,
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
            if st.test == "paired_t" and side not in models:   # fold tables of two models, paired fold by fold
                raise ReportInputError(path, f"statistics[{i}]", f"names model {side!r}, which is not under models")
            if st.test == "mcnemar" and side not in ids:       # two evaluations of one test set
                raise ReportInputError(path, f"statistics[{i}]", f"names result {side!r}, which is not a result id")
        statistics.append(st)
    equalities = []
    for i, e in enumerate(raw.get("equalities") or []):
        w = f"equalities[{i}]"
        vals = []
        for j, v in enumerate(_req(e, "values", path, w, list)):
            src = str(_req(v, "source", path, f"{w}.values[{j}]"))
            x = _req(v, "value", path, f"{w}.values[{j}]")
            is_num = looks_like_number(x)
            vals.append((num_field(v if "decimals" in v else x, path, f"{w}.values[{j}].value")
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
                  hyperparameters=dict(raw.get("hyperparameters") or {}), notes=list(raw.get("notes") or []),
                  positive=positive)


def render_claims_section(audit: dict) -> str:
    """The claims-audit HTML section (templates/claims.html.j2), autoescaped; for previews and tests."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(Path(__file__).parent / "templates")),
                             autoescape=jinja2.select_autoescape(["html", "j2"], default=True))
    return env.get_template("claims.html.j2").render(claims_audit=audit)
