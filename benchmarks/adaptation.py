"""Shared parts of the domain-adaptation benchmarks (digits, office_caltech): one run per method,
its target accuracy read back from history.csv four ways, and the tables.

Target accuracy of a run, all from the run's history.csv (one row per epoch):

    last     the last epoch (what you get with --select-by none)
    snd      the epoch with the highest val_snd      } unsupervised: chosen without any target label,
    entropy  the epoch with the lowest val_entropy   } what --select-by would keep
    dev      the epoch with the lowest val_dev       }
    oracle   the best target_accuracy of any epoch: chosen WITH the target test labels, as TLlib's
             scripts do (val_dataset = test_dataset); reported for comparison with published tables only.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch

import cvtransfer
from cvtransfer.engine.history import read_history
from cvtransfer.io import read_json, write_json
from cvtransfer.scores.selection import SELECTION_SCORES

METHODS = ["source-only", "dan", "coral", "dann", "cdan", "cdan+e", "adda", "mcc"]
# score -> which end is best, as --select-by reads it
SELECTIONS = {name: max if SELECTION_SCORES.get(name).mode == "max" else min for name in SELECTION_SCORES}
COLUMNS = ["last", "snd", "entropy", "dev", "oracle"]


def quiet() -> None:
    """Keep the benchmark's own lines readable: no Lightning banners, no per-run INFO lines."""
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    logging.getLogger("lightning.fabric").setLevel(logging.ERROR)
    logging.getLogger("cvtransfer").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*in eval mode at the start of training.*")  # adda: frozen source


def summarize(run_dir: Path, iterations: int) -> dict[str, Any]:
    """Target accuracies (last / by each score / oracle), chosen epochs, timing and shift of one run."""
    rows = read_history(run_dir / "history.csv")
    if not rows:
        raise RuntimeError(f"{run_dir} has no history.csv rows")
    accuracy = [row["target_accuracy"] for row in rows]
    result: dict[str, Any] = {"epochs": len(rows), "target_accuracy": accuracy, "last": accuracy[-1],
                              "oracle": max(accuracy), "oracle_epoch": accuracy.index(max(accuracy))}
    for score, best in SELECTIONS.items():
        values = [row[f"val_{score}"] for row in rows]
        finite = [(v, i) for i, v in enumerate(values) if not math.isnan(v)]
        if not finite:
            result[score], result[f"{score}_epoch"] = float("nan"), None
            continue
        # first epoch among equals: best() over (value, -index) for max, (value, index) for min
        epoch = (max(finite, key=lambda t: (t[0], -t[1])) if best is max else min(finite))[1]
        result[score], result[f"{score}_epoch"] = accuracy[epoch], epoch
        result[f"{score}_values"] = values
    seconds = sum(row["seconds"] for row in rows)
    stage = run_dir / "source_stage" / "history.csv"  # adda's first stage
    stage_rows = read_history(stage)
    result["train_seconds"] = seconds + sum(row["seconds"] for row in stage_rows)
    result["iterations"] = iterations * (len(rows) + len(stage_rows))
    result["seconds_per_iter"] = result["train_seconds"] / result["iterations"]
    shift = read_json(run_dir / "shift.json") if (run_dir / "shift.json").is_file() else {}
    for stage_name in ("before", "after", "after_bottleneck"):
        result[f"pad_{stage_name}"] = shift.get(stage_name, {}).get("proxy_a_distance", float("nan"))
    return result


def finished(out: Path) -> bool:
    """Whether the run folder ``out`` holds a finished run."""
    return (out / "history.csv").is_file() and (out / "metrics.json").is_file()


def run_method(out: Path, iterations: int, **options: Any) -> dict[str, Any]:
    """One ``cvtransfer.adapt`` run (fresh folder ``out``) summarized; wall time included."""
    if finished(out):
        summary = summarize(out, iterations)  # finished earlier in the same --work folder: reuse
        wall = out / "benchmark_wall.json"
        summary["wall_seconds"] = read_json(wall)["wall_seconds"] if wall.is_file() else float("nan")
        summary["reused"] = True
        return summary
    if out.exists():
        import shutil

        shutil.rmtree(out)  # an interrupted run: start it again
    start = time.perf_counter()
    # report.html (t-SNE embedding, Grad-CAM...) costs more than a short run itself: not wanted here
    cvtransfer.adapt(out=str(out), report=False, **options)
    wall = time.perf_counter() - start
    write_json(out / "benchmark_wall.json", {"wall_seconds": wall})
    summary = summarize(out, iterations)
    summary["wall_seconds"] = wall
    return summary


def shown_path(path: Path) -> str:
    """A path as a log may show it: relative to the repo or its ../shared, or under ~, never absolute."""
    repo = Path(__file__).resolve().parents[1]
    resolved = path.expanduser().resolve()
    for base, shown in ((repo, "."), (repo.parent / "shared", "../shared"), (Path.home(), "~")):
        if resolved.is_relative_to(base):
            return str(Path(shown) / resolved.relative_to(base))
    return path.name


def command_line(module: str) -> str:
    """``python -m MODULE`` and the arguments as typed, every path shown as :func:`shown_path` shows it."""
    shown = []
    for token in sys.argv[1:]:
        option, equals, value = token.partition("=") if token.startswith("--") and "=" in token else ("", "", token)
        shown.append(option + equals + (shown_path(Path(value)) if os.sep in value else value))
    return " ".join([f"python -m {module}", *shown])


