"""Decode once: images held in memory give the files' tensors, bit for bit, within the budget."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import cvtransfer
from cvtransfer.config import Config
from cvtransfer.data import memory as memory_module
from cvtransfer.data.domains import FeatureRowsDataset
from cvtransfer.data.loaders import ImageDataset, make_loader
from cvtransfer.data.memory import ImageMemory, MemoryImageDataset, decoded_bytes, loader_workers
from cvtransfer.data.transforms import Preprocessing, eval_transform, train_transform
from cvtransfer.errors import ConfigError, DataError
from tests.conftest import tiny_config
from tests.losses.conftest import adapt_config, write_domains

# a non-default input size and crop, bicubic, ImageNet's statistics: nothing that would hide a difference
PRE = Preprocessing(24, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "bicubic", 0.9)
SHAPES = [(30, 20), (25, 37), (33, 33)]  # (height, width): no two alike, none square but one


def write_mixed_images(folder: Path) -> list[tuple[str, int]]:
    """Ten samples of two classes: RGB images of several sizes, and a grayscale one per class."""
    rng = np.random.default_rng(0)
    samples = []
    for label in range(2):
        for i in range(5):
            height, width = SHAPES[i % len(SHAPES)]
            path = folder / f"{label}_{i}.png"
            folder.mkdir(parents=True, exist_ok=True)
            if i == 4:
                Image.fromarray(rng.integers(0, 256, (height, width), dtype=np.uint8), mode="L").save(path)
            else:
                Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
            samples.append((str(path), label))
    return samples


@pytest.fixture
def samples(tmp_path: Path) -> list[tuple[str, int]]:
    return write_mixed_images(tmp_path / "images")


def batches(dataset: torch.utils.data.Dataset, epochs: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Every batch of ``epochs`` epochs of a seeded training loader, torch's global RNG seeded the same first
    (the v2 transforms draw from it)."""
    torch.manual_seed(7)
    loader = make_loader(dataset, 4, train=True, seed=3)
    return [(images.clone(), labels.clone()) for _ in range(epochs) for images, labels in loader]


def assert_same_batches(got: list, expected: list) -> None:
    assert len(got) == len(expected) > 0
    for (images, labels), (file_images, file_labels) in zip(got, expected):
        assert torch.equal(labels, file_labels)
        assert images.dtype == file_images.dtype == torch.float32
        assert torch.equal(images, file_images)


@pytest.mark.parametrize("augment", ["none", "light", "strong"])
def test_same_seed_same_first_batch_as_the_files(samples: list, augment: str) -> None:
    held = ImageMemory("on").dataset(samples, PRE, augment)
    assert isinstance(held, MemoryImageDataset)
    files = ImageDataset(samples, train_transform(PRE, augment))
    assert_same_batches(batches(held)[:1], batches(files)[:1])


@pytest.mark.parametrize("augment", ["light", "strong"])
def test_augmentation_is_drawn_the_same_over_epochs(samples: list, augment: str) -> None:
    held = ImageMemory("on").dataset(samples, PRE, augment)
    assert isinstance(held, MemoryImageDataset)
    kept = [image.clone() for image in held.images]
    assert_same_batches(batches(held, epochs=3), batches(ImageDataset(samples, train_transform(PRE, augment)),
                                                                      epochs=3))
    assert all(torch.equal(a, b) for a, b in zip(held.images, kept))  # no transform wrote into the held images


def test_evaluation_holds_the_cropped_pixels_and_only_normalises(samples: list) -> None:
    held = ImageMemory("on").dataset(samples, PRE, "none")
    assert isinstance(held, MemoryImageDataset)
    assert {tuple(image.shape) for image in held.images} == {(3, 24, 24)}
    assert {image.dtype for image in held.images} == {torch.uint8}
    assert len({image.untyped_storage().data_ptr() for image in held.images}) == 1  # one (N, 3, S, S) tensor
    files = ImageDataset(samples, eval_transform(PRE))
    for index in range(len(samples)):
        image, label = held[index]
        file_image, file_label = files[index]
        assert label == file_label and torch.equal(image, file_image)


