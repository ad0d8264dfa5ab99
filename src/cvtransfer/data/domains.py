"""Two domains for adaptation: labelled source data and (unlabelled) target data.

The source is read like ``fit``'s data (train/ val/ [test/] class folders, plain class folders
split by ``--val-split``, or a CSV). The target is class folders (labels kept for evaluation
only), a train/ [test/] layout, or a plain folder of images without labels. Either domain can
instead be a feature file (``.mat``, ``.npz``, or ``.npy`` with ``<stem>_labels.npy`` beside it)
whose rows are precomputed features; its samples are then ``("FILE#ROW", label)``.

    DomainSplits: source train / val / test, target_train (what adaptation sees, labels ignored),
                  target_test (labelled: what the run is evaluated on; also stored as ``test``)
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from cvtransfer.data.folders import DatasetSplits, discover, stratified_split
from cvtransfer.data.images import is_image_file, list_files, split_usable
from cvtransfer.errors import DataError

log = logging.getLogger(__name__)

Sample = tuple[str, int]
FEATURE_SUFFIXES = (".mat", ".npz", ".npy")
UNLABELLED = -1
ROW_SEPARATOR = "#"


def is_feature_file(path: str | Path) -> bool:
    return Path(path).suffix.lower() in FEATURE_SUFFIXES and Path(path).is_file()


@lru_cache(maxsize=8)
def load_feature_file(path: str) -> tuple[torch.Tensor, np.ndarray]:
    """(features float32 (N, D), raw labels (N,)) of a feature file; cached per process."""
    file = Path(path)
    if not file.is_file():
        raise DataError(f"feature file {file} does not exist")
    try:
        if file.suffix.lower() == ".mat":
            from scipy.io import loadmat

            content = loadmat(file)
            features = _first_key(content, ("fts", "features", "feas", "X", "x"), file)
            labels = _first_key(content, ("labels", "label", "y", "Y"), file)
        elif file.suffix.lower() == ".npz":
            with np.load(file, allow_pickle=False) as content:
                features, labels = _first_key(content, ("features", "X", "x"), file), _first_key(
                    content, ("labels", "y"), file)
        else:
            labels_file = file.with_name(f"{file.stem}_labels.npy")
            features = np.load(file, allow_pickle=False)
            if not labels_file.is_file():
                raise DataError(f"{file}: the labels must be in {labels_file.name} beside it")
            labels = np.load(labels_file, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise DataError(f"{file} cannot be read as a feature file: {err}".splitlines()[0]) from None
    features, labels = np.asarray(features, dtype=np.float32), np.asarray(labels).reshape(-1)
    if features.ndim != 2 or len(features) != len(labels):
        raise DataError(f"{file}: expected a (N, D) feature matrix and N labels, got {features.shape} and "
                        f"{len(labels)} labels")
    return torch.from_numpy(features), labels


def _first_key(content: Any, keys: tuple[str, ...], file: Path) -> np.ndarray:
    for key in keys:
        if key in content:
            return np.asarray(content[key])
    raise DataError(f"{file} has none of the arrays {', '.join(keys)}")


def feature_file_samples(path: str | Path, classes: list[str] | None = None) -> tuple[list[str], list[Sample]]:
    """Class names (sorted label values as text) and ``("FILE#ROW", label)`` samples of a feature file."""
    _, raw = load_feature_file(str(path))
    names = sorted({str(v) for v in raw.tolist()}, key=_natural)
    classes = classes or names
    index = {name: i for i, name in enumerate(classes)}
    samples = [(f"{path}{ROW_SEPARATOR}{row}", index.get(str(value), UNLABELLED)) for row, value in enumerate(raw.tolist())]
    return names, samples


def _natural(name: str) -> tuple[int, Any]:
    return (0, float(name)) if name.replace(".", "", 1).lstrip("-").isdigit() else (1, name)


class FeatureRowsDataset(Dataset):
    """``("FILE#ROW", label)`` samples read as rows of their feature file."""

    def __init__(self, samples: list[Sample]) -> None:
        self.samples = list(samples)
        self.rows = [_locate(locator) for locator, _ in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        file, row = self.rows[index]
        return load_feature_file(file)[0][row], self.samples[index][1]


def domain_dataset(samples: list[Sample], transform: Any, max_pixels: int = 89_478_485) -> Dataset:
    """Rows of a feature file for ``FILE#ROW`` samples, else images through ``transform``."""
    from cvtransfer.data.loaders import ImageDataset

    if samples and is_feature_sample(samples[0][0]):
        return FeatureRowsDataset(samples)
    return ImageDataset(samples, transform, max_pixels)


