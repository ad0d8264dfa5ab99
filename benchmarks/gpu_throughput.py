"""GPU fine-tuning throughput: the seeds' plain loop vs ``cvtransfer fit`` vs the compute and data ceilings.

Per backbone (random init, 10-class head), in one process: the loop the seeds write (ImageFolder, crop+flip,
plain DataLoader, fp32, AdamW); ``cvtransfer.fit(strategy="full")`` with its defaults (bf16 autocast and
channels-last on a GPU); the same model on one batch already on the device (fp32, bf16+channels-last, and
torch.compile'd), with FlopCounterMode's FLOPs per step against the bf16 matmul peak measured here. Once: the
seeds' DataLoader alone (no model). First epoch = warm-up. Without --data, random 300x300 JPEGs are made.

    python -m benchmarks.gpu_throughput [--data DIR] [--backbones resnet50,vit_small_patch16_224]
        [--batch-size 128] [--epochs 4] [--workers N] [--image-size 224] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import timm
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode
from torchvision import datasets, transforms

import cvtransfer
from cvtransfer.data.loaders import drop_last_for
from cvtransfer.engine.trainer import resolve_precision

CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")
WARMUP_STEPS, TIMED_STEPS = (10, 30) if CUDA else (1, 2)  # a CPU run only checks the script
LEGEND = """includes (all: epochs 2.. or steps after warm-up, clock read after a device sync):
  seeds loop: DataLoader (workers restarted each epoch) + fp32 fwd/bwd/AdamW, train only, no val
  cvtransfer train phase: epoch start to val start; images per epoch from splits.json (drop_last)
  cvtransfer history.csv epoch: its `seconds` column = train + val phase + best-checkpoint save
  ceilings: fwd/bwd/AdamW on one random batch already on the device, no data loading
  data loading only: decode + augment + collate + pin + copy to the device, no model
  TFLOP/s: FlopCounterMode FLOPs of one fwd+bwd per image x images/s; % peak: of the bf16 matmul peak"""


def say(message: str) -> None:
    print(message, flush=True)


def sync() -> None:
    if CUDA:
        torch.cuda.synchronize()


def random_folder(root: Path, per_class: int, classes: int = 10, size: int = 300) -> Path:
    """``classes`` folders of ``per_class`` random-noise JPEGs (size x size), like Office-Caltech's."""
    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / f"class{c}" / f"{i}.jpg", quality=90)
    return root


