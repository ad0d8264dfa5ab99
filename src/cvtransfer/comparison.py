"""``compare.html``: several run folders side by side, one table and overlaid learning curves.

    cvtransfer.compare(["runs/a", "runs/b"], out="compare.html")   # or: cvtransfer compare runs/a runs/b
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cvtransfer.errors import CvTransferError
from cvtransfer.evaluation.html import Section, figure_html, note, table_html, write_page
from cvtransfer.evaluation.plots import comparison_figure
from cvtransfer.run import Run, method_label, model_label, training_seconds

COMPARE_FILE = "compare.html"
COMPARE_SECTIONS = ("runs", "curves")
# The table's leading columns: (row key, column title).
LABEL_COLUMNS = (("name", "run"), ("model", "model"), ("method", "method"), ("weights", "weights"),
                 ("split", "split"))
# (metrics.json key or "seconds", column title, larger is better)
COLUMNS = (("images", "images", None), ("accuracy", "accuracy", True),
           ("balanced_accuracy", "balanced accuracy", True), ("f1_macro", "macro F1", True),
           ("roc_auc", "ROC-AUC", True), ("seconds", "train time (s)", False))


def compare_rows(run_dirs: Sequence[str | Path]) -> list[dict[str, Any]]:
    """One row per run: name, model, method, strategy, backbone, weights, split, images, metrics, time.

    ``model`` and ``method`` are what the page shows ("MLP on features (31 dims)", "linear (svm head)",
    "dann (full)"); ``seconds`` includes feature extraction (``feature_seconds``) for runs on cached features.
    """
    if not run_dirs:
        raise CvTransferError("compare needs at least one run folder")
    names = _short_names([Path(d) for d in run_dirs])
    rows = []
    for run_dir, name in zip(map(Path, run_dirs), names):
        if not run_dir.is_dir():
            raise CvTransferError(f"run folder {run_dir} does not exist")
        run = Run(run_dir)
        metrics = run.metrics
        if "accuracy" not in metrics:
            raise CvTransferError(f"{run_dir / 'metrics.json'} is missing: the run has not finished "
                                  f"(resume it with: cvtransfer fit --resume {run_dir})")
        seconds, extraction = training_seconds(run)
        rows.append({"name": name, "model": model_label(run), "method": method_label(run),
                     "strategy": run.config.strategy, "backbone": run.config.backbone,
                     "weights": _weights_label(run.config.weights), "split": metrics.get("split", "?"),
                     "images": metrics.get("num_samples"),
                     **{key: metrics.get(key) for key, _, larger in COLUMNS if larger is True},
                     "seconds": seconds, "feature_seconds": extraction, "history": run.history})
    return rows


def write_comparison(run_dirs: Sequence[str | Path], out: str | Path = COMPARE_FILE) -> Path:
    """Write the comparison page of ``run_dirs`` to ``out``; return its path."""
    rows = compare_rows(run_dirs)
    best = _best_cells(rows)
    headers = (*(title for _, title in LABEL_COLUMNS), *(title for _, title, _ in COLUMNS))
    table = table_html(
        headers, [[row[key] for key, _ in LABEL_COLUMNS] + [row[key] for key, _, _ in COLUMNS]
                  for row in rows],
        numeric=[False] * len(LABEL_COLUMNS) + [True] * len(COLUMNS), best=best)
    leader = max(rows, key=lambda row: row["accuracy"])
    splits = {row["split"] for row in rows}
    caveat = "" if len(splits) == 1 else " The runs were evaluated on different splits: compare with care."
    extraction = [row for row in rows if row["feature_seconds"]]
    features = (" For runs on cached features (linear probes) it includes the feature extraction ("
                + ", ".join(f"{row['name']}: {row['feature_seconds']:.1f} s" for row in extraction) + ")."
                if extraction else "")
    summary = note(f"Best in each column highlighted (highest metric, shortest time). Most accurate: "
                   f"{leader['name']} ({leader['accuracy']:.3f}). Metrics are fractions from 0 to 1, from each "
                   f"run's metrics.json; train time is the sum of its epoch times.{features} Method: the "
                   "strategy (with the head of a linear probe) and, for adaptation runs, the adaptation "
                   f"method.{caveat}")
    with_history = [row for row in rows if row["history"]]
    curves = (figure_html(comparison_figure([r["history"] for r in with_history], [r["name"] for r in with_history]),
                          "learning curves of the compared runs",
                          "Validation loss (solid) and training loss (dotted), and validation accuracy, per "
                          "epoch (adaptation runs: source validation solid, target test accuracy dashed).")
              if with_history else note("None of the runs has a history.csv."))
    sections = [Section("runs", "Runs", table + summary), Section("curves", "Learning curves", curves)]
    return write_page(out, f"Comparison of {len(rows)} runs", ", ".join(row["name"] for row in rows), sections)


def _best_cells(rows: list[dict[str, Any]]) -> set[tuple[int, int]]:
    """(row, column) of the best value of each metric column (ties all highlighted)."""
    cells = set()
    for offset, (key, _, larger) in enumerate(COLUMNS):
        if larger is None:
            continue
        values = [row[key] for row in rows]
        known = [v for v in values if v is not None and not math.isnan(v)]
        if not known:
            continue
        target = max(known) if larger else min(known)
        cells |= {(r, len(LABEL_COLUMNS) + offset) for r, v in enumerate(values) if v == target}
    return cells


def _short_names(paths: list[Path]) -> list[str]:
    """Run names that tell the runs apart: paths relative to their common folder."""
    resolved = [p.resolve() for p in paths]
    if len(resolved) == 1:
        return [resolved[0].name]
    common = Path(os.path.commonpath(resolved))
    names = [str(p.relative_to(common)) or p.name for p in resolved]
    return [name if name != "." else p.name for name, p in zip(names, resolved)]


def _weights_label(weights: str) -> str:
    """imagenet / none as they are; a file by its last two path parts (its run folder and name)."""
    path = Path(weights)
    return weights if len(path.parts) <= 2 else str(Path(*path.parts[-2:]))
