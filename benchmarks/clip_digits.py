"""A check of the zero-shot and CLIP few-shot pipeline on digits, not a CLIP reproduction: no CLIP weights can be
had offline, so a tiny image-text model (open_clip's ``cvt-tiny-clip`` config of cvtransfer, 32 px) is trained
here with open_clip's contrastive loss (``ClipLoss``) on captioned MNIST images ("a photo of the number seven"),
then classifies USPS and MNIST-M (other domains, never seen) and held-out MNIST images:

- zero-shot with ``cvtransfer zeroshot`` (the class names "zero".."nine" through the caption's template);
- each few-shot method of ``cvtransfer fewshot-eval`` on its features (10-way 1/5-shot episodes), the CLIP
  methods (zero-shot, WiSE-FT, Tip-Adapter, Tip-Adapter-F) beside prototypes and a fitted linear head.

Baseline, run the same way in the same run: the seeds' plain open_clip zero-shot loop (torchvision
``ImageFolder`` with open_clip's own preprocess, ``build_zero_shot_classifier``, argmax): cvtransfer's
zero-shot accuracy must equal it (ratio 1.000) and the times compare. The same model at its random
initialisation gives chance (10%) as the floor.

    python -m benchmarks.clip_digits [--epochs 30] [--episodes 600]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import SHARED, run_process

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
CAPTIONS = ["a photo of the number {}.", "the digit {}.", "a handwritten {}.", "a picture of a {}."]
TEMPLATE = "a photo of the number {}."
MODEL = "cvt-tiny-clip"
METHODS = "zeroshot,protonet,finetune,wiseft,tip_adapter,tip_adapter_f"


def train_clip(data: Path, out: Path, epochs: int, seed: int) -> float:
    """The tiny CLIP trained on data/mnist/train with captions (open_clip's ClipLoss, AdamW, cosine); its
    state dict saved to ``out``; the seconds it took."""
    import open_clip
    import torch
    from safetensors.torch import save_file
    from torch.utils.data import DataLoader
    from torchvision import transforms
    from torchvision.datasets import ImageFolder

    from cvtransfer.models.clip import clip_arch

    torch.manual_seed(seed)
    arch = clip_arch("clip:" + MODEL)
    model = open_clip.create_model(arch)
    tokenizer = open_clip.get_tokenizer(arch)
    # colour, contrast and inversion vary: the domains it is tested on (USPS grey, MNIST-M colour) are not MNIST's
    augment = transforms.Compose([
        transforms.Grayscale(3), transforms.Resize(32), transforms.RandomAffine(10, (0.1, 0.1), (0.9, 1.1)),
        transforms.ColorJitter(0.4, 0.4, 0.4, 0.1), transforms.RandomInvert(0.3), transforms.ToTensor(),
        transforms.Normalize(open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD)])
    dataset = ImageFolder(str(data / "mnist" / "train"), augment)
    captions = tokenizer([caption.format(word) for word in WORDS for caption in CAPTIONS]).view(10, len(CAPTIONS), -1)
    loader = DataLoader(dataset, batch_size=256, shuffle=True, num_workers=1, drop_last=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * len(loader))
    loss_fn = open_clip.ClipLoss()
    start = time.perf_counter()
    model.train()
    for _ in range(epochs):
        for images, labels in loader:
            classes = [int(dataset.classes[label]) for label in labels]
            texts = captions[classes, torch.randint(len(CAPTIONS), (len(classes),))]
            image_features, text_features, scale = model(images, texts)
            # open_clip's loss as it is: two images of one digit in a batch count as negatives of each other's
            # caption, which slows learning a little but needs nothing of our own
            loss = loss_fn(image_features, text_features, scale)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, 4.6052)  # open_clip's training clamps it at log(100)
    seconds = time.perf_counter() - start
    save_file({key: value.detach().contiguous() for key, value in model.state_dict().items()}, str(out))
    return seconds


def baseline(args: argparse.Namespace) -> None:
    """The seeds' zero-shot loop (one process): open_clip's model, preprocess and classifier; prints JSON."""
    import open_clip
    import torch
    from torch.utils.data import DataLoader
    from torchvision.datasets import ImageFolder

    from cvtransfer.models.clip import clip_arch

    start = time.perf_counter()
    arch = clip_arch("clip:" + MODEL)
    model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=args.weights)
    model.eval()
    dataset = ImageFolder(args.data, preprocess)
    words = [WORDS[int(name)] for name in dataset.classes]
    with torch.no_grad():
        head = open_clip.build_zero_shot_classifier(model, open_clip.get_tokenizer(arch), words, [TEMPLATE])
        correct = 0
        for images, labels in DataLoader(dataset, batch_size=256, num_workers=1):
            features = model.encode_image(images, normalize=True)
            correct += int(((features @ head).argmax(1) == labels).sum())
    print(json.dumps({"accuracy": correct / len(dataset), "seconds": time.perf_counter() - start}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--episodes", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "cvt-clip-digits")
    parser.add_argument("--role", choices=["baseline"], help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--weights", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "baseline":
        return baseline(args)
    if not (SHARED / "digits" / "mnist").is_dir():
        raise SystemExit("benchmarks.clip_digits needs ../shared/data/digits")
    from benchmarks.digits import convert

    data = args.work / "data"
    data.mkdir(parents=True, exist_ok=True)
    convert(data)
    weights = args.work / f"tiny_clip_{args.epochs}.safetensors"
    timing = weights.with_suffix(".json")  # the training time, kept for a rerun that reuses the weights
    if not weights.is_file():
        timing.write_text(json.dumps({"seconds": train_clip(data, weights, args.epochs, args.seed)}))
    train_seconds = json.loads(timing.read_text())["seconds"]
    (args.work / "template.txt").write_text(TEMPLATE + "\n")
    common = ["--backbone", "clip:" + MODEL, "--num-workers", "0", "--accelerator", "cpu", "--seed", str(args.seed),
              "--classes", ",".join(WORDS)]
    domains = {"MNIST (held out)": data / "mnist" / "test", "USPS": data / "usps" / "test",
               "MNIST-M": data / "mnist_m" / "test"}
    lines = [f"python -m benchmarks.clip_digits --epochs {args.epochs} --episodes {args.episodes} --seed {args.seed}",
             f"A PIPELINE CHECK, NOT A CLIP REPRODUCTION: {MODEL} (ViT 32 px, 3 layers; text 2 layers) trained from "
             f"scratch on 8,000 captioned MNIST images for {args.epochs} epochs with open_clip's ClipLoss "
             f"({train_seconds:.0f} s on 2 CPU cores); prompt '{TEMPLATE}'",
             f"{'zero-shot, test images':<28}{'cvtransfer':>12}{'seeds loop':>12}{'ratio':>8}{'random init':>13}"
             f"{'time ratio':>12}"]
    for name, folder in domains.items():
        scores = {}
        for label, source in (("trained", str(weights)), ("random", "none")):
            out = args.work / f"zs-{folder.parent.name}-{label}"
            shutil.rmtree(out, ignore_errors=True)  # a rerun writes its run folders afresh
            _, seconds = run_process([sys.executable, "-m", "cvtransfer", "zeroshot", str(folder), "--weights", source,
                                      "--templates", str(args.work / "template.txt"), "--no-report", "--out", str(out),
                                      *common])
            scores[label] = (json.loads((out / "metrics.json").read_text())["accuracy"], seconds)
        base_out, _ = run_process([sys.executable, "-m", "benchmarks.clip_digits", "--role", "baseline", "--data",
                                   str(folder), "--weights", str(weights)])
        base = json.loads(base_out.strip().splitlines()[-1])
        lines.append(f"{name:<28}{100 * scores['trained'][0]:>11.1f}%{100 * base['accuracy']:>11.1f}%"
                     f"{scores['trained'][0] / base['accuracy']:>7.3f}x{100 * scores['random'][0]:>12.1f}%"
                     f"{scores['trained'][1] / base['seconds']:>11.2f}x")
    lines.append("(times: whole processes, start-up included; cvtransfer's also writes the run folder and metrics, "
                 "without report.html)")
    lines.append(f"few-shot, 10-way, 15 queries, {args.episodes} episodes; accuracy % +- 95% interval")
    lines.append(f"{'domain':<12}{'method':<15}{'1-shot':>16}{'5-shot':>16}")
    for name, folder in list(domains.items())[1:]:
        out = args.work / f"fewshot-{folder.parent.name}"
        run_process([sys.executable, "-m", "cvtransfer", "fewshot-eval", str(folder), "--weights", str(weights),
                     "--ways", "10", "--shots", "1,5", "--queries", "15", "--episodes", str(args.episodes),
                     "--fewshot-methods", METHODS, "--templates", str(args.work / "template.txt"),
                     "--cache-dir", str(args.work / "cache"), "--out", str(out), *common])
        table: dict[str, dict[int, tuple[float, float]]] = {}
        for row in json.loads((out / "fewshot.json").read_text())["results"]:
            table.setdefault(row["method"], {})[row["shots"]] = (row["accuracy"], row["ci95"])
        for method, cells in table.items():
            lines.append(f"{name:<12}{method:<15}" + "".join(f"{100 * cells[s][0]:>9.1f} +- {100 * cells[s][1]:<4.1f}"
                                                           for s in (1, 5)))
    text = "\n".join(lines)
    print(text)
    Path(__file__).with_name(f"clip_digits_{args.epochs}.log").write_text(text + "\n")


if __name__ == "__main__":
    main()