def seeds_loader(data: Path, size: int, batch_size: int, workers: int) -> DataLoader:
    """The DataLoader as the seeds write it: ImageFolder, RandomResizedCrop+flip, fp32 tensors."""
    transform = transforms.Compose([
        transforms.RandomResizedCrop(size), transforms.RandomHorizontalFlip(), transforms.ToTensor(),
        transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    loader = DataLoader(datasets.ImageFolder(str(data), transform), batch_size=batch_size, shuffle=True,
                        num_workers=workers, pin_memory=CUDA, drop_last=True)
    if len(loader) == 0:
        raise SystemExit(f"{len(loader.dataset)} images give no batch of {batch_size}: lower --batch-size")
    return loader


def create(name: str, size: int, classes: int) -> nn.Module:
    """timm model with random weights; ``img_size`` only off the default size, where accepted (ViTs)."""
    if size != 224:
        try:
            return timm.create_model(name, num_classes=classes, img_size=size)
        except TypeError:
            pass
    return timm.create_model(name, num_classes=classes)


def epoch_rate(epochs: int, run_epoch: Callable[[], int], label: str) -> float:
    """Images/s over epochs 2.. of ``run_epoch`` (which returns the images it processed)."""
    images, seconds = 0, 0.0
    for epoch in range(epochs):
        start = time.perf_counter()
        count = run_epoch()
        sync()
        took = time.perf_counter() - start
        warm = " (warm-up)" if epoch == 0 else ""
        say(f"  {label} epoch {epoch + 1}/{epochs}: {count} images in {took:.2f}s{warm}")
        if epoch > 0:
            images, seconds = images + count, seconds + took
    return images / seconds


def data_ceiling(loader: DataLoader, epochs: int) -> float:
    """Images/s of iterating the seeds' DataLoader alone (decode + augment + collate + pin + copy)."""
    return epoch_rate(epochs, lambda: sum(x.to(DEVICE).shape[0] for x, _ in loader), "data loading only")


def seeds_loop(name: str, loader: DataLoader, size: int, epochs: int) -> float:
    """Train-only images/s of the seeds' plain fp32 loop."""
    torch.manual_seed(0)
    model = create(name, size, len(loader.dataset.classes)).to(DEVICE).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()

    def run_epoch() -> int:
        count = 0
        for images, labels in loader:
            images, labels = images.to(DEVICE), labels.to(DEVICE)
            loss = loss_fn(model(images), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            count += images.shape[0]
        return count
    return epoch_rate(epochs, run_epoch, "seeds loop")


class TrainPhaseTimer(pl.Callback):
    """Seconds of each epoch's training phase alone: epoch start to validation start, synchronised."""

    def __init__(self) -> None:
        self.seconds: dict[int, float] = {}
        self._start = 0.0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        sync()
        self._start = time.perf_counter()

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.on_train_epoch_end(trainer, pl_module)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:  # the first of validation start and epoch end counts
            sync()
            self.seconds.setdefault(trainer.current_epoch, time.perf_counter() - self._start)


def cvtransfer_fit(name: str, data: Path, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """images/s of ``cvtransfer.fit``: its train phase alone, and history.csv's epoch seconds."""
    config = cvtransfer.Config(
        data=str(data), backbone=name, weights="none", image_size=args.image_size, strategy="full",
        epochs=args.epochs, batch_size=args.batch_size, augment="light", scheduler="none", progress=False,
        report=False, num_workers=args.workers, val_split=0.1, out=str(out))
    timer = TrainPhaseTimer()
    run = cvtransfer.fit(config, callbacks=[timer])
    splits = json.loads((run.path / "splits.json").read_text())
    n_train, batch = len(splits["train"]), args.batch_size
    per_epoch = n_train // batch * batch if drop_last_for(n_train, batch) else n_train
    epoch_seconds = [row["seconds"] for row in run.history[1:]]
    train_seconds = [timer.seconds[epoch] for epoch in sorted(timer.seconds)][1:]
    return {"precision": resolve_precision(config.precision, config.accelerator), "train_images": n_train,
            "val_images": len(splits["val"]), "train_images_per_epoch": per_epoch,
            "train_phase_seconds": train_seconds, "history_seconds": epoch_seconds,
            "train_phase_rate": per_epoch * len(train_seconds) / sum(train_seconds),
            "history_rate": per_epoch * len(epoch_seconds) / sum(epoch_seconds)}


def timed_steps(step: Callable[[], Any], warmup: int = WARMUP_STEPS, steps: int = TIMED_STEPS) -> float:
    """Seconds per call of ``step`` after ``warmup`` calls (CUDA events on a GPU, else the wall clock)."""
    for _ in range(warmup):
        step()
    sync()
    if not CUDA:
        start = time.perf_counter()
        for _ in range(steps):
            step()
        return (time.perf_counter() - start) / steps
    begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    begin.record()
    for _ in range(steps):
        step()
    end.record()
    end.synchronize()
    return begin.elapsed_time(end) / 1000 / steps


def compute_ceiling(name: str, size: int, batch_size: int, compile_backend: str) -> dict[str, Any]:
    """images/s of training steps on one device batch (fp32, bf16+channels-last, compiled); FLOPs/image."""
    torch.manual_seed(0)
    model = create(name, size, 10).to(DEVICE).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    images = torch.randn(batch_size, 3, size, size, device=DEVICE)
    labels = torch.randint(0, 10, (batch_size,), device=DEVICE)

    def step_of(net: nn.Module, bf16: bool) -> Callable[[], None]:
        def step() -> None:
            with torch.autocast(DEVICE.type, dtype=torch.bfloat16, enabled=bf16):
                loss = nn.functional.cross_entropy(net(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return step

    result: dict[str, Any] = {"fp32": batch_size / timed_steps(step_of(model, False)), "flops_per_image": 0}
    try:
        with FlopCounterMode(display=False) as counter, torch.autocast(DEVICE.type, dtype=torch.bfloat16):
            nn.functional.cross_entropy(model(images), labels).backward()
        result["flops_per_image"] = counter.get_total_flops() / batch_size
    except Exception as err:  # the images/s still count
        say(f"  FLOP count failed: {type(err).__name__}: {err}")
    model = model.to(memory_format=torch.channels_last)
    images = images.contiguous(memory_format=torch.channels_last)
    result["bf16"] = batch_size / timed_steps(step_of(model, True))
    say(f"  compute ceiling: fp32 {result['fp32']:.0f}, bf16+channels-last {result['bf16']:.0f} images/s")
    if compile_backend == "none" or (compile_backend == "inductor" and not CUDA):
        result["compile_error"] = "skipped" + ("" if CUDA else " (no GPU; --compile-backend aot_eager runs)")
        say(f"  compile {result['compile_error']}")
        return result
    try:
        start = time.perf_counter()
        compiled = torch.compile(model, backend=compile_backend)
        result["compiled"] = batch_size / timed_steps(step_of(compiled, True))
        say(f"  compiled ({compile_backend}, {time.perf_counter() - start:.0f}s with compilation): "
            f"{result['compiled']:.0f} images/s")
    except Exception as err:  # a compiler failure is a result to report, not a crash
        result["compile_error"] = f"{type(err).__name__}: {(str(err).splitlines() or [''])[0]}"
        say(f"  compile failed: {result['compile_error']}")
    torch._dynamo.reset()
    return result


def matmul_peak() -> tuple[float, str]:
    """Median TFLOP/s of square bf16 matmuls (8192 on a GPU, 256 on a CPU) and what was measured."""
    n = 8192 if CUDA else 256
    a, b = (torch.randn(n, n, device=DEVICE, dtype=torch.bfloat16) for _ in range(2))
    times = [timed_steps(lambda: a @ b, warmup=3 if i == 0 else 0, steps=1) for i in range(9)]
    return 2 * n**3 / statistics.median(times) / 1e12, f"median of 9 bf16 {n}^3 matmuls"


def attempt(label: str, run: Callable[[], Any]) -> Any:
    """``run()``, or None after saying why it failed: one failing part must not lose the others' numbers."""
    try:
        return run()
    except Exception as err:
        say(f"  {label} failed: {type(err).__name__}: {err}")
        return None
    finally:
        if CUDA:
            torch.cuda.empty_cache()


def table(seeds: float | None, fit: dict | None, ceiling: dict | None, loading: float,
          peak: float) -> list[dict[str, Any]]:
    """One backbone's rows: images/s, ratio to the seeds loop, TFLOP/s and % of the bf16 peak."""
    fit, ceiling = fit or {}, ceiling or {}
    flops = ceiling.get("flops_per_image")
    rows = [("seeds loop (fp32)", seeds),
            (f"cvtransfer fit, train phase ({fit.get('precision', '?')})", fit.get("train_phase_rate")),
            ("cvtransfer fit, history.csv epoch", fit.get("history_rate")),
            ("ceiling fp32", ceiling.get("fp32")), ("ceiling bf16+channels-last", ceiling.get("bf16")),
            ("ceiling bf16+channels-last+compile", ceiling.get("compiled")),
            ("data loading only (no model)", loading)]
    out = []
    for method, rate in rows:
        tflops = rate * flops / 1e12 if rate and flops and not method.startswith("data") else None
        out.append({"method": method, "images_per_s": rate, "tflops": tflops,
                    "ratio_vs_seeds": rate / seeds if rate and seeds else None,
                    "pct_of_peak": 100 * tflops / peak if tflops is not None else None})
    return out


def cell(value: float | None, spec: str) -> str:
    return format(value, spec) if value is not None else format("-", ">" + spec.split(".")[0])


def print_table(name: str, entry: dict[str, Any]) -> None:
    """One backbone's table."""
    flops = (entry["ceiling"] or {}).get("flops_per_image")
    say(f"\n{name}: " + (f"{flops / 1e9:.2f} GFLOP per training image, fwd+bwd" if flops else "no FLOPs"))
    say(f"{'method':<44} {'images/s':>9} {'vs seeds':>9} {'TFLOP/s':>8} {'% peak':>7}")
    for row in entry["table"]:
        numbers = zip(("images_per_s", "ratio_vs_seeds", "tflops", "pct_of_peak"),
                      ("9.1f", "9.2f", "8.2f", "7.1f"))
        say(f"{row['method']:<44} " + " ".join(cell(row[key], spec) for key, spec in numbers))
    if "compile_error" in (entry["ceiling"] or {}):
        say(f"  compile: {entry['ceiling']['compile_error']}")


def print_tables(results: dict[str, Any]) -> None:
    """The run's settings, one table per backbone, then what each number includes."""
    say("\n==== summary: device {device}, torch {torch}, data {data}, {image_size}px, batch {batch_size}, "
        "{workers} workers, {epochs} epochs per loop (first = warm-up), "
        "bf16 peak {peak_bf16_tflops:.3g} TFLOP/s ({peak_how})".format(**results))
    for name, entry in results["backbones"].items():
        print_table(name, entry)
    say("\n" + LEGEND)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="image folder (class subfolders); default: random JPEGs")
    parser.add_argument("--backbones", default="resnet50,vit_small_patch16_224")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=4, help="per loop; the first is warm-up")
    parser.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1))
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--compile-backend", default="inductor", help="torch.compile backend, or none")
    parser.add_argument("--json", type=Path, help="also write the tables and raw numbers here")
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (the first is warm-up)")
    logging.basicConfig(level=logging.WARNING)
    started, work = time.perf_counter(), Path(tempfile.mkdtemp(prefix="cvt-gpu-bench-"))
    data, data_label = args.data, str(args.data)
    if data is None:
        per_class = max(8, -(-3 * args.batch_size // 10))  # a training batch in both loops
        data = random_folder(work / "random", per_class)
        data_label = f"generated: {10 * per_class} random 300x300 JPEGs in 10 classes"
    results: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if CUDA else "cpu", "torch": torch.__version__,
        "data": data_label, "batch_size": args.batch_size, "workers": args.workers, "epochs": args.epochs,
        "image_size": args.image_size, "backbones": {}}
    say("  ".join(f"{k} {v}" for k, v in results.items() if k != "backbones"))
    try:
        peak, how = matmul_peak()
        results.update(peak_bf16_tflops=peak, peak_how=how)
        say(f"bf16 matmul peak: {peak:.3g} TFLOP/s ({results['peak_how']})")
        loader = seeds_loader(data, args.image_size, args.batch_size, args.workers)
        loading = results["data_loading_images_per_s"] = data_ceiling(loader, args.epochs)
        for name in [b.strip() for b in args.backbones.split(",") if b.strip()]:
            say(f"== {name}")
            seeds = attempt("seeds loop", partial(seeds_loop, name, loader, args.image_size, args.epochs))
            fit = attempt("cvtransfer fit", partial(cvtransfer_fit, name, data, args, work / f"fit-{name}"))
            shutil.rmtree(work / f"fit-{name}", ignore_errors=True)
            ceiling = attempt("compute ceiling", partial(
                compute_ceiling, name, args.image_size, args.batch_size, args.compile_backend))
            entry = {"table": table(seeds, fit, ceiling, loading, peak), "seeds_loop": seeds,
                     "cvtransfer_fit": fit, "ceiling": ceiling}
            results["backbones"][name] = entry
            print_table(name, entry)
            if args.json:  # after each backbone: a run cut short keeps what it measured
                args.json.write_text(json.dumps(results, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["total_seconds"] = time.perf_counter() - started
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    print_tables(results)
    say(f"total {results['total_seconds']:.0f}s" + (f"; wrote {args.json}" if args.json else ""))


if __name__ == "__main__":
    main()
