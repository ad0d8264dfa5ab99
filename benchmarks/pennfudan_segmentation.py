"""Penn-Fudan person masks with few labels (10, 25, 50 images): the same U-Net on EfficientNet-Lite0 from
the packaged ImageNet weights vs from scratch, test mIoU and person IoU on 50 held-out images.

A binary task (background 0, person 1 = any pedestrian of the instance masks). No official split exists:
the sorted 170 stems are shuffled with ``--seed``; the first 50 are the test set (as torchvision's
tutorial holds out 50), the next 20 the validation set (epoch choice), and the training sets are the
first 10 / 25 / 50 of the remaining 100 (nested, so a larger set contains the smaller ones). Every run
gets the same number of optimiser steps (``--steps``), so fewer images means more epochs, not less
training. Both runs of a size go through ``cvtransfer.fit`` with the same options; the ratio printed is
pretrained / scratch. Metrics at the masks' full size, one confusion matrix over the 50 test images.

    python -m benchmarks.pennfudan_segmentation [--sizes 10 25 50] [--steps 300] [--size 160]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import random
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.common import SHARED

PENN_FUDAN = SHARED / "penn_fudan" / "PennFudanPed"
TEST, VAL = 50, 20


def split_stems(seed: int) -> tuple[list[str], list[str], list[str]]:
    """(test, val, pool) stems: a seeded shuffle of the sorted stems."""
    stems = sorted(path.stem for path in (PENN_FUDAN / "JPEGImages").glob("*.jpg"))
    random.Random(seed).shuffle(stems)
    return stems[:TEST], stems[TEST:TEST + VAL], stems[TEST + VAL:]


def write_binary_masks(work: Path) -> Path:
    """person (1) vs background (0) masks from the instance masks (k = pedestrian k)."""
    masks = work / "masks"
    masks.mkdir(parents=True, exist_ok=True)
    for path in sorted((PENN_FUDAN / "PedMasks").glob("*_mask.png")):
        instances = np.asarray(Image.open(path))
        Image.fromarray((instances > 0).astype(np.uint8)).save(masks / f"{path.stem.removesuffix('_mask')}.png")
    (work / "classes.txt").write_text("background\nperson\n")
    return masks


def write_listing(work: Path, masks: Path, splits: dict[str, list[str]], name: str) -> Path:
    """A CSV (image,mask,split) over the JPEGs of ../shared and the binary masks."""
    listing = work / f"{name}.csv"
    with open(listing, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "mask", "split"])
        for split, stems in splits.items():
            for stem in stems:
                writer.writerow([str(PENN_FUDAN / "JPEGImages" / f"{stem}.jpg"), str(masks / f"{stem}.png"), split])
    return listing


def train(listing: Path, out: Path, weights: str, epochs: int, args: argparse.Namespace) -> tuple[dict, float]:
    import cvtransfer

    config = cvtransfer.Config(
        data=str(listing), out=str(out), task="segmentation", backbone=args.backbone, weights=weights,
        decoder=args.decoder, classes_file=str(listing.parent / "classes.txt"), image_size=args.size,
        epochs=epochs, batch_size=args.batch_size, lr=args.lr, optimizer="adamw", scheduler="cosine",
        augment="light", num_workers=args.workers, progress=False, report=False, accelerator="auto",
        seed=args.seed)
    start = time.perf_counter()
    run = cvtransfer.fit(config)
    return run.metrics, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="tf_efficientnet_lite0")
    parser.add_argument("--decoder", default="unet")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 25, 50], help="labelled training images")
    parser.add_argument("--steps", type=int, default=300, help="optimiser steps of every run")
    parser.add_argument("--size", type=int, default=160, help="shorter side of the training images")
    parser.add_argument("--batch-size", type=int, default=5)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not PENN_FUDAN.is_dir():
        raise SystemExit("benchmarks.pennfudan_segmentation needs ../shared/data/penn_fudan")
    work = Path(tempfile.mkdtemp(prefix="cvt-pennfudan-"))
    masks = write_binary_masks(work)
    test, val, pool = split_stems(args.seed)
    results: dict[int, dict[str, tuple[dict, float]]] = {}
    for n in args.sizes:
        listing = write_listing(work, masks, {"train": pool[:n], "val": val, "test": test}, f"train{n}")
        epochs = math.ceil(args.steps / math.ceil(n / args.batch_size))
        results[n] = {}
        for label, weights in (("scratch", "none"), ("imagenet", "imagenet")):
            results[n][label] = train(listing, work / f"{label}{n}", weights, epochs, args)
            print(f"{n} images, {label}: test mIoU {results[n][label][0]['miou']:.4f} "
                  f"({epochs} epochs) in {results[n][label][1] / 60:.1f} min", flush=True)
    lines = [f"python -m benchmarks.pennfudan_segmentation --backbone {args.backbone} --decoder {args.decoder} "
             f"--sizes {' '.join(map(str, args.sizes))} --steps {args.steps} --size {args.size} "
             f"--batch-size {args.batch_size} --lr {args.lr} --seed {args.seed}",
             f"Penn-Fudan person vs background: test {TEST} images, val {VAL} (epoch choice), training sets nested "
             f"from 100 (seed {args.seed}); {args.steps} AdamW cosine steps at batch {args.batch_size} for every run; "
             f"training crops {args.size} px; metrics at full size",
             f"{'labelled':>9}{'encoder':>10}{'test mIoU':>11}{'person IoU':>12}{'pixel acc':>11}{'train min':>11}"]
    for n, runs in results.items():
        for label, (metrics, seconds) in runs.items():
            person = next(row["iou"] for row in metrics["per_class"] if row["class"] == "person")
            lines.append(f"{n:>9}{label:>10}{100 * metrics['miou']:>11.1f}{100 * person:>12.1f}"
                         f"{100 * metrics['pixel_accuracy']:>11.1f}{seconds / 60:>11.1f}")
    for n, runs in results.items():
        ratio = runs["imagenet"][0]["miou"] / max(runs["scratch"][0]["miou"], 1e-9)
        lines.append(f"{n} labelled images: ImageNet encoder / scratch, test mIoU {ratio:.2f}x")
    text = "\n".join(lines)
    print(text)
    log = Path(__file__).with_name(f"pennfudan_segmentation_{args.backbone}_{args.size}.log")
    log.write_text(text + "\n")
    results_dir = Path(__file__).with_name("results")
    results_dir.mkdir(exist_ok=True)
    (results_dir / log.with_suffix(".json").name).write_text(json.dumps(
        {"args": vars(args), **{f"{label}{n}": {"metrics": {m: v for m, v in r[0].items() if m not in ("per_image_miou", "data")},
                                                  "seconds": r[1]}
                                for n, runs in results.items() for label, r in runs.items()}}, indent=1))


if __name__ == "__main__":
    main()
