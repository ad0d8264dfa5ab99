"""Penn-Fudan pedestrians (170 images, 423 boxes): the same detector on EfficientNet-Lite0 from the packaged
ImageNet weights (fine-tuned), from scratch, and on the frozen ImageNet backbone; test mAP on 50 held-out
images, with training times.

The boxes are the annotation texts' (1-based inclusive pixels, read as x1 = Xmin - 1, y1 = Ymin - 1,
x2 = Xmax, y2 = Ymax), written as a YOLO folder (train/ val/ test/) in a temporary directory; the
sorted stems are shuffled with ``--seed``: the first 50 are the test set (as torchvision's tutorial holds
out 50), the next 20 the validation set (the kept epoch: best val mAP), the other 100 the training set.
Every run goes through ``cvtransfer.fit`` with the same options and budget; the ratios printed are
against the from-scratch run. Metrics: torchmetrics' COCO mAP in the images' own pixels.

    python -m benchmarks.pennfudan [--detector fasterrcnn] [--size 256] [--epochs 12]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import tempfile
import time
from pathlib import Path

from PIL import Image

from benchmarks.common import SHARED

PENN_FUDAN = SHARED / "penn_fudan" / "PennFudanPed"
TEST, VAL = 50, 20
BOX = re.compile(r"\((\d+), (\d+)\) - \((\d+), (\d+)\)")
RUNS = (("scratch", "none", "full"), ("imagenet", "imagenet", "full"), ("frozen", "imagenet", "linear"))


def read_boxes(stem: str) -> list[tuple[float, float, float, float]]:
    """The pedestrians' boxes of an annotation text as x1, y1, x2, y2 pixels from the top-left corner."""
    text = (PENN_FUDAN / "Annotation" / f"{stem}.txt").read_text()
    return [(int(a) - 1.0, int(b) - 1.0, float(c), float(d))
            for line in text.splitlines() if line.startswith("Bounding box")
            for a, b, c, d in BOX.findall(line)]


def write_yolo(work: Path, seed: int) -> Path:
    """work/data/{train,val,test}/{images,labels}/ and classes.txt (one class: person)."""
    stems = sorted(path.stem for path in (PENN_FUDAN / "JPEGImages").glob("*.jpg"))
    random.Random(seed).shuffle(stems)
    splits = {"test": stems[:TEST], "val": stems[TEST:TEST + VAL], "train": stems[TEST + VAL:]}
    root = work / "data"
    for split, chosen in splits.items():
        (root / split / "images").mkdir(parents=True)
        (root / split / "labels").mkdir()
        (root / split / "classes.txt").write_text("person\n")
        for stem in chosen:
            image = PENN_FUDAN / "JPEGImages" / f"{stem}.jpg"
            (root / split / "images" / image.name).symlink_to(image)
            with Image.open(image) as opened:
                width, height = opened.size
            lines = [f"0 {(x1 + x2) / 2 / width:.6f} {(y1 + y2) / 2 / height:.6f} {(x2 - x1) / width:.6f} "
                     f"{(y2 - y1) / height:.6f}" for x1, y1, x2, y2 in read_boxes(stem)]
            (root / split / "labels" / f"{stem}.txt").write_text("\n".join(lines) + "\n")
    return root


def train(data: Path, out: Path, weights: str, strategy: str, args: argparse.Namespace) -> tuple[dict, float]:
    import cvtransfer

    config = cvtransfer.Config(
        data=str(data), out=str(out), task="detection", backbone=args.backbone, weights=weights,
        detector=args.detector, strategy=strategy, image_size=args.size, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, optimizer="adamw", scheduler="cosine", augment="light",
        num_workers=args.workers, progress=False, report=True, accelerator="auto", seed=args.seed)
    start = time.perf_counter()
    run = cvtransfer.fit(config)
    return run.metrics, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="tf_efficientnet_lite0")
    parser.add_argument("--detector", default="fasterrcnn")
    parser.add_argument("--size", type=int, default=256, help="shorter side the detector resizes to")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", nargs="+", default=[label for label, _, _ in RUNS], help="which of the three runs")
    args = parser.parse_args()
    if not PENN_FUDAN.is_dir():
        raise SystemExit("benchmarks.pennfudan needs ../shared/data/penn_fudan")
    work = Path(tempfile.mkdtemp(prefix="cvt-pennfudan-det-"))
    data = write_yolo(work, args.seed)
    results = {}
    for label, weights, strategy in RUNS:
        if label in args.runs:
            results[label] = train(data, work / label, weights, strategy, args)
            print(f"{label}: test mAP {results[label][0]['map']:.4f} in {results[label][1] / 60:.1f} min", flush=True)
    lines = [f"python -m benchmarks.pennfudan --backbone {args.backbone} --detector {args.detector} --size {args.size} "
             f"--epochs {args.epochs} --batch-size {args.batch_size} --lr {args.lr} --seed {args.seed}",
             f"Penn-Fudan pedestrians: train 100, val 20 (kept epoch: best val mAP), test 50 images (seed {args.seed}); "
             f"shorter side {args.size} px, {args.epochs} epochs, AdamW cosine, horizontal flips",
             f"{'run':<44}{'mAP':>8}{'mAP@.5':>8}{'mAP@.75':>9}{'recall':>8}{'train min':>11}"]
    for label, (metrics, seconds) in results.items():
        name = f"{args.backbone} {args.detector} {label}"
        lines.append(f"{name:<44}{100 * metrics['map']:>8.1f}{100 * metrics['map_50']:>8.1f}"
                     f"{100 * metrics['map_75']:>9.1f}{100 * metrics['mar_100']:>8.1f}{seconds / 60:>11.1f}")
    if "scratch" in results:
        for label in results:
            if label != "scratch":
                ratio = results[label][0]["map"] / max(results["scratch"][0]["map"], 1e-9)
                lines.append(f"{label} / scratch, test mAP: {ratio:.2f}x")
    text = "\n".join(lines)
    print(text)
    print(f"run folders (examples.png, report.html) under {work.name} in the temporary directory")
    log = Path(__file__).with_name(f"pennfudan_{args.backbone}_{args.detector}_{args.size}.log")
    log.write_text(text + "\n")
    results_dir = Path(__file__).with_name("results")
    results_dir.mkdir(exist_ok=True)
    (results_dir / log.with_suffix(".json").name).write_text(json.dumps(
        {"args": vars(args), **{k: {"metrics": {m: v for m, v in r[0].items() if m not in ("per_image_f1", "data")},
                                    "seconds": r[1]} for k, r in results.items()}}, indent=1))


if __name__ == "__main__":
    main()
