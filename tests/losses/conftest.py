"""Two small generated domains with a visible shift: dark backgrounds (source), bright ones (target)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import COLORS, tiny_config

CLASSES = ("a", "b", "c")


def write_domain(folder: Path, per_class: int, seed: int, background: tuple[int, int], size: int = 20) -> None:
    """Class = colour of the centre square; the domain = the brightness range of the noisy background."""
    rng = np.random.default_rng(seed)
    for index, name in enumerate(CLASSES):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(*background, (size, size, 3)).astype(np.uint8)
            lo, hi = size // 4, 3 * size // 4
            pixels[lo:hi, lo:hi] = np.clip(np.array(COLORS[index]) // 2 + pixels[lo:hi, lo:hi] // 2, 0, 255)
            Image.fromarray(pixels).save(folder / name / f"{name}_{i}.png")


def write_domains(root: Path, source: int, target_train: int, target_test: int) -> tuple[Path, Path]:
    """(source class folders, target with train/ and test/ class folders), the given images per class."""
    source_dir, target = root / "source", root / "target"
    write_domain(source_dir, source, seed=0, background=(0, 70))
    write_domain(target / "train", target_train, seed=1, background=(120, 230))
    write_domain(target / "test", target_test, seed=2, background=(120, 230))
    return source_dir, target


@pytest.fixture
def domains(tmp_path: Path) -> tuple[Path, Path]:
    """(source class folders, target with train/ and test/ class folders)."""
    return write_domains(tmp_path, 12, 10, 5)


def adapt_config(source: Path, target: Path, out: Path, **options: object):
    """tiny_config plus the adaptation settings of a fast run (4 iterations per epoch)."""
    values = dict(target=str(target), method="dann", bottleneck_dim=16, iters_per_epoch=4, discriminator_dim=16,
                  selection_samples=20, shift_samples=20, lr=0.01, optimizer="sgd", scheduler="inv")
    values.update(options)
    return tiny_config(source, out, **values)
