"""Fine-tuning throughput: a plain PyTorch loop vs ``cvtransfer fit --strategy full``, images per second.

Same model, data, transform (light augmentation), batch size, optimizer and data-loading workers.
Both run a train and a val phase per epoch; the first epoch is warm-up and not counted. On a GPU
cvtransfer adds its defaults (bf16 autocast, channels-last, pinned memory, loader workers) while the
plain loop stays in fp32, contiguous, as most hand-written loops are.

    python -m benchmarks.finetune_throughput [--data DIR] [--backbone resnet18] [--image-size 112] [--epochs 3]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch import nn

import cvtransfer
from benchmarks.common import default_image_folder
from cvtransfer.data.folders import discover
from cvtransfer.data.loaders import ImageDataset, default_workers, make_loader
from cvtransfer.data.transforms import eval_transform, train_transform
from cvtransfer.engine.devices import pick_device
from cvtransfer.models.factory import build_model


def plain_loop(config: cvtransfer.Config, data: Path) -> tuple[float, int]:
    """The hand-written baseline; returns (seconds for epochs 2.., training images per epoch)."""
    pl.seed_everything(config.seed, verbose=False)
    device = pick_device(config.accelerator)
    splits = discover(data, config.val_split, seed=config.seed)
    built = build_model(config.backbone, config.weights, len(splits.classes), config.image_size)
    model = built.model.to(device)
    workers = default_workers(config.num_workers)
    train = make_loader(ImageDataset(splits.train, train_transform(built.preprocessing, config.augment)),
                        config.batch_size, train=True, seed=config.seed, num_workers=workers)
    val = make_loader(ImageDataset(splits.val, eval_transform(built.preprocessing)), config.batch_size,
                      train=False, num_workers=workers)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    start = 0.0
    for epoch in range(config.epochs):
        if epoch == 1:
            start = time.perf_counter()
        model.train()
        for images, labels in train:
            images, labels = images.to(device), labels.to(device)
            loss = loss_fn(model(images), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            for images, _ in val:
                model(images.to(device))
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, len(train) * config.batch_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="cvt-bench-"))
    data = args.data or default_image_folder(work)
    config = cvtransfer.Config(
        data=str(data), backbone=args.backbone, weights="none", image_size=args.image_size, epochs=args.epochs,
        strategy="full", batch_size=args.batch_size, augment="light", scheduler="none", progress=False,
        out=str(work / "run"),
    )
    baseline_seconds, images = plain_loop(config, data)
    run = cvtransfer.fit(config)
    ours_seconds = sum(row["seconds"] for row in run.history[1:])
    timed_epochs = args.epochs - 1
    baseline_rate = images * timed_epochs / baseline_seconds
    ours_rate = images * timed_epochs / ours_seconds
    device = pick_device(config.accelerator)
    print(f"data: {data}  {args.backbone} at {args.image_size}px, batch {args.batch_size}, device {device}, "
          f"precision {run.config.precision} -> {cvtransfer.engine.trainer.resolve_precision(run.config.precision)}, "
          f"{timed_epochs} timed epochs of {images} training images (+ val)")
    print(f"{'method':<28} {'images/s':>9}")
    print(f"{'plain PyTorch loop':<28} {baseline_rate:>9.1f}")
    print(f"{'cvtransfer --strategy full':<28} {ours_rate:>9.1f}")
    print(f"throughput ratio (cvtransfer / plain): {ours_rate / baseline_rate:.2f}")


if __name__ == "__main__":
    main()
