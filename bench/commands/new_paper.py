"""`fibrobench new-paper NAME --classes a,b,c`: start auditing a paper: protocol, smoke variant and claims file."""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from protocols.errors import BadInput

NAME = "new-paper"
HELP = "write protocols/NAME/ (protocol.yaml, protocol-smoke.yaml, claims.yaml, README.md) for a paper to audit"
DESCRIPTION = (
    "Writes a protocol with the paper's label space (task: classes, ordinal, positive), a smoke variant sized for a "
    "CPU, and a claims file, every field present and commented; lines starting '#| ' are worked examples to edit "
    "and uncomment. Walkthrough: docs/new-paper.md. Exit 2 on a bad name or class list, or when a file exists "
    "(--force replaces them)."
)
log = logging.getLogger("fibrobench.new_paper")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
FILES = ("protocol.yaml", "protocol-smoke.yaml", "claims.yaml", "README.md")


def add_arguments(p):
    p.add_argument("name", metavar="NAME", help="paper id, e.g. roe2026 (letters, digits, '-' and '_')")
    p.add_argument("--classes", required=True, metavar="A,B,C",
                   help="the paper's class names in its order, comma-separated (at least two)")
    p.add_argument("--ordinal", action="store_true", help="the classes are ordered stages (kappa, cut-offs)")
    p.add_argument("--positive", metavar="CLASS", help="the positive class (required for two classes)")
    p.add_argument("--dir", default="protocols", metavar="OUT_DIR", help="where NAME/ is created (default protocols)")
    p.add_argument("--force", action="store_true", help="replace existing files")


def parse_classes(text: str, positive: str | None) -> list[str]:
    """The class list of --classes, validated; two classes need a --positive among them."""
    classes = [c.strip() for c in (text or "").split(",")]
    if len(classes) < 2 or any(not c for c in classes):
        raise BadInput("--classes", None, f"expected at least two non-empty names separated by commas, got {text!r}")
    bad = next((c for c in classes if any(ch in c for ch in "\n\r\t\"\\") or not c.isprintable()), None)
    if bad is not None:
        raise BadInput("--classes", None, f"class name {bad!r} holds a quote, backslash or control character")
    lower = [c.lower() for c in classes]
    dup = next((c for i, c in enumerate(classes) if lower.index(c.lower()) != i), None)
    if dup is not None:
        raise BadInput("--classes", None, f"{dup!r} is listed twice (class names ignore case)")
    if len(classes) == 2 and positive is None:
        raise BadInput("--positive", None, f"a two-class paper needs its positive class: --positive {classes[1]}")
    if positive is not None and positive not in classes:
        raise BadInput("--positive", None, f"{positive!r} is not one of {', '.join(classes)}")
    if positive is not None and len(classes) != 2:
        raise BadInput("--positive", None, "only for a two-class paper (ordinal tasks use cut-offs, see the protocol)")
    return classes


def _q(s: str) -> str:
    """A YAML double-quoted scalar (JSON strings are valid YAML)."""
    return json.dumps(s, ensure_ascii=False)


def _flow(items) -> str:
    return "[" + ", ".join(_q(c) for c in items) + "]"


def _task(classes: list[str], ordinal: bool, positive: str | None) -> str:
    first, second, last = classes[0], classes[1], classes[-1]
    lines = [
        "# The paper's label space. Image folders / manifest labels are matched to these names case-insensitively;",
        "# when the dataset's labels differ (e.g. five stages graded into fewer classes), map them with `map:`.",
        "task:",
        f"  classes: {_flow(classes)}   # in the paper's order: label integers index this list",
        f"  ordinal: {'true' if ordinal else 'false'}" + ("   # ordered stages: quadratic/linear kappa and cut-off "
                                                          "AUROCs apply" if ordinal else
                                                          "   # nominal classes: no kappa, no stage errors"),
        "  # map: {dataset label: class}   -- e.g. for data in folders S0..S4:",
        f"  #   map: {{S0: {_q(first)}, S1: {_q(first)}, S2: {_q(second)}, S3: {_q(last)}, S4: {_q(last)}}}",
    ]
    if ordinal:
        lines += ["  # cutoffs: named binary splits 'class >= X is positive', each reported as an AUROC, e.g.",
                  f"  #   cutoffs: {{{_q('>=' + second)}: {_q(second)}}}"]
    if positive is not None:
        lines.append(f"  positive: {_q(positive)}   # sensitivity, specificity, PPV, NPV and AUROC are this class's")
    return "\n".join(lines)


