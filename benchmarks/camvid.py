"""CamVid (SegNet's 11 classes, 367 train / 101 val / 233 test, void = 11): the same U-Net on
EfficientNet-Lite0 trained from scratch and from the packaged ImageNet weights, test mIoU against the
published from-scratch SegNet-Basic (46.3) and the PyTorch ENet re-implementation (52.1).

Both runs go through ``cvtransfer fit --task segmentation`` with the same options and budget; the
ratio printed is pretrained / scratch. The published figures were trained at 360 x 480 for hundreds of
epochs on a GPU; here the shorter side is ``--size`` (the CPU budget) and metrics are computed at the
masks' full 360 x 480 (logits scaled back), one confusion matrix over the 233 test images.

    python -m benchmarks.camvid [--size 128] [--epochs 10] [--decoder unet]
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
import time
from pathlib import Path

from benchmarks.common import SHARED

CAMVID = SHARED / "camvid"
CLASSES = [("Sky", (128, 128, 128)), ("Building", (128, 0, 0)), ("Pole", (192, 192, 128)), ("Road", (128, 64, 128)),
           ("Pavement", (60, 40, 222)), ("Tree", (128, 128, 0)), ("SignSymbol", (192, 128, 128)),
           ("Fence", (64, 64, 128)), ("Car", (64, 0, 128)), ("Pedestrian", (64, 64, 0)), ("Bicyclist", (0, 128, 192))]
PUBLISHED = {"SegNet-Basic (from scratch, paper)": 46.3, "ENet (davidtvs/PyTorch-ENet e17d404)": 52.1}


def write_listing(work: Path) -> Path:
    """data.csv (image,mask,split) over ../shared/data/camvid and classes.txt with SegNet's colours."""
    listing = work / "camvid.csv"
    with open(listing, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "mask", "split"])
        for split in ("train", "val", "test"):
            for image in sorted((CAMVID / split).glob("*.jpg")):
                writer.writerow([str(image), str(CAMVID / f"{split}annot" / f"{image.stem}.png"), split])
    (work / "classes.txt").write_text("".join(f"{name} {r} {g} {b}\n" for name, (r, g, b) in CLASSES))
    return listing


def train(listing: Path, out: Path, weights: str, args: argparse.Namespace) -> tuple[dict, float]:
    import cvtransfer

    config = cvtransfer.Config(
        data=str(listing), out=str(out), task="segmentation", backbone=args.backbone, weights=weights,
        decoder=args.decoder, ignore_index=11, image_size=args.size, epochs=args.epochs, batch_size=args.batch_size,
        lr=args.lr, optimizer="adamw", scheduler="cosine", augment="light", num_workers=args.workers,
        progress=False, report=True, accelerator="auto")
    start = time.perf_counter()
    run = cvtransfer.fit(config)
    return run.metrics, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="tf_efficientnet_lite0")
    parser.add_argument("--decoder", default="unet")
    parser.add_argument("--size", type=int, default=128, help="shorter side of the training images")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    if not CAMVID.is_dir():
        raise SystemExit("benchmarks.camvid needs ../shared/data/camvid")
    work = Path(tempfile.mkdtemp(prefix="cvt-camvid-"))
    listing = write_listing(work)
    results = {}
    for label, weights in (("scratch", "none"), ("imagenet", "imagenet")):
        results[label] = train(listing, work / label, weights, args)
        print(f"{label}: test mIoU {results[label][0]['miou']:.4f} in {results[label][1] / 60:.1f} min", flush=True)
    lines = [f"python -m benchmarks.camvid --backbone {args.backbone} --decoder {args.decoder} --size {args.size} "
             f"--epochs {args.epochs} --batch-size {args.batch_size} --lr {args.lr}",
             f"CamVid (SegNet 11 classes, void ignored): train 367, val 101 (epoch choice), test 233 at 360x480; "
             f"training crops {args.size} px (shorter side {args.size}), {args.epochs} epochs, AdamW cosine",
             f"{'model':<44}{'test mIoU':>10}{'pixel acc':>10}{'class acc':>10}{'train min':>10}"]
    for label, (metrics, seconds) in results.items():
        lines.append(f"{args.backbone + ' ' + args.decoder + ' ' + label:<44}{100 * metrics['miou']:>10.1f}"
                     f"{100 * metrics['pixel_accuracy']:>10.1f}{100 * metrics['mean_class_accuracy']:>10.1f}"
                     f"{seconds / 60:>10.1f}")
    for name, miou in PUBLISHED.items():
        lines.append(f"{name:<44}{miou:>10.1f}{'':>10}{'':>10}{'(published)':>10}")
    ratio = results["imagenet"][0]["miou"] / max(results["scratch"][0]["miou"], 1e-9)
    lines.append(f"ImageNet encoder / scratch, test mIoU: {ratio:.2f}x")
    per_class = results["imagenet"][0]["per_class"]
    lines.append("per-class IoU (ImageNet encoder): " + ", ".join(
        f"{row['class']} {100 * row['iou']:.1f}" for row in per_class if row["iou"] is not None))
    text = "\n".join(lines)
    print(text)
    log = Path(__file__).with_name(f"camvid_{args.backbone}_{args.decoder}_{args.size}.log")
    log.write_text(text + "\n")
    results_dir = Path(__file__).with_name("results")
    results_dir.mkdir(exist_ok=True)
    (results_dir / log.with_suffix(".json").name).write_text(json.dumps(
        {"args": vars(args), **{k: {"metrics": {m: v for m, v in r[0].items() if m not in ("per_image_miou", "data")},
                                    "seconds": r[1]} for k, r in results.items()}}, indent=1))


if __name__ == "__main__":
    main()
