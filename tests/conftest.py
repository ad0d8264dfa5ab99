"""Tiny generated data and settings shared by the tests (nothing here needs ../shared or a network)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cvtransfer import Config

torch.set_num_threads(2)

COLORS = [(200, 30, 30), (30, 180, 30), (30, 30, 200)]


def write_class_images(folder: Path, per_class: dict[str, int], seed: int = 0, size: int = 20) -> None:
    """Noisy images whose class is the colour of a centre square (learnable in a few steps)."""
    rng = np.random.default_rng(seed)
    for index, (name, count) in enumerate(per_class.items()):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            pixels = rng.integers(0, 70, (size, size, 3)).astype(np.uint8)
            lo, hi = size // 4, 3 * size // 4
            pixels[lo:hi, lo:hi] = np.array(COLORS[index % len(COLORS)]) // 2 + pixels[lo:hi, lo:hi]
            Image.fromarray(pixels).save(folder / name / f"{name}_{i}.png")


def write_split_folders(root: Path, train: int, val: int, test: int, classes: str = "abc", size: int = 20) -> Path:
    """DATA_DIR ``root`` with train/ val/ test/ class folders of ``train``, ``val``, ``test`` images per class."""
    for seed, (split, count) in enumerate((("train", train), ("val", val), ("test", test))):
        write_class_images(root / split, {name: count for name in classes}, seed=seed, size=size)
    return root


@pytest.fixture
def split_dir(tmp_path: Path) -> Path:
    """DATA_DIR with train/ val/ test/ and three classes."""
    return write_split_folders(tmp_path / "data", 10, 4, 4)


@pytest.fixture
def folder_dir(tmp_path: Path) -> Path:
    """DATA_DIR of plain class folders (split automatically)."""
    root = tmp_path / "folders"
    write_class_images(root, {"a": 10, "b": 10, "c": 10})
    return root


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own feature cache."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("CVTRANSFER_CACHE", str(cache))
    return cache


@pytest.fixture(autouse=True)
def quiet_lightning() -> None:
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)


def tiny_config(data: Path, out: Path, **options: object) -> Config:
    """A Config for a fast run: tinycnn at 16 px, random init, CPU, no progress bars, no report."""
    values = dict(data=str(data), out=str(out), backbone="tinycnn", weights="none", image_size=16, epochs=2,
                  batch_size=8, lr=3e-3, progress=False, accelerator="cpu", num_workers=0, augment="none",
                  report=False)
    values.update(options)
    return Config(**values)


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny finished run folder (2 epochs, three classes, test split), shared read-only: copy it to change it."""
    import cvtransfer

    root = tmp_path_factory.mktemp("finished")
    data = root / "data"
    write_split_folders(data, 10, 4, 4)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CVTRANSFER_CACHE", str(root / "cache"))
        logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
        return cvtransfer.fit(tiny_config(data, root / "run")).path


@pytest.fixture(scope="session")
def finished_report(finished_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """report.html of ``finished_run``, written elsewhere through the API call ``cvtransfer.report``."""
    import cvtransfer

    out = tmp_path_factory.mktemp("report") / "report.html"
    assert cvtransfer.report(finished_run, out) == out
    return out
