"""Omniglot few-shot, Prototypical Networks' protocol (Snell et al. 2017): Conv-4 at 28x28, every character rotated
by 0/90/180/270 degrees a class of its own, Vinyals' split by character (train 4112 classes, val 688, test 1692),
meta-trained on episodes with ``cvtransfer fit --task fewshot`` and evaluated on the test classes with
``cvtransfer fewshot-eval`` (5-way and 20-way, 1 and 5 shots, 15 queries, --test-episodes episodes each).

Baseline, run the same way in the same run: the seeds' plain ProtoNet loop (torchvision ``ImageFolder`` read
into one tensor, a Conv-4 written out, episodes drawn with ``random.sample``, Adam with the same cosine schedule
and as many episodes of the same size), evaluated on the same kind of episodes. The two draw different episodes:
their accuracies agree within their 95% intervals, or something is wrong. Times compare the training loops.

The paper's figures (ProtoNet trained with 60-way episodes, far longer, on a GPU): 5-way 1-shot 98.8%, 5-shot
99.7%, 20-way 1-shot 96.0%, 5-shot 98.9%. The log says what the CPU budget used here costs.

    python -m benchmarks.omniglot [--train-ways 20] [--episodes-per-epoch 100] [--epochs 40] [--test-episodes 1000]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import SHARED, run_process

OMNIGLOT = SHARED / "omniglot"
SETTINGS = ((5, 1), (5, 5), (20, 1), (20, 5))
PAPER = {(5, 1): 98.8, (5, 5): 99.7, (20, 1): 96.0, (20, 5): 98.9}
SIZE, SHOTS, QUERIES, TEST_QUERIES = 28, 5, 5, 15


def write_folders(root: Path) -> None:
    """Vinyals' train/val/test classes as root/<split>/<Alphabet>_<characterNN>_<rotXXX>/NN.png (white ink on
    black, rotated, then resized to 28x28 as prototypical-networks' loader does); skipped when already there."""
    from PIL import Image

    if (root / "done").is_file():
        return
    arrays = {name: np.load(OMNIGLOT / f"images_{name}.npz")["images"] for name in ("background", "evaluation")}
    rows = {}
    with open(OMNIGLOT / "alphabets.csv") as handle:
        for row in csv.DictReader(handle):
            rows[row["alphabet"]] = (row["set"], int(row["first_npz_row"]))
    for split in ("train", "val", "test"):
        for line in (OMNIGLOT / "splits" / "vinyals" / f"{split}.txt").read_text().split():
            alphabet, character, rotation = line.split("/")
            part, first = rows[alphabet]
            images = arrays[part][first + int(character.removeprefix("character")) - 1]
            folder = root / split / f"{alphabet}_{character}_{rotation}"
            folder.mkdir(parents=True, exist_ok=True)
            for drawer, pixels in enumerate(images):
                picture = Image.fromarray(np.where(pixels, 0, 255).astype(np.uint8)).rotate(int(rotation[3:]))
                picture.resize((SIZE, SIZE), Image.Resampling.LANCZOS).save(folder / f"{drawer + 1:02d}.png")
    (root / "done").write_text("ok\n")