def test_only_reads_that_decode_or_augment_get_workers(samples: list) -> None:
    held_crops = ImageMemory("on").dataset(samples, PRE, "none")
    held_images = ImageMemory("on").dataset(samples, PRE, "light")
    files = ImageMemory("off").dataset(samples, PRE, "none")
    rows = ImageMemory("on").dataset([("features.npy#0", 0)], PRE, "none")
    assert loader_workers(held_crops, 3) == 0 and loader_workers(rows, 3) == 0  # indexing: no worker pays
    assert loader_workers(held_images, 3) == 3 and loader_workers(files, 3) == 3
    # the batches do not depend on it: a worker or not, the held crops give the same ones
    kept = make_loader(held_crops, 2, train=True, seed=1, num_workers=0)
    spread = make_loader(held_crops, 2, train=True, seed=1, num_workers=2)
    assert_same_batches(list(spread), list(kept))


def test_headers_give_the_decoded_size(samples: list) -> None:
    sizes = [decoded_bytes(path) for path, _ in samples]
    assert sizes == [memory_module.decode(path).numel() for path, _ in samples]
    assert sizes[4] == 3 * 25 * 37  # the grayscale one (25 x 37) becomes RGB


def test_over_the_budget_reads_the_files(samples: list, monkeypatch: pytest.MonkeyPatch,
                                         caplog: pytest.LogCaptureFixture) -> None:
    need = sum(decoded_bytes(path) for path, _ in samples)
    memory = ImageMemory("auto")
    memory.limit = need  # exactly enough
    assert isinstance(memory.dataset(samples, PRE, "light"), MemoryImageDataset)
    assert memory.held_bytes == need

    memory = ImageMemory("auto")
    memory.limit = need - 1
    monkeypatch.setattr(memory_module, "decode", lambda *_: pytest.fail("decoded over the budget"))
    with caplog.at_level(logging.INFO, logger="cvtransfer.data.memory"):
        dataset = memory.dataset(samples, PRE, "light", "train")
    assert type(dataset) is ImageDataset and memory.held_bytes == 0
    assert "train images are read from their files" in caplog.text and "raise --memory-limit-mb" in caplog.text

    cropped = len(samples) * 3 * 24 * 24  # evaluation holds the crops: N * 3 * S * S
    memory = ImageMemory("auto")
    memory.limit = cropped - 1
    assert type(memory.dataset(samples, PRE, "none")) is ImageDataset


def test_one_budget_for_the_whole_run(samples: list) -> None:
    memory = ImageMemory("auto")
    memory.limit = len(samples) * 3 * 24 * 24
    assert isinstance(memory.dataset(samples[:5], PRE, "none"), MemoryImageDataset)
    assert isinstance(memory.dataset(samples[5:], PRE, "none"), MemoryImageDataset)
    assert type(memory.dataset(samples[5:], PRE, "light")) is ImageDataset  # the budget is spent