def _locate(locator: str) -> tuple[str, int]:
    file, _, row = locator.rpartition(ROW_SEPARATOR)
    return file, int(row)


def is_feature_sample(locator: str) -> bool:
    file, _, row = locator.rpartition(ROW_SEPARATOR)
    return bool(file) and row.isdigit() and Path(file).suffix.lower() in FEATURE_SUFFIXES


def feature_width(samples: list[Sample]) -> int:
    """D of the feature file behind ``samples``."""
    return int(load_feature_file(_locate(samples[0][0])[0])[0].shape[1])


@dataclass
class DomainSplits(DatasetSplits):
    """Source splits plus the target's: ``target_train`` (adaptation input) and ``target_test`` (labelled)."""

    target_train: list[Sample] = field(default_factory=list)
    target_test: list[Sample] = field(default_factory=list)

    @property
    def features(self) -> bool:
        """True when the domains are feature files rather than images."""
        return is_feature_sample(self.train[0][0])

    @property
    def target_labelled(self) -> bool:
        return bool(self.target_test)

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "target_train": [[p, y] for p, y in self.target_train],
                "target_test": [[p, y] for p, y in self.target_test]}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> DomainSplits:
        base = DatasetSplits.from_dict(values)
        return cls(classes=base.classes, train=base.train, val=base.val, test=base.test, skipped=base.skipped,
                   target_train=[(p, int(y)) for p, y in values.get("target_train", [])],
                   target_test=[(p, int(y)) for p, y in values.get("target_test", [])])


def discover_domains(source: str | Path, target: str | Path, target_test: str | Path | None = None,
                     val_split: float = 0.2, seed: int = 0, max_pixels: int = 89_478_485) -> DomainSplits:
    """Read both domains, check that their classes match, and choose the labelled target test set.

    The target test set is ``target_test`` if given, else TGT_DIR/test/ (with a train/ layout), else
    the target images themselves when they are labelled (the transductive protocol of the papers),
    else none (the run then reports source metrics only).
    """
    source_splits = _read_source(Path(source), val_split, seed, max_pixels)
    classes = source_splits.classes
    target_train, target_held, skipped = _read_target(Path(target), classes, max_pixels)
    if target_test is not None:
        _, test, more = _read_labelled(Path(target_test), classes, max_pixels, "--target-test", strict=False)
        skipped += more
    elif target_held:
        test = target_held
    else:
        test = [s for s in target_train if s[1] != UNLABELLED]
        if test and len(test) < len(target_train):
            log.warning("only %d of %d target images are labelled: target metrics use those", len(test),
                        len(target_train))
    if not target_train:
        raise DataError(f"target {target} has no usable images")
    return DomainSplits(classes=classes, train=source_splits.train, val=source_splits.val, test=test,
                        skipped=source_splits.skipped + skipped, target_train=target_train, target_test=test)


def _read_source(path: Path, val_split: float, seed: int, max_pixels: int) -> DatasetSplits:
    if not is_feature_file(path):
        return discover(path, val_split, 0.0, seed, max_pixels)
    classes, samples = feature_file_samples(path)
    if len(classes) < 2:
        raise DataError(f"source {path} has {len(classes)} class(es); at least 2 are needed")
    train, val = stratified_split(samples, val_split, random.Random(seed)) if val_split > 0 else (samples, [])
    if not val:
        raise DataError(f"source {path}: --val-split must be above 0 for a feature file (it has no val split)")
    return DatasetSplits(classes=classes, train=train, val=val)


