"""Domain adaptation on digits, TLlib's protocol: every method on MNIST->USPS (and USPS->MNIST,
MNIST->MNIST-M), LeNet from scratch, against source-only run the same way and TLlib's published table.

Data (only what is available offline, see ../shared/data/digits/README.txt), converted once into PNG
class folders under --work/data:
    MNIST   = the 10,000 MNIST *test* images (the train images are not available), a fixed seeded
              split 8,000 train (source, or unlabelled target) / 2,000 held-out target test
    USPS    = the standard 7,291 train / 2,007 test split, 16x16 (resized to 28 by the pipeline)
    MNIST-M = the 9,001 MNIST-M *test* images, seeded split 7,201 / 1,800
Source = the train part of the source domain (10% of it held out as source validation, for val_dev);
target = the train part of the target domain, unlabelled; target accuracy = the target test part.

Training, as TLlib's digits scripts where affordable on 2 CPU cores: lenet, weights none, 28 px, no
augmentation, sgd (momentum 0.9) lr 0.01 (0.1 for USPS->MNIST) with the inv schedule, weight decay
1e-3, bottleneck 256, trade-off 1; far fewer iterations than TLlib (2,500 x 20 epochs x batch 128):
the output says how many. Accuracy read from history.csv: last epoch, the epoch picked by each
unsupervised score (snd, entropy, dev; no target label used), and the oracle epoch (best target test
accuracy = TLlib's own selection, labelled oracle*). The TLlib column is their published oracle number.

    python -m benchmarks.digits [--quick] [--tasks mnist-usps usps-mnist mnist-mnistm] [--epochs E]
                                [--iters I] [--batch-size B] [--seeds 0 1 2] [--work DIR]
                                [--threads T] [--source-fraction F] [--name NAME] [--report-only]

Writes benchmarks/digits.log (the tables) and benchmarks/results/digits.json (raw numbers).
"""

from __future__ import annotations

import argparse
import gzip
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from benchmarks.adaptation import (
    METHODS,
    finished,
    mean_and_std,
    method_table,
    pct,
    quiet,
    run_method,
    run_minutes,
    selection_lines,
    write_outputs,
)
from benchmarks.common import SHARED

DIGITS = SHARED / "digits"
HERE = Path(__file__).resolve().parent
LOG, RESULTS = HERE / "digits.log", HERE / "results" / "digits.json"
SPLIT_SEED = 0
TLLIB_ITERATIONS, TLLIB_BATCH = 2500 * 20, 128

# TLlib's published accuracy (%, oracle selection), ../shared/benchmarks/tllib_digits.md (Oct 2021)
PUBLISHED = {
    "mnist-usps": {"source-only": 82.1, "dann": 91.7, "dan": 86.0, "adda": 94.5, "cdan": 96.0, "mcc": 95.1},
    "usps-mnist": {"source-only": 74.6, "dann": 95.2, "dan": 89.5, "adda": 98.3, "cdan": 97.7, "mcc": 94.6},
    "mnist-mnistm": {},
}
TASKS = {  # name: (source folder, target folder with train/ and test/, base lr as TLlib)
    "mnist-usps": ("mnist/train", "usps", 0.01),
    "usps-mnist": ("usps/train", "mnist", 0.1),
    "mnist-mnistm": ("mnist/train", "mnist_m", 0.01),
}


# -- conversion of the raw files into class folders (once)
def _save(folder: Path, images: np.ndarray, labels: np.ndarray) -> None:
    for index, (image, label) in enumerate(zip(images, labels)):
        (folder / str(int(label))).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / str(int(label)) / f"{index:05d}.png")


def _split(images: np.ndarray, labels: np.ndarray, train: int, folder: Path) -> dict[str, int]:
    """A fixed seeded split into folder/train (``train`` images) and folder/test (the rest)."""
    order = np.random.default_rng(SPLIT_SEED).permutation(len(labels))
    _save(folder / "train", images[order[:train]], labels[order[:train]])
    _save(folder / "test", images[order[train:]], labels[order[train:]])
    return {"train": train, "test": len(labels) - train}


def subset(data: Path, source: str, fraction: float) -> str:
    """A seeded ``fraction`` of each class of data/``source`` as symlinks in a sibling folder; its name."""
    name = f"{source}_{fraction:g}"
    if not (data / name).is_dir():
        for class_dir in sorted(p for p in (data / source).iterdir() if p.is_dir()):
            files = sorted(class_dir.iterdir())
            keep = sorted(np.random.default_rng(SPLIT_SEED).permutation(len(files))[:max(1, round(fraction * len(files)))])
            (data / name / class_dir.name).mkdir(parents=True)
            for index in keep:
                (data / name / class_dir.name / files[index].name).symlink_to(files[index].resolve())
    return name


