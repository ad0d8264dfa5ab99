"""Do the transferability scores rank backbones as fine-tuning does, and how much cheaper are they?

Candidates: lenet and tinycnn pretrained here on different source tasks and for different numbers
of epochs (MNIST, MNIST-M, scikit-learn's 8x8 digits, MNIST with shuffled labels), plus both at
random initialisation (no source head: LEEP/NCE not available). Target: USPS, a few labelled
images per class. For every candidate, ``cvtransfer.rank(..., validate=True)`` computes the scores
from cold-cache features and a logistic probe; then every candidate is fine-tuned (full strategy)
on the same target training set. Prints each score's Kendall tau and weighted tau against the probe
accuracy and against the fine-tuned accuracy (both on the target val split), and the wall time of
scoring all candidates vs fine-tuning all of them.

    python -m benchmarks.ranking [--work DIR] [--source-images 4000] [--target-per-class 20]
                                 [--finetune-epochs 10]

Needs ../shared/data/digits (MNIST test split, MNIST-M test split, USPS); pretraining is not timed.
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import logging
import math
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

import cvtransfer
from benchmarks.common import SHARED
from cvtransfer.scores.transferability import SCORES
from cvtransfer.workflows.rank import rank_correlations, ranking_table

DIGITS = SHARED / "digits"
SIZE = 28  # lenet's input size
# once the report issue lands, fit writes report.html by default: not wanted for every run here


# -- the domains as class folders (the raw files are IDX / text rows / PNGs)
def _save(folder: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    """uint8 images (N, H, W[, 3]) -> folder/<label>/<i>.png at SIZE px."""
    for index, (image, label) in enumerate(zip(images, labels)):
        (folder / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).resize((SIZE, SIZE), Image.BILINEAR).save(folder / str(label) / f"{index:05d}.png")
    return folder


def _pick(labels: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    return np.sort(rng.permutation(len(labels))[:count])


def mnist(folder: Path, count: int, rng: np.random.Generator, shuffle_labels: bool = False) -> Path:
    """``count`` images of the MNIST test split (the only one available offline); optionally random labels."""
    with gzip.open(DIGITS / "mnist" / "t10k-images-idx3-ubyte.gz") as handle:
        images = np.frombuffer(handle.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(DIGITS / "mnist" / "t10k-labels-idx1-ubyte.gz") as handle:
        labels = np.frombuffer(handle.read(), np.uint8, offset=8)
    keep = _pick(labels, count, rng)
    labels = labels[keep]
    return _save(folder, images[keep], rng.permutation(labels) if shuffle_labels else labels)


def mnist_m(folder: Path, count: int, rng: np.random.Generator) -> Path:
    rows = [line.split() for line in (DIGITS / "mnist_m" / "mnist_m_test_labels.txt").read_text().splitlines()]
    keep = _pick(np.arange(len(rows)), count, rng)
    images = np.stack([np.asarray(Image.open(DIGITS / "mnist_m" / "mnist_m_test" / rows[i][0]).convert("RGB"))
                       for i in keep])
    return _save(folder, images, np.array([int(rows[i][1]) for i in keep]))


def sklearn_digits(folder: Path) -> Path:
    digits = load_digits()
    return _save(folder, (digits.images / 16.0 * 255).astype(np.uint8), digits.target)


def usps(folder: Path, train_per_class: int, val_per_class: int, rng: np.random.Generator) -> Path:
    """Target: USPS train split, ``train_per_class`` labelled images per class, ``val_per_class`` for val."""
    with gzip.open(DIGITS / "usps" / "zip.train.gz", "rt") as handle:
        rows = np.loadtxt(handle)
    labels, images = rows[:, 0].astype(int), ((rows[:, 1:].reshape(-1, 16, 16) + 1) * 127.5).astype(np.uint8)
    for split, start, count in (("train", 0, train_per_class), ("val", train_per_class, val_per_class)):
        keep = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[start:start + count] for c in range(10)])
        _save(folder / split, images[keep], labels[keep])
    return folder


# -- candidates
def pretrain(name: str, backbone: str, data: Path, epochs: int, work: Path) -> str:
    """A run folder pretrained on ``data`` (its classifier is the source head LEEP/NCE read)."""
    run = cvtransfer.fit(cvtransfer.Config(
        data=str(data), backbone=backbone, weights="none", image_size=SIZE, epochs=epochs, lr=2e-3, batch_size=64,
        augment="none", num_workers=0, progress=False, out=str(work / "sources" / name), report=False,
    ))
    print(f"  pretrained {name}: source val accuracy {run.history[-1]['val_accuracy']:.3f}", flush=True)
    return str(run.path)


def make_candidates(args: argparse.Namespace, work: Path) -> tuple[list[str], list[str]]:
    """(backbones, weights) lists, one entry per candidate, in the same order."""
    rng = np.random.default_rng(0)
    data = work / "data"
    sources = {
        "mnist": mnist(data / "mnist", args.source_images, rng),
        "mnist_m": mnist_m(data / "mnist_m", args.source_images // 2, rng),
        "sk_digits": sklearn_digits(data / "sk_digits"),
        "mnist_shuffled": mnist(data / "mnist_shuffled", args.source_images // 2, rng, shuffle_labels=True),
    }
    plan = [  # name, backbone, source, epochs
        ("lenet-mnist-e1", "lenet", "mnist", 1), ("lenet-mnist-e4", "lenet", "mnist", 4),
        ("tinycnn-mnist-e1", "tinycnn", "mnist", 1), ("tinycnn-mnist-e4", "tinycnn", "mnist", 4),
        ("tinycnn-mnistm-e3", "tinycnn", "mnist_m", 3), ("tinycnn-skdigits-e4", "tinycnn", "sk_digits", 4),
        ("tinycnn-shuffled-e3", "tinycnn", "mnist_shuffled", 3),
    ]
    backbones, weights = [], []
    for name, backbone, source, epochs in plan:
        backbones.append(backbone)
        weights.append(pretrain(name, backbone, sources[source], epochs, work))
    return backbones + ["tinycnn", "lenet"], weights + ["none", "none"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, help="working folder (default: a temporary one, removed at the end)")
    parser.add_argument("--source-images", type=int, default=4000)
    parser.add_argument("--target-per-class", type=int, default=20)
    parser.add_argument("--val-per-class", type=int, default=40)
    parser.add_argument("--finetune-epochs", type=int, default=10)
    args = parser.parse_args()
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")  # lightning's, once per run
    logging.getLogger("cvtransfer").setLevel(logging.WARNING)
    if not (DIGITS / "usps").is_dir():
        raise SystemExit(f"needs the digit datasets in {DIGITS}")
    work = args.work or Path(tempfile.mkdtemp(prefix="cvtransfer-ranking-"))
    print(f"pretraining the candidates on their source tasks (not timed) in {work}", flush=True)
    backbones, weights = make_candidates(args, work)
    target = usps(work / "data" / "usps", args.target_per_class, args.val_per_class, np.random.default_rng(1))
    base = cvtransfer.Config(data=str(target), image_size=SIZE, batch_size=64, augment="none", num_workers=0,
                             progress=False, cache_dir=str(work / "cache"), epochs=args.finetune_epochs, lr=2e-3,
                             report=False)
    shutil.rmtree(work / "cache", ignore_errors=True)  # cold cache: feature extraction is part of scoring

    pairs = ",".join(f"{b}={w}" for b, w in zip(backbones, weights))
    start = time.perf_counter()
    ranking = cvtransfer.rank(base.replace(backbones=",".join(backbones), weights=pairs, out=str(work / "rank")))
    scoring_seconds = time.perf_counter() - start  # features (cold) + every score, all candidates
    probed = cvtransfer.rank(base.replace(backbones=",".join(backbones), weights=pairs, out=str(work / "probed")),
                             validate=True)  # the probes reuse the cached features
    probe = {row.candidate.name: row.probe_accuracy for row in probed.rows}

    finetuned, finetune_seconds = {}, 0.0
    for row in ranking.rows:
        start = time.perf_counter()
        run = cvtransfer.fit(base.replace(backbone=row.candidate.backbone, weights=row.candidate.weights,
                                          strategy="full", out=str(work / "finetune" / row.candidate.name)))
        finetune_seconds += time.perf_counter() - start
        finetuned[row.candidate.name] = run.history[-1]["val_accuracy"]

    for row in ranking.rows:
        row.probe_accuracy = probe[row.candidate.name]
    print(f"\ntarget: USPS, {args.target_per_class} labelled images per class, {args.val_per_class} per class "
          f"for val; {len(ranking.rows)} candidates\n")
    print(ranking_table(ranking))
    print(f"\n{'candidate':<34}  probe acc  fine-tuned acc ({args.finetune_epochs} epochs, full)")
    for row in ranking.rows:
        print(f"{row.candidate.name:<34}  {probe[row.candidate.name]:>9.3f}  {finetuned[row.candidate.name]:>14.3f}")
    versus_probe = rank_correlations(ranking.rows)
    versus_finetune = rank_correlations([dataclasses.replace(row, probe_accuracy=finetuned[row.candidate.name])
                                         for row in ranking.rows])
    print(f"\n{'score':<8}  {'tau vs probe':>12}  {'wtau vs probe':>13}  {'tau vs fine-tune':>16}  "
          f"{'wtau vs fine-tune':>17}  candidates")
    for name in SCORES.names():
        p, f = versus_probe[name], versus_finetune[name]
        print(f"{name:<8}  {_fmt(p['kendall_tau']):>12}  {_fmt(p['weighted_tau']):>13}  "
              f"{_fmt(f['kendall_tau']):>16}  {_fmt(f['weighted_tau']):>17}  {p['candidates']:>10}")
    print(f"\nscoring all {len(ranking.rows)} candidates (features + 5 scores): {scoring_seconds:.1f}s; "
          f"fine-tuning all of them: {finetune_seconds:.1f}s; ratio {finetune_seconds / scoring_seconds:.1f}x")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


def _fmt(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:+.3f}"


if __name__ == "__main__":
    main()