def protocol_yaml(name: str, classes: list[str], ordinal: bool, positive: str | None) -> str:
    return f"""# {name}: the paper's evaluation protocol, as the paper states it (written by `fibrobench new-paper`).
# Replace every value the paper states and mark each one it does not state with CHOSEN and the reason.
# Field reference: protocols/config.py; walkthrough: docs/new-paper.md.
name: {_q(name)}
description: >-
  TODO one line: the paper, its models and its evaluation.
smoke: false

{_task(classes, ordinal, positive)}

data:
  input_size: 224                       # the paper's resize (square, pixels)
  mean: [0.485, 0.456, 0.406]           # normalisation; ImageNet's here
  std: [0.229, 0.224, 0.225]

split:
  level: image                          # image | patient | cluster: what the paper splits by (patient needs
                                        # patient_id in manifest.csv; `fibrobench leakage` shows what image leaks)
  test_fraction: 0.2                    # held-out test share
  n_folds: 5                            # k-fold cross-validation on the rest (at least 2)
  seed: 0                               # CHOSEN unless the paper gives one

train:
  optimizer: Adam                       # Adam | AdamW | SGD
  lr: 1.0e-4
  weight_decay: 0.0
  scheduler: none                       # none | CosineAnnealingLR
  batch_size: 32
  eval_batch_size: 256                  # inference only; does not change results
  epochs: 50
  loss: CrossEntropyLoss                # CrossEntropyLoss | SparseCategoricalCrossentropy (the same for labels)
  activation: ReLU                      # ReLU | GELU (every nn.ReLU swapped)
  augment:
    flip_p: 0.5                         # horizontal flip probability, training images only
  keep: best_val_loss                   # last | best_val_loss | best_val_acc: which epoch's weights are kept
  amp: auto                             # auto (bf16 on CUDA) | bf16 | off
  channels_last: auto                   # auto | true | false
  deterministic: false                  # true: cudnn deterministic (slower)
  seed: 0                               # fold k trains with seed + k, the same for every model

# `fibrobench models` lists the built-in names; also timm/<name>, tv/<name> and package.module:factory
models: [resnet50]
pretrained: imagenet                    # imagenet | a weights file | null (random init)
allow_random_init: false                # true: train from scratch when weights are missing (recorded in run.json)
ensemble: logit_mean                    # mean of the fold models' logits on the test set, then softmax

leakage:
  gate: warn                            # warn | fail | off: what `run` does when the splits leak

grid: null                              # a tuning study, e.g. {{train.lr: [1.0e-3, 1.0e-4]}}, run with `run --grid`
"""


def smoke_yaml(name: str) -> str:
    return f"""# {name}-smoke: protocol.yaml sized for minutes on a CPU -- a pipeline check, not a result (the report says
# so). Same task, split scheme, loss, augmentation and ensemble; every override says why.
include: protocol.yaml
name: {_q(name + "-smoke")}
description: {_q(name + " pipeline, 64 px, 3 epochs, random init -- a pipeline check, not a result.")}
smoke: true
data:
  input_size: 64          # small images: minutes, not hours
train:
  lr: 1.0e-3              # a few epochs from random init need a larger step
  batch_size: 16
  eval_batch_size: 128
  epochs: 3
  keep: last              # too few epochs for a meaningful choice
pretrained: null          # random init: no weights needed
allow_random_init: true
grid: null                # no tuning study in a smoke run
"""