def convert(data: Path) -> dict[str, Any]:
    """MNIST / USPS / MNIST-M as train/ and test/ PNG class folders under ``data`` (skipped when done)."""
    ready = data / "READY.json"
    if ready.is_file():
        return json.loads(ready.read_text())
    counts: dict[str, Any] = {}
    with gzip.open(DIGITS / "mnist" / "t10k-images-idx3-ubyte.gz") as handle:
        images = np.frombuffer(handle.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(DIGITS / "mnist" / "t10k-labels-idx1-ubyte.gz") as handle:
        labels = np.frombuffer(handle.read(), np.uint8, offset=8)
    counts["mnist"] = _split(images, labels, 8000, data / "mnist")
    for split, file in (("train", "zip.train.gz"), ("test", "zip.test.gz")):
        with gzip.open(DIGITS / "usps" / file, "rt") as handle:
            rows = np.loadtxt(handle)
        pixels = np.clip(np.round((rows[:, 1:].reshape(-1, 16, 16) + 1) * 127.5), 0, 255).astype(np.uint8)
        _save(data / "usps" / split, pixels, rows[:, 0].astype(int))
        counts.setdefault("usps", {})[split] = len(rows)
    rows = [line.split() for line in (DIGITS / "mnist_m" / "mnist_m_test_labels.txt").read_text().splitlines()]
    images = np.stack([np.asarray(Image.open(DIGITS / "mnist_m" / "mnist_m_test" / name).convert("RGB"))
                       for name, _ in rows])
    counts["mnist_m"] = _split(images, np.array([int(label) for _, label in rows]), 7201, data / "mnist_m")
    counts["split_seed"] = SPLIT_SEED
    ready.write_text(json.dumps(counts))
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="MNIST->USPS, 2 epochs of 10 iterations: a smoke run")
    parser.add_argument("--tasks", nargs="+", default=["mnist-usps", "usps-mnist"], choices=list(TASKS),
                        help="mnist-mnistm is optional (another ~35 min)")
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    # sized on 2 shared CPU cores (~0.23 s per iteration of batch 32 + 32): all 8 methods of one task ~35 min
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--iters", type=int, default=90, help="iterations per epoch")
    parser.add_argument("--batch-size", type=int, default=32, help="per domain")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2,
                        help="torch CPU threads; two processes of 1 thread (other --seeds) train faster than one of 2")
    parser.add_argument("--source-fraction", type=float, default=1.0,
                        help="train on this seeded share of each class of the source's train images (does the "
                             "source's size matter? MNIST's 60,000 train images are not available offline)")
    parser.add_argument("--name", help="write benchmarks/digits_NAME.log and results/digits_NAME.json (another sizing "
                        "beside the default tables)")
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing: tabulate the finished runs of --tasks/--seeds (a seed is left out of a "
                             "task until all its methods have finished)")
    parser.add_argument("--work", type=Path, default=Path.home() / ".cache" / "cvtransfer" / "benchmarks" / "digits",
                        help="converted data (data/) and run folders (runs/; finished runs with the same sizing "
                             "are reused, so an interrupted benchmark continues)")
    args = parser.parse_args()
    if not (DIGITS / "usps").is_dir() or not (DIGITS / "mnist").is_dir():
        raise SystemExit(f"digits needs the digit datasets in {DIGITS} (../shared/data)")
    if args.quick:
        args.epochs, args.iters, args.batch_size, args.tasks = 2, 10, 32, ["mnist-usps"]
    if "source-only" not in args.methods:
        args.methods = ["source-only", *args.methods]
    quiet()
    torch.set_num_threads(args.threads)
    data = args.work / "data"
    start = time.perf_counter()
    counts = convert(data)
    print(f"data in {data} ({time.perf_counter() - start:.0f}s): {counts}", flush=True)
    sizing = f"e{args.epochs}-i{args.iters}-b{args.batch_size}"
    if args.source_fraction < 1.0:
        sizing += f"-source{args.source_fraction:g}"
    iterations = args.epochs * args.iters
    print(f"digits: {args.epochs} epochs x {args.iters} iterations x batch {args.batch_size} per domain = "
          f"{iterations} iterations per run ({iterations * args.batch_size} source images seen); TLlib: "
          f"{TLLIB_ITERATIONS} x {TLLIB_BATCH}, i.e. we train "
          f"{TLLIB_ITERATIONS * TLLIB_BATCH / (iterations * args.batch_size):.0f}x less", flush=True)

    raw: dict[str, Any] = {}
    started = time.perf_counter()
    for task in args.tasks:
        source, target, lr = TASKS[task]
        if args.source_fraction < 1.0:
            source = subset(data, source, args.source_fraction)
        for seed in args.seeds:
            key = f"{task}/seed{seed}"
            raw[key] = {}
            for method in args.methods:
                out = args.work / "runs" / sizing / f"{task}-seed{seed}" / method.replace("+", "_")
                if args.report_only and not finished(out):
                    del raw[key]
                    print(f"  {task} seed {seed}: {method} not finished, seed left out", flush=True)
                    break
                r = run_method(out, args.iters, data=str(data / source), target=str(data / target), method=method,
                               backbone="lenet", weights="none", image_size=28, augment="none", optimizer="sgd",
                               lr=lr, weight_decay=1e-3, scheduler="inv", bottleneck_dim=256, trade_off=1.0,
                               epochs=args.epochs, iters_per_epoch=args.iters, batch_size=args.batch_size,
                               source_epochs=max(1, args.epochs // 3), val_split=0.1, select_by="none", seed=seed,
                               num_workers=args.num_workers, accelerator="cpu", progress=False,
                               selection_samples=1000, shift_samples=1000)
                raw[key][method] = r
                print(f"  {task} seed {seed} {method:<11} last {pct(r['last'])}  oracle {pct(r['oracle'])}  "
                      f"{r['wall_seconds']:.0f}s  ({(time.perf_counter() - started) / 60:.1f} min so far)", flush=True)
        done = [t for t in args.tasks[:args.tasks.index(task) + 1] if seeds_of(raw, t)]
        if done:  # nothing to tabulate yet (--report-only before any seed finished): keep the old log
            write(raw, args, counts, time.perf_counter() - started, done, final=done == args.tasks)


def write(raw: dict[str, Any], args: argparse.Namespace, counts: dict[str, Any], total: float, done: list[str],
          final: bool) -> None:
    """Print the tables of the tasks done so far and write the log and the JSON (after every task)."""
    lines = report(raw, args, total, done)
    if not final:
        lines.insert(0, f"[PARTIAL: {len(done)} of {len(args.tasks)} tasks done]")
    log, results = (LOG, RESULTS) if not args.name else (LOG.with_name(f"digits_{args.name}.log"),
                                                        RESULTS.with_name(f"digits_{args.name}.json"))
    write_outputs(lines, log, results, args, tasks_done=done, data=counts, total_seconds=total, results=raw)


def seeds_of(raw: dict[str, Any], task: str) -> list[int]:
    """The seeds of ``task`` whose runs are all there."""
    return [int(key.split("/seed")[1]) for key in raw if key.split("/")[0] == task]


def report(raw: dict[str, Any], args: argparse.Namespace, total: float, tasks: list[str]) -> list[str]:
    iterations = args.epochs * args.iters
    all_runs = [raw[f"{task}/seed{s}"][m] for task in tasks for s in seeds_of(raw, task) for m in args.methods]
    lines = [f"Digits (TLlib protocol on the data available offline), lenet from scratch at 28 px, sgd inv, wd 1e-3, "
             f"bottleneck 256, trade-off 1; {args.epochs} epochs x {args.iters} iterations x batch {args.batch_size} "
             f"= {iterations * args.batch_size} source images per run, "
             f"{TLLIB_ITERATIONS * TLLIB_BATCH / (iterations * args.batch_size):.0f}x fewer than TLlib "
             f"({TLLIB_ITERATIONS} x {TLLIB_BATCH}); runs took "
             f"{run_minutes(all_runs):.1f} min of wall time on a shared 2-core CPU machine"
             + (" [QUICK smoke run]" if args.quick else ""),
             "MNIST = 8,000 of the MNIST test images (train images unavailable offline); target test sets: USPS test "
             "2,007 / MNIST held-out 2,000 / MNIST-M held-out 1,800.",
             "Accuracy % on the target test set, mean±std over the seeds (points vs source-only of the same seeds). last / snd / entropy / dev: "
             "no target label used; oracle* = best epoch by target test accuracy, TLlib's selection; TLlib* = their "
             "published (oracle) figure (points vs their source-only).",
             "s/iter: training seconds (incl. per-epoch validation; adda incl. its source stage) per iteration, x "
             "source-only (noisy when seeds ran as parallel processes). A-dist: proxy A-distance of the backbone features "
             "before -> after training."]
    for task in tasks:
        seeds = seeds_of(raw, task)
        results = {m: mean_and_std([raw[f"{task}/seed{s}"][m] for s in seeds]) for m in args.methods}
        minutes = run_minutes([raw[f"{task}/seed{s}"][m] for s in seeds for m in args.methods])
        lines += ["", f"{task} (lr {TASKS[task][2]}; seeds {' '.join(map(str, seeds))}; all methods took "
                      f"{minutes:.1f} min)"]
        lines += method_table(results, PUBLISHED[task] and {k: v / 100 for k, v in PUBLISHED[task].items()})
    runs = [raw[f"{task}/seed{s}"][m] for task in tasks for s in seeds_of(raw, task) for m in args.methods]
    lines += ["", "Unsupervised selection vs the oracle, over all runs above (points)"] + selection_lines(runs)
    return lines


if __name__ == "__main__":
    main()
