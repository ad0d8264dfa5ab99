"""The embedded demo domains, made from data that ships inside scikit-learn (no download).

Source: the real handwritten digits of ``sklearn.datasets.load_digits`` (8x8, 16 grey levels),
upsampled to 32 px. Target: the *other* half of those digits (no image is in both domains), blended
into colour photographs (``load_sample_images``: a Chinese temple and a flower) the way MNIST-M
blends MNIST into BSDS500 patches: ``|background - digit|`` per channel. The target has only a few
labelled images per class; the rest is its test set.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits, load_sample_images

SIZE = 32


def _digit_images() -> tuple[np.ndarray, np.ndarray]:
    """All digits as float images in [0, 1] of SIZE x SIZE, and their labels."""
    digits = load_digits()
    images = np.stack([
        np.asarray(Image.fromarray((img / 16.0 * 255).astype(np.uint8)).resize((SIZE, SIZE), Image.Resampling.BILINEAR))
        for img in digits.images
    ]).astype(np.float32) / 255.0
    return images, digits.target


def _blend(digit: np.ndarray, photos: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    photo = photos[rng.integers(len(photos))]
    top, left = rng.integers(0, photo.shape[0] - SIZE), rng.integers(0, photo.shape[1] - SIZE)
    patch = photo[top:top + SIZE, left:left + SIZE].astype(np.float32)
    return np.abs(patch - digit[..., None] * 255.0).astype(np.uint8)


def _save(folder: Path, images: list[np.ndarray], labels: list[int]) -> None:
    for index, (image, label) in enumerate(zip(images, labels)):
        path = folder / str(label) / f"{index:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        mode = "L" if image.ndim == 2 else "RGB"
        Image.fromarray(image, mode=mode).save(path)


def make_demo_domains(root: str | Path, labels_per_class: int = 10, val_per_class: int = 5,
                      seed: int = 0) -> dict[str, Path]:
    """Write ``source/<digit>/`` and ``target/{train,val,test}/<digit>/`` under ``root``; return both paths."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    images, labels = _digit_images()
    order = rng.permutation(len(labels))
    source_idx, target_idx = order[: len(order) // 2], order[len(order) // 2:]
    _save(root / "source", [(images[i] * 255).astype(np.uint8) for i in source_idx], [int(labels[i]) for i in source_idx])
    photos = [np.asarray(p) for p in load_sample_images().images]
    splits: dict[str, tuple[list[np.ndarray], list[int]]] = {"train": ([], []), "val": ([], []), "test": ([], [])}
    seen: dict[int, int] = {}
    for i in target_idx:
        label = int(labels[i])
        rank = seen.get(label, 0)
        seen[label] = rank + 1
        split = "train" if rank < labels_per_class else "val" if rank < labels_per_class + val_per_class else "test"
        splits[split][0].append(_blend(images[i], photos, rng))
        splits[split][1].append(label)
    for split, (split_images, split_labels) in splits.items():
        _save(root / "target" / split, split_images, split_labels)
    return {"source": root / "source", "target": root / "target"}