def baseline(args: argparse.Namespace) -> None:
    """The seeds' loop (one process): meta-train a Conv-4 on episodes, then evaluate; prints JSON."""
    import torch
    from torch import nn
    from torch.nn import functional as F
    from torch.utils.data import DataLoader
    from torchvision import transforms
    from torchvision.datasets import ImageFolder

    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)

    def load(split: str) -> tuple[torch.Tensor, dict[int, list[int]]]:
        dataset = ImageFolder(str(Path(args.data) / split),
                              transforms.Compose([transforms.Grayscale(1), transforms.ToTensor()]))
        x, y = zip(*DataLoader(dataset, batch_size=1024, num_workers=1))
        labels = torch.cat(y)
        return torch.cat(x), {c: (labels == c).nonzero().flatten().tolist() for c in range(len(dataset.classes))}

    def block(cin: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2))

    def episode(x: torch.Tensor, by_class: dict[int, list[int]], ways: int, shots: int,
                queries: int) -> tuple[torch.Tensor, torch.Tensor]:
        picks = [rng.sample(by_class[c], shots + queries) for c in rng.sample(sorted(by_class), ways)]
        support = torch.stack([x[p[:shots]] for p in picks])  # ways, shots, 1, 28, 28
        query = torch.stack([x[p[shots:]] for p in picks])
        return support, query

    def scores(model: nn.Module, support: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        ways, shots = support.shape[0], support.shape[1]
        features = model(torch.cat([support.flatten(0, 1), query.flatten(0, 1)])).flatten(1)
        prototypes = features[:ways * shots].view(ways, shots, -1).mean(1)
        return -torch.cdist(features[ways * shots:], prototypes) ** 2

    train_x, train_classes = load("train")
    model = nn.Sequential(block(1), block(64), block(64), block(64))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    total = args.episodes_per_epoch * args.epochs
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, total)
    start = time.perf_counter()
    model.train()
    for _ in range(total):
        support, query = episode(train_x, train_classes, args.train_ways, SHOTS, QUERIES)
        truth = torch.arange(args.train_ways).repeat_interleave(QUERIES)
        loss = F.cross_entropy(scores(model, support, query), truth)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    train_seconds = time.perf_counter() - start
    test_x, test_classes = load("test")
    model.eval()
    results = {}
    with torch.no_grad():
        for ways, shots in SETTINGS:
            accuracies = []
            for _ in range(args.test_episodes):
                support, query = episode(test_x, test_classes, ways, shots, TEST_QUERIES)
                truth = torch.arange(ways).repeat_interleave(TEST_QUERIES)
                accuracies.append(float((scores(model, support, query).argmax(1) == truth).float().mean()))
            mean = sum(accuracies) / len(accuracies)
            std = math.sqrt(sum((a - mean) ** 2 for a in accuracies) / (len(accuracies) - 1))
            results[f"{ways},{shots}"] = (mean, 1.96 * std / math.sqrt(len(accuracies)))
    print(json.dumps({"results": results, "train_seconds": train_seconds}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-ways", type=int, default=20)
    parser.add_argument("--episodes-per-epoch", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--test-episodes", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "cvt-omniglot")
    parser.add_argument("--role", choices=["baseline"], help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "baseline":
        return baseline(args)
    if not (OMNIGLOT / "images_background.npz").is_file():
        raise SystemExit("benchmarks.omniglot needs ../shared/data/omniglot")
    data = args.work / "data"
    write_folders(data)
    run = args.work / f"run-{args.train_ways}way-{args.episodes_per_epoch * args.epochs}"
    common = ["--num-workers", "0", "--accelerator", "cpu", "--seed", str(args.seed), "--cache-dir",
              str(args.work / "cache")]
    if not (run / "model.safetensors").is_file():
        run_process([
            sys.executable, "-m", "cvtransfer", "fit", str(data), "--task", "fewshot", "--backbone", "conv4",
            "--weights", "none", "--image-size", str(SIZE), "--augment", "none", "--train-ways", str(args.train_ways),
            "--train-shots", str(SHOTS), "--queries", str(QUERIES), "--ways", "5", "--shots", "1",
            "--episodes", str(args.test_episodes), "--episodes-per-epoch", str(args.episodes_per_epoch),
            "--epochs", str(args.epochs), "--optimizer", "adam", "--lr", "1e-3", "--weight-decay", "0",
            "--scheduler", "cosine", "--monitor", "val_accuracy", "--no-progress", "--out", str(run), *common])
    history = list(csv.DictReader((run / "history.csv").open()))
    train_seconds = sum(float(row["seconds"]) for row in history)
    ours: dict[tuple[int, int], tuple[float, float]] = {}
    for ways in (5, 20):
        out = args.work / f"eval-{ways}way"
        run_process([sys.executable, "-m", "cvtransfer", "fewshot-eval", str(data / "test"), "--backbone", "conv4",
                     "--weights", str(run), "--image-size", str(SIZE), "--ways", str(ways), "--shots", "1,5",
                     "--queries", str(TEST_QUERIES), "--episodes", str(args.test_episodes), "--fewshot-methods",
                     "protonet", "--out", str(out), *common])
        for row in json.loads((out / "fewshot.json").read_text())["results"]:
            ours[(ways, row["shots"])] = (row["accuracy"], row["ci95"])
    out, _ = run_process([sys.executable, "-m", "benchmarks.omniglot", "--role", "baseline", "--data", str(data),
                          "--train-ways", str(args.train_ways), "--episodes-per-epoch", str(args.episodes_per_epoch),
                          "--epochs", str(args.epochs), "--test-episodes", str(args.test_episodes),
                          "--seed", str(args.seed)])
    base = json.loads(out.strip().splitlines()[-1])
    episodes = args.episodes_per_epoch * args.epochs
    lines = [f"python -m benchmarks.omniglot --train-ways {args.train_ways} --episodes-per-epoch "
             f"{args.episodes_per_epoch} --epochs {args.epochs} --test-episodes {args.test_episodes} --seed {args.seed}",
             f"Omniglot, Vinyals split (test: 1692 classes = 423 characters x 4 rotations), Conv-4 at {SIZE} px from "
             f"scratch; meta-training: {episodes} episodes of {args.train_ways}-way {SHOTS}-shot {QUERIES}-query, Adam "
             f"1e-3 cosine, on 2 CPU cores; test: {args.test_episodes} episodes per setting, {TEST_QUERIES} queries per "
             "class; accuracy % +- 95% interval",
             f"{'setting':<16}{'cvtransfer':>16}{'seeds loop':>16}{'ratio':>8}{'paper (60-way, GPU)':>22}"]
    for setting in SETTINGS:
        mine, theirs = ours[setting], base["results"][f"{setting[0]},{setting[1]}"]
        lines.append(f"{f'{setting[0]}-way {setting[1]}-shot':<16}{100 * mine[0]:>9.1f} +- {100 * mine[1]:<4.1f}"
                     f"{100 * theirs[0]:>9.1f} +- {100 * theirs[1]:<4.1f}{mine[0] / theirs[0]:>7.3f}x"
                     f"{PAPER[setting]:>21.1f}")
    best = max(history, key=lambda row: float(row["val_accuracy"]))
    lines.append(f"training time: cvtransfer {train_seconds:.0f} s (epochs as history.csv records them) vs the seeds "
                 f"loop {base['train_seconds']:.0f} s: {train_seconds / base['train_seconds']:.2f}x; cvtransfer "
                 f"reads the 1-channel PNGs as RGB (3 input channels), the seeds loop as 1")
    lines.append("val 5-way 1-shot accuracy (100 episodes of the val classes) by episodes seen: " + ", ".join(
        f"{(int(row['epoch']) + 1) * args.episodes_per_epoch}: {100 * float(row['val_accuracy']):.1f}"
        for row in history[::max(1, len(history) // 8)]) + f"; best.ckpt: epoch {int(best['epoch']) + 1}")
    text = "\n".join(lines)
    print(text)
    Path(__file__).with_name(f"omniglot_{args.train_ways}way_{episodes}.log").write_text(text + "\n")


if __name__ == "__main__":
    main()
