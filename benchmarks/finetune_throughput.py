"""Fine-tuning throughput: a plain PyTorch loop vs ``cvtransfer fit --strategy full``, images per second.

Same model, data (cvtransfer's split of it, as train/ val/ folders), transform (light augmentation), batch
size, optimizer and data-loading workers; the plain loop is written as the seeds write it (torchvision
``ImageFolder`` and transforms, plain ``DataLoader``s).
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
from torch.utils.data import DataLoader
from torchvision import transforms
from torchvision.datasets import ImageFolder

import cvtransfer
from benchmarks.adaptation import shown_path
from benchmarks.common import default_image_folder
from cvtransfer.data.folders import discover
from cvtransfer.data.loaders import default_workers
from cvtransfer.engine.devices import pick_device
from cvtransfer.models.factory import build_model


def split_folders(config: cvtransfer.Config, data: Path, root: Path) -> Path:
    """root/train|val/<class>/ symlinks of cvtransfer's own split of ``data``: both loops see the same images."""
    splits = discover(data, config.val_split, seed=config.seed)
    for split, samples in (("train", splits.train), ("val", splits.val)):
        for path, label in samples:
            folder = root / split / splits.classes[label]
            folder.mkdir(parents=True, exist_ok=True)
            (folder / Path(path).name).symlink_to(Path(path).resolve())
    return root


def plain_loop(config: cvtransfer.Config, data: Path) -> tuple[float, int]:
    """The hand-written baseline, as the seeds write it: torchvision ImageFolder and transforms, plain
    DataLoaders, fp32; returns (seconds for epochs 2.., training images per epoch)."""
    pl.seed_everything(config.seed, verbose=False)
    device = pick_device(config.accelerator)
    built = build_model(config.backbone, config.weights, len(ImageFolder(str(data / "train")).classes),
                        config.image_size)
    model = built.model.to(device)
    pre = built.preprocessing
    normalise = [transforms.ToTensor(), transforms.Normalize(pre.mean, pre.std)]
    train_tf = transforms.Compose([transforms.RandomResizedCrop(pre.input_size, scale=(0.6, 1.0)),
                                   transforms.RandomHorizontalFlip(), *normalise])
    val_tf = transforms.Compose([transforms.Resize(int(pre.input_size / pre.crop_pct)),
                                 transforms.CenterCrop(pre.input_size), *normalise])
    workers = default_workers(config.num_workers)
    train = DataLoader(ImageFolder(str(data / "train"), train_tf), batch_size=config.batch_size, shuffle=True,
                       num_workers=workers, drop_last=True)
    val = DataLoader(ImageFolder(str(data / "val"), val_tf), batch_size=config.batch_size, num_workers=workers)
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
    source = args.data or default_image_folder(work)
    config = cvtransfer.Config(
        data=str(source), backbone=args.backbone, weights="none", image_size=args.image_size, epochs=args.epochs,
        strategy="full", batch_size=args.batch_size, augment="light", scheduler="none", progress=False, report=False,
        out=str(work / "run"),
    )
    data = split_folders(config, source, work / "split")
    config = config.replace(data=str(data))
    baseline_seconds, images = plain_loop(config, data)
    run = cvtransfer.fit(config)
    ours_seconds = sum(row["seconds"] for row in run.history[1:])
    timed_epochs = args.epochs - 1
    baseline_rate = images * timed_epochs / baseline_seconds
    ours_rate = images * timed_epochs / ours_seconds
    device = pick_device(config.accelerator)
    print(f"data: {shown_path(source)}  {args.backbone} at {args.image_size}px, batch {args.batch_size}, device {device}, "
          f"precision {run.config.precision} -> {cvtransfer.engine.trainer.resolve_precision(run.config.precision)}, "
          f"{timed_epochs} timed epochs of {images} training images (+ val)")
    print(f"{'method':<28} {'images/s':>9}")
    print(f"{'plain PyTorch loop':<28} {baseline_rate:>9.1f}")
    print(f"{'cvtransfer --strategy full':<28} {ours_rate:>9.1f}")
    print(f"throughput ratio (cvtransfer / plain): {ours_rate / baseline_rate:.2f}")


if __name__ == "__main__":
    main()