def claims_yaml(name: str, classes: list[str], ordinal: bool, positive: str | None) -> str:
    from reports.exact_metrics import matrix_counts, overall, weighted_kappa

    c0, k = classes[0], len(classes)
    # the examples' numbers come from one matrix: 20 test images per class, 18 right, 2 taken for the next class
    cm = [[18 if j == i else 2 if j == (i + 1) % k else 0 for j in range(k)] for i in range(k)]
    x = overall(matrix_counts(cm))
    kappa, mcc, qwk = float(x["kappa"]), float(x["mcc"]), float(weighted_kappa(cm, "quadratic"))
    per = ", ".join(f"{_q(c)}: {{precision: \"0.900\", recall: \"0.900\", f1: \"0.900\"}}" for c in classes[:2])
    counts = ", ".join(f"{_q(c)}: 100" for c in classes)
    trainval_counts = ", ".join(f"{_q(c)}: 80" for c in classes)
    test_counts = ", ".join(f"{_q(c)}: 20" for c in classes)
    lines = [
        f"# {name}: every number the paper reports, as printed (written by `fibrobench new-paper`).",
        "# Quote numbers as printed ('84.90', '98.34%', '1,267'): a bare float loses its precision and is refused.",
        "# Lines starting '#| ' are worked examples: edit them, remove the '#| ' and the empty value above them.",
        "# Schema: docs/claims-schema.md.",
        "schema: fibrobench.claims/1",
        "paper:",
        f"  id: {_q(name)}",
        '  title: "TODO the title"',
        "  authors: []                   # [\"A. Author\", ...]",
        "  year: null",
        '  text: null                    # where the paper\'s text is kept, e.g. papers/NAME.txt',
        "rounding: round                 # round | truncate | either: how the paper rounds printed values",
        f"class_names: {_flow(classes)}   # the paper's order; must equal the run's classes for --run",
    ]
    if positive is not None:
        lines.append(f"positive: {_q(positive)}   # metrics printed without a class (sensitivity, specificity, "
                     "PPV, NPV, AUROC) are this class's")
    lines += [
        "",
        "# named sample sets: class counts (every class), optional total and fraction of a partitioned whole",
        "sets: {}",
        "#| sets:",
        f"#|   all: {{source: \"Table 1\", counts: {{{counts}}}}}",
        f"#|   trainval: {{source: \"Table 1\", counts: {{{trainval_counts}}}, fraction: \"80%\"}}",
        f"#|   test: {{source: \"Table 1\", counts: {{{test_counts}}}, fraction: \"20%\"}}",
        "",
        "# sets that split another set, class by class",
        "partitions: []",
        "#| partitions:",
        "#|   - {id: holdout, source: \"Sec. 2\", whole: all, parts: [trainval, test], stratified: true}",
        "",
        "# what each model scored: one result block per table row group or sentence",
        "models: {}",
        "#| models:",
        "#|   proposed:",
        "#|     label: \"the paper's model\"",
        "#|     origin: this_paper                # or \"external: <citation>\"",
        "#|     run_name: resnet50                # the model's name in a reproduction run (for --run)",
        "#|     params: null                      # parameter count as printed",
        "#|     params_source: \"not reported\"",
        "#|     results:",
        "#|       - id: t2_proposed               # unique in the file",
        "#|         source: \"Table 2\"            # where the numbers are printed",
        "#|         kind: ensemble                # ensemble | single_fold | mean_of_folds | unspecified",
        "#|         kind_basis: stated            # stated | inferred (say why in kind_note)",
        "#|         kind_note: \"\"",
        "#|         evaluated_on: test            # a set under sets: gives N and the class supports",
        "#|         metrics: {accuracy: \"90.00%\", macro_f1: \"0.900\", balanced_accuracy: \"90.00%\", "
        + (f"kappa: \"{kappa:.3f}\", quadratic_kappa: \"{qwk:.3f}\"" if ordinal else f"mcc: \"{mcc:.3f}\"") + "}",
        f"#|         per_class: {{{per}}}",
        f"#|         counts: {{{_q(c0)}: {{tp: 18, fp: 2, fn: 2, tn: {20 * len(classes) - 22}}}}}",
        "#|         # n_correct: 54              # correctly classified, as printed",
        "#|         # confusion: [[...], ...]    # a printed confusion matrix, rows = truth, in class_names order",
        "#|         # equivalent_to: other_id    # another block that is the same evaluation",
        "#|         # config: {activation: GELU} # a tuning variant: not compared with a reproduction",
        "#|     folds:                            # a fold-by-fold table",
        "#|       source: \"Table 3\"",
        "#|       evaluated_on: test",
        "#|       values: {accuracy: [\"90.00%\", \"85.00%\", \"95.00%\", \"90.00%\", \"90.00%\"]}",
        "#|       ranges: [{metric: accuracy, low: \"80%\", strict: true, source: \"Sec. 3 ('above 80%')\"}]",
        "",
        "# reported tests: paired_t (fold tables of two models) or mcnemar (two result ids on one test set)",
        "statistics: []",
        "#| statistics:",
        "#|   - {id: mcnemar_vs_baseline, test: mcnemar, source: \"Sec. 3\", a: t2_proposed, b: t2_proposed,  "
        "# b: the baseline's result id",
        "#|      method: unspecified, reported: {a_only: 3, b_only: 3, p: \"1.000\"}}   # p may be a bound: \"< 0.05\"",
        "",
        "# one quantity printed in several places",
        "equalities: []",
        "#| equalities:",
        "#|   - {id: n_test, quantity: \"test-set size\", values: [{value: \"60\", source: \"Table 1\"}, "
        "{value: \"60\", source: \"Sec. 3\"}]}",
        "",
        "# headline comparisons: is each side the same kind of number?",
        "comparisons: []",
        "#| comparisons:",
        "#|   - {id: headline, source: \"Abstract\", a: t2_proposed, b: t2_proposed, metric: accuracy}",
        "",
        "hyperparameters: {}             # free-form record of what the paper states (not checked)",
        "notes: []                       # transcription notes, shown in the report",
    ]
    return "\n".join(lines) + "\n"


