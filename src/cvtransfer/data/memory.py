"""Decode once: the images of a run held in memory as uint8 tensors, so that a step opens no file.

The transforms start with ``ToImage``, which turns a PIL image into the uint8 tensor (3, H, W) that
``pil_to_tensor`` makes: a transform given that tensor returns what it returns for the file, bit
for bit, with the same random draws. A deterministic transform (evaluation, ``--augment none``) goes
further: the resized and cropped pixels are held, (3, S, S) each at the input size S, and a read only
normalises them.

``--in-memory auto`` holds the images while they fit in ``--memory-limit-mb`` (estimated from the
files' headers before anything is decoded) and otherwise reads the files as before; ``on`` holds
them whatever their size; ``off`` never does.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, TypeVar

import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms.v2.functional import normalize_image, pil_to_tensor, to_dtype_image

from cvtransfer.data.domains import FeatureRowsDataset, is_feature_sample
from cvtransfer.data.images import DEFAULT_MAX_PIXELS, ImageReadError, image_size
from cvtransfer.data.loaders import ImageDataset, changed_file, read_image
from cvtransfer.data.transforms import Preprocessing, eval_geometry, train_transform
from cvtransfer.errors import DataError

if TYPE_CHECKING:
    from cvtransfer.config import Config

log = logging.getLogger(__name__)

Sample = tuple[str, int]
MB = 2**20
Item = TypeVar("Item")
Result = TypeVar("Result")


class MemoryImageDataset(Dataset):
    """(path, label) samples whose images are held as uint8 tensors (3, H, W), transformed on each read.

    ``images[i]`` is sample i's image; ``transform`` sees it as a ``tv_tensors.Image``, as it sees
    a file's image after ``ToImage``. The tensors are never written to (the transforms return new ones).
    """

    def __init__(self, samples: Sequence[Sample], images: Sequence[torch.Tensor], transform: Callable) -> None:
        if len(images) != len(samples):
            raise ValueError(f"{len(samples)} samples but {len(images)} images")
        self.samples = list(samples)
        self.images = list(images)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[index]
        if not isinstance(self.transform, Normalise):  # a v2 transform reads the type of what ToImage makes
            image = tv_tensors.Image(image)
        return self.transform(image), self.samples[index][1]


class Normalise:
    """What :func:`normalise` does to a uint8 image, by the same torchvision kernels without the v2 wrapper's
    per-call dispatch, which costs more than the arithmetic on small images (digits: ~40 us of ~50 us)."""

    def __init__(self, pre: Preprocessing) -> None:
        self.mean, self.std = list(pre.mean), list(pre.std)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        scaled = to_dtype_image(image.as_subclass(torch.Tensor), torch.float32, scale=True)
        return normalize_image(scaled, self.mean, self.std, inplace=True)


def loader_workers(dataset: Dataset, workers: int) -> int:
    """The DataLoader workers ``dataset`` deserves: none when a read is only indexing and normalising (held,
    cropped pixels, or rows of a feature file), where a worker would add only the cost of sending the
    batch back; ``workers`` otherwise. The batches are the same either way: such reads draw nothing random."""
    held = isinstance(dataset, MemoryImageDataset) and isinstance(dataset.transform, Normalise)
    return 0 if held or isinstance(dataset, FeatureRowsDataset) else workers


def decode(path: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> torch.Tensor:
    """``path`` as the uint8 tensor (3, H, W) that ``ToImage`` makes of it."""
    return pil_to_tensor(read_image(path, max_pixels))


def decoded_bytes(path: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> int:
    """Bytes of ``path`` decoded to RGB uint8, from its header alone."""
    try:
        width, height = image_size(path, max_pixels)
    except (ImageReadError, OSError) as err:
        raise changed_file(path, err) from None
    return 3 * width * height


class ImageMemory:
    """The images of one run, each decoded once, held within one budget for all its datasets.

    :meth:`dataset` is the one way the streams make an image dataset. Datasets that list the same
    paths share the tensors: adaptation's target images, for one, are decoded once for training,
    and their evaluation pixels are made from those.
    """

    def __init__(self, mode: str = "auto", limit_mb: int = 2048, max_pixels: int = DEFAULT_MAX_PIXELS,
                 workers: int | None = None) -> None:
        if mode not in ("auto", "on", "off"):
            raise ValueError(f"in-memory mode must be auto, on or off, not {mode!r}")
        self.mode = mode
        self.limit = limit_mb * MB
        self.max_pixels = max_pixels
        self.workers = workers or min(8, os.cpu_count() or 1)
        self.decoded: dict[str, torch.Tensor] = {}  # path -> its image as read, (3, H, W)
        self.fitted: dict[tuple[str, Preprocessing], torch.Tensor] = {}  # -> after eval_geometry, (3, S, S)
        self.refused = False  # whether a dataset was over the budget yet

    @classmethod
    def for_config(cls, config: Config) -> ImageMemory:
        """The memory ``--in-memory`` and ``--memory-limit-mb`` ask for."""
        return cls(config.in_memory, config.memory_limit_mb, config.max_image_pixels)

    @property
    def held_bytes(self) -> int:
        return sum(t.numel() for t in self.decoded.values()) + sum(t.numel() for t in self.fitted.values())

    def dataset(self, samples: Sequence[Sample], pre: Preprocessing, augment: str = "none",
                name: str = "images") -> Dataset:
        """``samples`` through ``train_transform(pre, augment)`` (``none``: the evaluation transform), held in
        memory when the mode and the budget allow, else read from their files; rows of a feature file
        as they are. ``name`` says which images in the log ("train", "target test", ...)."""
        samples = list(samples)
        if samples and is_feature_sample(samples[0][0]):
            return FeatureRowsDataset(samples)
        transform = train_transform(pre, augment)
        if self.mode == "off" or not samples:
            return ImageDataset(samples, transform, self.max_pixels)
        paths = list(dict.fromkeys(path for path, _ in samples))
        if augment == "none":  # deterministic: its uint8 result is held, and a read only normalises it
            held, per_read = self._fitted(paths, pre, name), Normalise(pre)
        else:
            held, per_read = self._decoded(paths, name), transform
        if held is None:
            return ImageDataset(samples, transform, self.max_pixels)
        return MemoryImageDataset(samples, [held[path] for path, _ in samples], per_read)

    def _decoded(self, paths: list[str], name: str) -> dict[str, torch.Tensor] | None:
        """Each of ``paths`` as read, decoding those not held yet; None when they would not fit."""
        missing = [path for path in paths if path not in self.decoded]
        if missing:
            if self.mode == "auto" and not self._fits(self._header_bytes(missing), name):
                return None
            start = time.perf_counter()
            with self._out_of_memory(len(missing), name):
                images = self._parallel(lambda p: decode(p, self.max_pixels), missing)
            self.decoded.update(zip(missing, images))
            self._report(name, len(missing), sum(t.numel() for t in images), start)
        return {path: self.decoded[path] for path in paths}

    def _fitted(self, paths: list[str], pre: Preprocessing, name: str) -> dict[str, torch.Tensor] | None:
        """Each of ``paths`` after :func:`eval_geometry`, in one (N, 3, S, S) tensor for those not held
        yet (from their decoded image when held, else from the file); None when they would not fit."""
        missing = [path for path in paths if (path, pre) not in self.fitted]
        if missing:
            size = pre.input_size
            if not self._fits(len(missing) * 3 * size * size, name):
                return None
            start = time.perf_counter()
            geometry = eval_geometry(pre)
            with self._out_of_memory(len(missing), name):
                stacked = torch.empty((len(missing), 3, size, size), dtype=torch.uint8)

                def fill(row: int) -> None:
                    held = self.decoded.get(missing[row])
                    source = tv_tensors.Image(held) if held is not None else read_image(missing[row], self.max_pixels)
                    stacked[row] = geometry(source)

                self._parallel(fill, list(range(len(missing))))
            self.fitted.update(((path, pre), stacked[row]) for row, path in enumerate(missing))
            self._report(name, len(missing), stacked.numel(), start)
        return {path: self.fitted[path, pre] for path in paths}

    def _header_bytes(self, paths: list[str]) -> int:
        return sum(self._parallel(lambda path: decoded_bytes(path, self.max_pixels), paths))

    def _fits(self, need: int, name: str) -> bool:
        if self.mode == "on" or self.held_bytes + need <= self.limit:
            return True
        # one line a run says why and what to change; the run's other datasets would only repeat it
        log.log(logging.DEBUG if self.refused else logging.INFO,
                "%s images are read from their files each step: decoded they would take %.1f MB, over "
                "--memory-limit-mb %d with the %.1f MB already held (raise --memory-limit-mb, or use --in-memory on, "
                "to keep them in memory)", name, need / MB, self.limit // MB, self.held_bytes / MB)
        self.refused = True
        return False

    def _out_of_memory(self, count: int, name: str) -> AbstractContextManager[None]:
        return _out_of_memory(f"{count} {name} images do not fit in memory (--in-memory {self.mode}): use "
                              "--in-memory auto with a lower --memory-limit-mb, or --in-memory off")

    def _parallel(self, function: Callable[[Item], Result], items: list[Item]) -> list[Result]:
        """``function`` over ``items`` in threads: PIL decodes and torch resizes without the GIL."""
        if len(items) < 2 or self.workers < 2:
            return [function(item) for item in items]
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            return list(pool.map(function, items))

    @staticmethod
    def _report(name: str, count: int, size: int, start: float) -> None:
        seconds = time.perf_counter() - start
        # said only when it is a pause the user notices before the first epoch
        log.log(logging.INFO if seconds >= 1 else logging.DEBUG, "%s: %d images held in memory (%.1f MB) in %.1fs",
                name, count, size / MB, seconds)


@contextmanager
def _out_of_memory(message: str) -> Iterator[None]:
    """Running out of memory while decoding, as one DataError line."""
    try:
        yield
    except MemoryError:
        raise DataError(message) from None
    except RuntimeError as err:  # torch's allocator: "can't allocate memory: you tried to allocate ..."
        if "allocate" not in str(err):
            raise
        raise DataError(message) from None