def write_outputs(lines: list[str], log_path: Path, results_path: Path, args: argparse.Namespace,
                  **raw: Any) -> None:
    """Print the tables, write them to ``log_path`` and the raw numbers (with the arguments and the
    machine) to ``results_path``."""
    print("\n" + "\n".join(lines), flush=True)
    log_path.write_text("\n".join(lines) + "\n")
    results_path.parent.mkdir(exist_ok=True)
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}"
    arguments = {k: shown_path(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    results_path.write_text(json.dumps({"args": arguments, "machine": machine, **raw}, indent=1))
    print(f"\nwrote {shown_path(log_path)} and {shown_path(results_path)}", flush=True)


def run_minutes(runs: list[dict[str, Any]]) -> float:
    """Wall-clock minutes the runs took when they were trained (also right when they are reused)."""
    return sum(r["wall_seconds"] for r in runs if not math.isnan(r["wall_seconds"])) / 60


def pct(value: float) -> str:
    return "  n/a" if value is None or math.isnan(value) else f"{100 * value:5.1f}"


def signed(value: float, base: float, std: float | None = None) -> str:
    """``value`` in % (with its std over seeds when given) and its difference to ``base`` in points:
    ' 91.2 (+9.1)' or ' 91.2±0.4 (+9.1)'."""
    text = pct(value) + (f"±{100 * std:.1f}" if std is not None and not math.isnan(std) else "")
    if value is None or base is None or math.isnan(value) or math.isnan(base):
        return f"{text}        "
    return f"{text} ({100 * (value - base):+5.1f})"


def mean_and_std(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean over seeds of every numeric figure of the runs, and ``<figure>_std`` (population std over
    seeds, 0 for one seed) next to it."""
    import numpy as np

    keys = [k for k, v in runs[0].items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    result: dict[str, Any] = {k: float(np.mean([r[k] for r in runs])) for k in keys}
    result.update({f"{k}_std": float(np.std([r[k] for r in runs])) for k in keys})
    return result


def selection_lines(results: list[dict[str, Any]]) -> list[str]:
    """How close each unsupervised selection gets to the oracle epoch, over all given runs."""
    lines = [f"{'selected by':<12} {'mean acc':>8} {'vs last':>8} {'regret vs oracle':>17} {'runs >= last':>12} "
             f"{'= oracle epoch':>14} {'spearman(score, acc) over epochs':>33}"]
    count = len(results)
    for name in COLUMNS:
        values = [r[name] for r in results if not math.isnan(r[name])]
        if not values:
            continue
        mean = sum(values) / len(values)
        last = sum(r["last"] for r in results) / count
        regret = sum(r["oracle"] - r[name] for r in results if not math.isnan(r[name])) / len(values)
        at_least = sum(r[name] >= r["last"] - 1e-9 for r in results if not math.isnan(r[name]))
        exact = sum(r[name] >= r["oracle"] - 1e-9 for r in results if not math.isnan(r[name]))
        tag = (" (uses target labels)" if name == "oracle" else
               f"{_tracking(results, name):>+14.2f}" if name in SELECTIONS else "")
        lines.append(f"{name:<12} {pct(mean):>8} {100 * (mean - last):>+8.1f} {100 * regret:>17.1f} "
                     f"{at_least:>7}/{len(values):<4} {exact:>9}/{len(values):<4}{tag}")
    return lines


def _tracking(results: list[dict[str, Any]], name: str) -> float:
    """Mean Spearman correlation, over the runs, between a score (best = high) and target accuracy per epoch."""
    from scipy.stats import spearmanr

    if name not in SELECTIONS:
        return float("nan")
    sign = 1.0 if SELECTIONS[name] is max else -1.0
    values = []
    for r in results:
        scores, accuracy = r.get(f"{name}_values"), r["target_accuracy"]
        if scores is None or len(set(accuracy)) < 2 or len(set(scores)) < 2:
            continue  # constant: no ranking to compare
        values.append(spearmanr([sign * v for v in scores], accuracy).statistic)
    values = [v for v in values if not math.isnan(v)]
    return sum(values) / len(values) if values else float("nan")


def method_table(results: dict[str, dict[str, Any]], published: dict[str, float] | None = None) -> list[str]:
    """One row per method: accuracies (± std over seeds when the results carry ``*_std``, and points vs
    source-only), published, time and A-distance."""
    base = results.get("source-only")
    width = 18 if any(f"{name}_std" in r for r in results.values() for name in COLUMNS) else 14
    header = f"{'method':<12}" + "".join(f"{name:>{width}}" for name in COLUMNS[:-1]) + f"{'oracle*':>{width}}"
    if published is not None:
        header += f"{'TLlib*':>14}"
    header += f"{'s/iter':>16}{'A-dist before->after':>23}"
    lines = [header]
    for method, r in results.items():
        line = f"{method:<12}" + "".join(
            f"{signed(r[name], base[name] if base else None, r.get(f'{name}_std')):>{width}}" for name in COLUMNS)
        if published is not None:
            value = published.get(method)
            line += f"{signed(value, published.get('source-only')) if value is not None else 'n/a':>14}"
        ratio = r["seconds_per_iter"] / base["seconds_per_iter"] if base else float("nan")
        line += f"{r['seconds_per_iter']:>9.4f} ({ratio:.1f}x)"
        line += f"{r['pad_before']:>13.2f} -> {r['pad_after']:.2f}"
        lines.append(line)
    return lines