def test_on_ignores_the_budget_and_off_never_decodes(samples: list, monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(ImageMemory("on", limit_mb=0).dataset(samples, PRE, "light"), MemoryImageDataset)
    assert isinstance(ImageMemory("on", limit_mb=0).dataset(samples, PRE, "none"), MemoryImageDataset)
    monkeypatch.setattr(memory_module, "decode", lambda *_: pytest.fail("decoded with --in-memory off"))
    monkeypatch.setattr(memory_module, "decoded_bytes", lambda *_: pytest.fail("read a header with --in-memory off"))
    monkeypatch.setattr(memory_module, "read_image", lambda *_: pytest.fail("read an image with --in-memory off"))
    for augment in ("none", "light"):
        assert type(ImageMemory("off").dataset(samples, PRE, augment)) is ImageDataset


def test_each_path_is_decoded_once(samples: list, monkeypatch: pytest.MonkeyPatch) -> None:
    """Adaptation's target: training images, then a selection sample and the test set of the same paths."""
    decoded: list[str] = []
    decode = memory_module.decode
    monkeypatch.setattr(memory_module, "decode", lambda path, pixels: decoded.append(path) or decode(path, pixels))
    memory = ImageMemory("on")
    memory.dataset(samples + samples[:3], PRE, "light")  # a path listed twice is held once
    monkeypatch.setattr(memory_module, "read_image", lambda *_: pytest.fail("read a file already decoded"))
    selection = memory.dataset(samples[:4], PRE, "none")
    test = memory.dataset(samples, PRE, "none")
    assert sorted(decoded) == sorted(path for path, _ in samples)
    assert isinstance(selection, MemoryImageDataset) and isinstance(test, MemoryImageDataset)
    assert selection.images[0].data_ptr() == test.images[0].data_ptr()  # the crops are held once too
    files = ImageDataset(samples, eval_transform(PRE))
    assert all(torch.equal(test[i][0], files[i][0]) for i in range(len(samples)))


def test_a_file_that_changed_is_one_clear_line(samples: list) -> None:
    Path(samples[2][0]).unlink()
    for mode in ("auto", "on"):
        with pytest.raises(DataError, match=re.escape(f"{samples[2][0]}: ") + ".*it changed after the dataset"):
            ImageMemory(mode).dataset(samples, PRE, "light")


def test_feature_rows_stay_feature_rows() -> None:
    dataset = ImageMemory("on").dataset([("features.npy#0", 0), ("features.npy#1", 1)], PRE, "light")
    assert isinstance(dataset, FeatureRowsDataset)


def test_options_are_checked() -> None:
    assert Config().in_memory == "auto" and Config().memory_limit_mb == 2048
    with pytest.raises(ConfigError, match="--in-memory must be one of auto, on, off"):
        Config(in_memory="yes")
    with pytest.raises(ConfigError, match="--memory-limit-mb must be >= 0"):
        Config(memory_limit_mb=-1)


def test_fit_in_memory_or_from_files_gives_the_same_history(split_dir: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[type] = []
    dataset = ImageMemory.dataset

    def spy(self: ImageMemory, *args: object) -> object:
        made.append(type(result := dataset(self, *args)))
        return result

    monkeypatch.setattr(ImageMemory, "dataset", spy)
    histories = []
    for mode in ("on", "off"):
        made.clear()
        run = cvtransfer.fit(tiny_config(split_dir, tmp_path / mode, epochs=1, augment="light", in_memory=mode))
        assert made == ([MemoryImageDataset] * 2 if mode == "on" else [ImageDataset] * 2)
        histories.append([{k: v for k, v in row.items() if k != "seconds"} for row in run.history])
    assert histories[0] == histories[1] and len(histories[0]) == 1


def test_adapt_in_memory_or_from_files_gives_the_same_history(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The transductive protocol: the target images are trained on, sampled for selection and tested on;
    each is decoded once."""
    source, target = write_domains(tmp_path, 6, 5, 1)
    read: list[str] = []  # every file the memory reads, to decode it or to crop it
    read_image = memory_module.read_image
    monkeypatch.setattr(memory_module, "read_image", lambda path, pixels: read.append(path) or read_image(path, pixels))
    histories = []
    for mode in ("on", "off"):
        config = adapt_config(source, target / "train", tmp_path / mode, epochs=1, augment="light",
                              iters_per_epoch=2, selection_samples=10, method="source-only", in_memory=mode)
        run = cvtransfer.adapt(config)
        histories.append([{k: v for k, v in row.items() if k != "seconds"} for row in run.history])
    assert histories[0] == histories[1] and len(histories[0]) == 1
    assert sorted(read) == sorted({*map(str, source.rglob("*.png")), *map(str, (target / "train").rglob("*.png"))})