def _read_target(path: Path, classes: list[str], max_pixels: int
                 ) -> tuple[list[Sample], list[Sample], list[tuple[str, str]]]:
    """(target train samples, labelled target test samples from TGT_DIR/test/, skipped files)."""
    if not path.exists():
        raise DataError(f"target {path} does not exist")
    if is_feature_file(path) or (path.is_dir() and _has_class_folders(path)) or path.suffix.lower() == ".csv":
        _, train, skipped = _read_labelled(path / "train" if (path / "train").is_dir() else path, classes,
                                           max_pixels, "target")
        test: list[Sample] = []
        if (path / "test").is_dir():
            _, test, more = _read_labelled(path / "test", classes, max_pixels, "target")
            skipped += more
        return train, test, skipped
    if path.is_dir():  # a plain folder of images: no labels at all
        usable, skipped = folder_images(path, max_pixels)
        return [(f, UNLABELLED) for f in usable], [], skipped
    raise DataError(f"target {path} is neither a folder of images nor a feature file (.mat, .npz, .npy)")


def folder_images(path: Path, max_pixels: int) -> tuple[list[str], list[tuple[str, str]]]:
    """Every image file under ``path`` (any layout) that loads, and the skipped ones with their reason."""
    return split_usable([str(f) for f in list_files(path) if is_image_file(f)], max_pixels)


def domain_samples(path: str | Path, max_pixels: int) -> list[Sample]:
    """Every usable image under ``path`` (labels ignored), or every row of a feature file."""
    path = Path(path)
    if is_feature_file(path):
        return feature_file_samples(path)[1]
    if not path.is_dir():
        raise DataError(f"{path} is neither a folder of images nor a feature file (.mat, .npz, .npy)")
    usable, _ = folder_images(path, max_pixels)
    if len(usable) < 4:
        raise DataError(f"{path} has {len(usable)} usable image(s); measuring a shift needs at least 4")
    return [(f, 0) for f in usable]


def _has_class_folders(path: Path) -> bool:
    return any(entry.is_dir() and not entry.name.startswith(".") for entry in path.iterdir())


def _read_labelled(path: Path, classes: list[str], max_pixels: int, what: str, strict: bool = True
                   ) -> tuple[list[str], list[Sample], list[tuple[str, str]]]:
    """Labelled samples of ``path`` (class folders, CSV or feature file) in the source's class order."""
    if is_feature_file(path):
        found, samples = feature_file_samples(path, classes)
        _check_class_set(found, classes, path, what, strict)
        return found, samples, []
    root = path / "train" if (path / "train").is_dir() else path
    found_splits = discover(root, val_split=0.0, require_val=False, max_pixels=max_pixels)
    _check_class_set(found_splits.classes, classes, path, what, strict)
    remap = {i: classes.index(name) for i, name in enumerate(found_splits.classes)}
    samples = [(p, remap[y]) for p, y in found_splits.train + found_splits.val + found_splits.test]
    return found_splits.classes, samples, found_splits.skipped


def _check_class_set(found: list[str], classes: list[str], path: Path, what: str, strict: bool) -> None:
    """The class sets must match; a test set may lack classes (a warning) but never add one."""
    extra, missing = sorted(set(found) - set(classes)), sorted(set(classes) - set(found))
    if extra:
        raise DataError(f"{what} {path} has class(es) the source lacks: {', '.join(extra)}; the class sets must "
                        "match (rename or remove those folders)")
    if missing and strict:
        raise DataError(f"{what} {path} lacks the source's class(es) {', '.join(missing)}; the class sets must "
                        "match (add those folders, or remove them from the source)")
    if missing:
        log.warning("%s %s has no images of class(es) %s", what, path, ", ".join(missing))
