"""The cost of a training step of a small model: ``cvtransfer fit`` and ``cvtransfer adapt --method dann``
against plain PyTorch loops, ms per iteration.

LeNet at 28 px with a 256-wide bottleneck, a 1024-1024 domain discriminator behind a gradient reversal
layer, SGD (momentum 0.9), batch 32 source + 32 target images, no augmentation; MNIST -> USPS from
../shared (converted once into PNG class folders, as ``benchmarks.digits`` does), else the embedded demo
domains. The baselines are written as the seeds write them, with only the network's layers taken from
cvtransfer (the same LeNet + bottleneck + head):

- **plain loop, tensors in memory**: every image decoded and transformed once into a ``TensorDataset``,
  two shuffled ``DataLoader``s, the DANN loss written out: the limit a Python training loop can reach;
- **plain loop, ImageFolder**: torchvision ``ImageFolder`` datasets (PNG decoded per sample every time),
  as TLlib's digits example reads them.

``fit`` is the same without the target batch and the discriminator (LeNet + bottleneck + head on the
source images, cross-entropy, batch --batch-size x 2 so that a step sees as many images as DANN's).

cvtransfer's time is read by a callback from the end of the first training step of the second epoch to
the end of its last (validation excluded); the plain loops are timed the same way, after a warm-up.

    python -m benchmarks.step_cost [--iters 200] [--batch-size 32] [--in-memory auto|off]
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torchvision import transforms
from torchvision.datasets import ImageFolder

import cvtransfer
from benchmarks.common import SHARED
from cvtransfer.models.factory import build_model

WARM_UP = 10


class GradientReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, coeff: float) -> torch.Tensor:
        ctx.coeff = coeff
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.coeff * grad, None


def domains(work: Path) -> tuple[Path, Path]:
    """(source train folder, target train folder): MNIST -> USPS when ../shared is there, else the demo."""
    if (SHARED / "digits").is_dir():
        from benchmarks.digits import convert

        convert(work / "digits")
        return work / "digits" / "mnist" / "train", work / "digits" / "usps" / "train"
    from cvtransfer.data.demo import make_demo_domains

    made = make_demo_domains(work / "demo")
    return made["source"], made["target"]


def plain_dann(source: Any, target: Any, iters: int, batch: int, lr: float) -> float:
    """Seconds per iteration of a hand-written DANN loop over two datasets."""
    pl.seed_everything(0, verbose=False)
    model = build_model("lenet", "none", 10, 28, bottleneck_dim=256).model
    discriminator = nn.Sequential(nn.Linear(256, 1024), nn.BatchNorm1d(1024), nn.ReLU(),
                                  nn.Linear(1024, 1024), nn.BatchNorm1d(1024), nn.ReLU(), nn.Linear(1024, 1))
    optimizer = torch.optim.SGD([*model.parameters(), *discriminator.parameters()], lr=lr, momentum=0.9,
                                weight_decay=1e-3)
    loaders = [itertools.cycle(DataLoader(d, batch_size=batch, shuffle=True, drop_last=True))
               for d in (source, target)]
    domain_labels = torch.cat([torch.ones(batch), torch.zeros(batch)])
    model.train()
    start = 0.0
    for step in range(iters + WARM_UP):
        if step == WARM_UP:
            start = time.perf_counter()
        (x_s, y_s), (x_t, _) = next(loaders[0]), next(loaders[1])
        features = model.embed(torch.cat([x_s, x_t]))
        logits = model.classify(features[:batch])
        coeff = 2.0 / (1.0 + torch.exp(torch.tensor(-10.0 * step / (iters + WARM_UP)))).item() - 1.0
        domain = discriminator(GradientReverse.apply(features, coeff)).view(-1)
        loss = (nn.functional.cross_entropy(logits, y_s)
                + nn.functional.binary_cross_entropy_with_logits(domain, domain_labels))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return (time.perf_counter() - start) / iters


def plain_fit(source: Any, iters: int, batch: int, lr: float) -> float:
    """Seconds per iteration of a hand-written supervised loop over one dataset."""
    pl.seed_everything(0, verbose=False)
    model = build_model("lenet", "none", 10, 28, bottleneck_dim=256).model
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-3)
    loader = itertools.cycle(DataLoader(source, batch_size=batch, shuffle=True, drop_last=True))
    model.train()
    start = 0.0
    for step in range(iters + WARM_UP):
        if step == WARM_UP:
            start = time.perf_counter()
        x, y = next(loader)
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return (time.perf_counter() - start) / iters


def in_memory(folder: Path, transform: Any) -> TensorDataset:
    images = ImageFolder(str(folder), transform)
    pairs = [images[i] for i in range(len(images))]
    return TensorDataset(torch.stack([x for x, _ in pairs]), torch.tensor([y for _, y in pairs]))


class StepTimer(pl.Callback):
    """Times of the end of every training step of the second epoch."""

    def __init__(self) -> None:
        self.ends: list[float] = []

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.current_epoch == 1:
            self.ends.append(time.perf_counter())

    def seconds_per_iteration(self) -> float:
        return (self.ends[-1] - self.ends[0]) / (len(self.ends) - 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=200, help="timed iterations")
    parser.add_argument("--batch-size", type=int, default=32, help="per domain")
    parser.add_argument("--in-memory", default="auto", choices=["auto", "on", "off"], help="cvtransfer's --in-memory")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cvt-bench-"))
    source, target = domains(work)
    pre = build_model("lenet", "none", 10, 28).preprocessing
    transform = transforms.Compose([transforms.Resize(28), transforms.CenterCrop(28),
                                    transforms.ToTensor(), transforms.Normalize(pre.mean, pre.std)])
    common = dict(backbone="lenet", weights="none", image_size=28, augment="none", num_workers=0, accelerator="cpu",
                  optimizer="sgd", lr=0.01, weight_decay=1e-3, scheduler="none", bottleneck_dim=256, progress=False,
                  report=False, in_memory=args.in_memory)
    held = in_memory(source, transform), in_memory(target, transform)
    files = ImageFolder(str(source), transform), ImageFolder(str(target), transform)
    batch = args.batch_size
    print(f"\nLeNet 28 px, {args.iters} timed iterations, {torch.get_num_threads()} torch threads, "
          f"{source.parent.name} -> {target.parent.name}")
    print(f"{'loop':<52}{'ms/iter':>9}{'vs tensors':>12}")

    timer = StepTimer()
    fit_rows = [("fit: plain loop, tensors in memory", plain_fit(held[0], args.iters, 2 * batch, 0.01)),
                ("fit: plain loop, ImageFolder (PNG per sample)", plain_fit(files[0], args.iters, 2 * batch, 0.01))]
    cvtransfer.fit(data=str(source), batch_size=2 * batch, epochs=2, out=str(work / "fit"),
                   callbacks=[timer], **common)
    steps = len(timer.ends)
    fit_rows.append((f"fit: cvtransfer fit (--in-memory {args.in_memory})", timer.seconds_per_iteration()))
    dann_rows = [("dann: plain loop, tensors in memory", plain_dann(*held, args.iters, batch, 0.01)),
                 ("dann: plain loop, ImageFolder (PNG per sample)", plain_dann(*files, args.iters, batch, 0.01))]
    timer = StepTimer()
    cvtransfer.adapt(data=str(source), target=str(target), method="dann", batch_size=batch, iters_per_epoch=args.iters,
                     epochs=2, out=str(work / "adapt"), callbacks=[timer], **common)
    dann_rows.append((f"dann: cvtransfer adapt --method dann (--in-memory {args.in_memory})",
                      timer.seconds_per_iteration()))
    for rows, label in ((fit_rows, f"batch {2 * batch}, cvtransfer's epoch: {steps} steps"),
                        (dann_rows, f"batch {batch} + {batch}")):
        print(f"-- {label}")
        for name, seconds in rows:
            print(f"{name:<52}{seconds * 1000:>9.1f}{seconds / rows[0][1]:>11.2f}x")


if __name__ == "__main__":
    main()