def readme(name: str, classes: list[str]) -> str:
    return f"""# {name}

A paper under audit: class names {', '.join(classes)}. Written by `fibrobench new-paper`; walkthrough in
docs/new-paper.md.

| file | what it is | used by |
|---|---|---|
| `protocol.yaml` | the paper's evaluation as stated (task, split, training, models); unstated values marked CHOSEN | `fibrobench run` |
| `protocol-smoke.yaml` | the same, 64 px, 3 epochs, random init: a pipeline check, not a result | `fibrobench run` |
| `claims.yaml` | every number the paper reports, quoted as printed, with its source | `fibrobench audit-claims`, `fibrobench report --claims` |

```bash
fibrobench audit-claims protocols/{name}/claims.yaml
fibrobench run protocols/{name}/protocol-smoke.yaml --data DATA --out runs/{name}-smoke --device cpu
fibrobench audit-claims protocols/{name}/claims.yaml --run runs/{name}-smoke
fibrobench report runs/{name}-smoke --claims protocols/{name}/claims.yaml -o report.html
```
"""


def write_paper(name: str, classes: list[str], ordinal: bool, positive: str | None, root, force: bool = False) -> Path:
    """Write root/name/{FILES}; refuse (BadInput) to replace a file unless force."""
    from protocols.atomic import write_text

    if not _NAME_RE.fullmatch(name or ""):
        raise BadInput("NAME", None, f"{name!r}: use letters, digits, '-' and '_' (at most 64, no path separators)")
    out = Path(root) / name
    texts = {"protocol.yaml": protocol_yaml(name, classes, ordinal, positive), "protocol-smoke.yaml": smoke_yaml(name),
             "claims.yaml": claims_yaml(name, classes, ordinal, positive), "README.md": readme(name, classes)}
    existing = [f for f in FILES if (out / f).exists()]
    if existing and not force:
        raise BadInput(out / existing[0], None, "exists; pass --force to replace it")
    for f in FILES:
        write_text(out / f, texts[f])
    return out


def main(args) -> int:
    classes = parse_classes(args.classes, args.positive)
    out = write_paper(args.name, classes, args.ordinal, args.positive, args.dir, args.force)
    for f in FILES:
        print(out / f)
    log.info("next: transcribe the paper into %s, then `fibrobench audit-claims %s` (docs/new-paper.md)",
             out / "claims.yaml", out / "claims.yaml")
    return 0
