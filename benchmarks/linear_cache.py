"""Feature extraction: the seeds' loop (frozen backbone recomputed every epoch) vs ``--strategy linear``.

Same data, same backbone, same preprocessing, same head, optimizer, LR, batch size and epochs (10).
The baseline is the loop of the article's feature-extraction code (PyTorch's transfer-learning
tutorial, "ConvNet as fixed feature extractor"): a train and a val phase every epoch, each sending
every image through the frozen backbone again. cvtransfer computes the features once (cold cache here) and
trains the head on them. Prints both validation accuracies and the wall-time ratio.

    python -m benchmarks.linear_cache [--data DIR] [--backbone resnet18] [--image-size N] [--weights PATH]

No ImageNet weights exist offline, so by default the backbone is first pretrained here on another
domain (Office-Caltech's caltech10 photographs when ../shared is there), which gives both methods
the same meaningful features; that pretraining is not part of the timing.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch import nn

import cvtransfer
from benchmarks.common import OFFICE_AMAZON, default_image_folder, timed
from cvtransfer.data.folders import discover
from cvtransfer.data.loaders import ImageDataset, make_loader
from cvtransfer.data.transforms import eval_transform
from cvtransfer.models.factory import build_model


def seeds_loop(config: cvtransfer.Config, data: Path) -> float:
    """The baseline: frozen backbone in the loop, features recomputed every epoch. Returns val accuracy."""
    pl.seed_everything(config.seed, verbose=False)
    splits = discover(data, config.val_split, seed=config.seed)
    built = build_model(config.backbone, config.weights, len(splits.classes), config.image_size)
    backbone, head = built.model.backbone.eval(), built.model.head
    for param in backbone.parameters():
        param.requires_grad_(False)
    transform = eval_transform(built.preprocessing)
    train = make_loader(ImageDataset(splits.train, transform), config.batch_size, train=True, seed=config.seed)
    val = make_loader(ImageDataset(splits.val, transform), config.batch_size, train=False)
    optimizer = torch.optim.AdamW(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(config.epochs):  # the train and val phases of every epoch, as in the tutorial loop
        for images, labels in train:
            with torch.no_grad():
                features = backbone(images)
            loss = loss_fn(head(features), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        correct = 0
        with torch.no_grad():
            for images, labels in val:
                correct += int((head(backbone(images)).argmax(1) == labels).sum())
    return correct / len(splits.val)


def pretrain(args: argparse.Namespace, work: Path) -> str:
    """Pretrain the backbone on another domain (not timed); return its weights file, or 'none'."""
    source = args.pretrain_on or (OFFICE_AMAZON.parent / "caltech10")
    if not source.is_dir():
        print("no pretraining data: the backbone keeps random weights (accuracies will be low)")
        return "none"
    run = cvtransfer.fit(cvtransfer.Config(
        data=str(source), backbone=args.backbone, weights="none", image_size=args.image_size,
        epochs=args.pretrain_epochs, lr=1e-3, batch_size=32, num_workers=0, progress=False, out=str(work / "pretrain"),
    ))
    print(f"pretrained {args.backbone} on {source}: val accuracy {run.metrics['accuracy']:.3f}")
    return str(run.path / "model.safetensors")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="class folders (default: Office-Caltech amazon, else demo data)")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--weights", help="local weights file (default: pretrain on --pretrain-on)")
    parser.add_argument("--pretrain-on", type=Path, help="class folders to pretrain the backbone on first")
    parser.add_argument("--pretrain-epochs", type=int, default=3)
    parser.add_argument("--image-size", type=int, help="default: the backbone's own input size")
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="cvt-bench-"))
    data = args.data or default_image_folder(work)
    weights = args.weights or pretrain(args, work)
    config = cvtransfer.Config(
        data=str(data), backbone=args.backbone, weights=weights, image_size=args.image_size, epochs=args.epochs,
        strategy="linear", scheduler="none", lr=1e-3, batch_size=32, augment="none", num_workers=0,
        progress=False, cache_dir=str(work / "cache"), out=str(work / "run"), accelerator="cpu",
    )
    times: dict[str, float] = {}
    with timed(times, "baseline"):
        baseline_accuracy = seeds_loop(config, data)
    with timed(times, "cvtransfer"):
        run = cvtransfer.fit(config)
    ours_accuracy = run.history[-1]["val_accuracy"]
    print(f"data: {data}  backbone: {args.backbone} (weights {weights}) at {run.preprocessing.input_size}px, "
          f"{args.epochs} epochs, {len(run.splits().train)} train / {len(run.splits().val)} val images")
    print(f"{'method':<40} {'val accuracy':>12} {'wall time':>10}")
    print(f"{'seeds loop (backbone every epoch)':<40} {baseline_accuracy:>12.3f} {times['baseline']:>9.1f}s")
    print(f"{'cvtransfer --strategy linear (cold cache)':<40} {ours_accuracy:>12.3f} {times['cvtransfer']:>9.1f}s")
    print(f"speed-up: {times['baseline'] / times['cvtransfer']:.1f}x   accuracy difference: "
          f"{ours_accuracy - baseline_accuracy:+.3f}")


if __name__ == "__main__":
    main()
