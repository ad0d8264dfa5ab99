"""Find the images and labels of a dataset and split them, with the checks done before training.

Three layouts are accepted:
- ``DATA_DIR/train/<class>/*`` with optional ``val/`` (or ``valid/``, ``validation/``) and ``test/``;
- ``DATA_DIR/<class>/*``, split automatically (stratified, seeded);
- a CSV file with columns ``path,label`` and optionally ``split`` (train/val/test); relative paths
  are relative to the CSV's folder.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cvtransfer.data.images import DEFAULT_MAX_PIXELS, check_images, list_files
from cvtransfer.errors import DataError

log = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "val", "test")
VAL_ALIASES = ("val", "valid", "validation")
IMBALANCE_WARNING_RATIO = 5.0

Sample = tuple[str, int]


@dataclass
class DatasetSplits:
    """Labelled samples per split, the class names, and the files skipped while reading."""

    classes: list[str]
    train: list[Sample]
    val: list[Sample]
    test: list[Sample] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def split(self, name: str) -> list[Sample]:
        return getattr(self, name)

    def counts(self, name: str) -> dict[str, int]:
        counter = Counter(label for _, label in self.split(name))
        return {cls: counter.get(i, 0) for i, cls in enumerate(self.classes)}

    def to_dict(self) -> dict[str, Any]:
        return {
            "classes": self.classes,
            **{name: [[p, y] for p, y in self.split(name)] for name in SPLIT_NAMES},
            "skipped": [list(item) for item in self.skipped],
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> DatasetSplits:
        splits = {name: [(p, int(y)) for p, y in values.get(name, [])] for name in SPLIT_NAMES}
        skipped = [(p, reason) for p, reason in values.get("skipped", [])]
        return cls(classes=list(values["classes"]), skipped=skipped, **splits)


def discover(
    data: str | Path,
    val_split: float = 0.2,
    test_split: float = 0.0,
    seed: int = 0,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    require_val: bool = True,
) -> DatasetSplits:
    """Read ``data`` in any accepted layout, skip unusable files, split, and check the classes."""
    root = Path(data)
    if not root.exists():
        raise DataError(f"data path {root} does not exist")
    if root.is_file():
        if root.suffix.lower() != ".csv":
            raise DataError(f"data path {root} is a file but not a .csv (expected path,label rows)")
        listed = _read_csv(root)
    elif (root / "train").is_dir():
        listed = _read_split_folders(root)
    else:
        if (root / "images").is_dir() and (root / "masks").is_dir():
            raise DataError(f"{root} holds images/ and masks/: a segmentation dataset; pass --task segmentation "
                            "(else rename them: each folder is read as a class)")
        listed = {"train": _read_class_folders(root)}
    splits = _label_and_filter(_check_listed_once(listed), max_pixels)
    _refuse_unusable_splits(listed, splits, root)
    _split_missing(splits, val_split, test_split, seed, require_val)
    check_classes(splits, root)
    return splits


def discover_pooled(data: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> DatasetSplits:
    """Every class folder of ``data`` as one training split: its train/ val/ test/ folders pooled, whether they
    hold the same classes or different ones (few-shot data: base and novel classes); plain class folders or a
    CSV as :func:`discover` reads them."""
    root = Path(data)
    if not (root / "train").is_dir() and not any((root / name).is_dir() for name in ("test", *VAL_ALIASES)):
        found = discover(root, val_split=0.0, require_val=False, max_pixels=max_pixels)
        return DatasetSplits(found.classes, found.train + found.val + found.test, [], [])
    pooled: dict[str, list[str]] = {}
    for name in ("train", *VAL_ALIASES, "test"):
        if (root / name).is_dir():
            for label, files in _read_class_folders(root / name).items():
                pooled.setdefault(label, []).extend(files)
    splits = _label_and_filter(_check_listed_once({"train": pooled}), max_pixels)
    check_classes(splits, root)
    return splits


def discover_class_splits(data: str | Path, val_split: float = 0.2, test_split: float = 0.0, seed: int = 0,
                          max_pixels: int = DEFAULT_MAX_PIXELS) -> DatasetSplits:
    """Few-shot data, split by class: base classes to train on, novel classes to validate (and test) on.

    A train/ [val/] [test/] layout keeps its folders' classes (a class in two of them is an error); a split
    it lacks (val always, test with ``test_split`` > 0) is a seeded fraction of the training classes, held
    out with all their images. Plain class folders and CSVs likewise. ``classes`` lists the training
    classes, then the val classes, then the test classes (each sorted).
    """
    root = Path(data)
    if not root.exists():
        raise DataError(f"data path {root} does not exist")
    if root.is_file():
        listed = _read_csv(root) if root.suffix.lower() == ".csv" else {}
        if not listed:
            raise DataError(f"data path {root} is a file but not a .csv (expected path,label rows)")
    else:
        listed = _read_split_folders(root) if (root / "train").is_dir() else {"train": _read_class_folders(root)}
    listed = _check_listed_once(listed)
    names = {split: sorted(label for label in by_class if label) for split, by_class in listed.items()}
    for first, second in (("train", "val"), ("train", "test"), ("val", "test")):
        shared = sorted(set(names.get(first, [])) & set(names.get(second, [])))
        if shared:
            raise DataError(f"class(es) {', '.join(shared[:3])} of {root} are in both {first} and {second}: few-shot "
                            "splits hold different classes (novel classes are evaluated); move or rename them")
    rng = random.Random(seed)
    whole = len(names["train"])  # fractions of all the training classes, as --val-split and --test-split read
    for split, fraction in (("test", test_split), ("val", val_split)):
        if names.get(split) or fraction <= 0:
            continue
        pool = names["train"][:]
        rng.shuffle(pool)
        count = max(1, round(whole * fraction)) if len(pool) > 2 else 0
        if count == 0 or count > len(pool) - 2:
            raise DataError(f"{root} has {len(pool)} training classes: too few to hold out {split} classes "
                            f"(--{split}-split {fraction}); add classes or give a {split}/ folder")
        names[split] = sorted(pool[:count])
        names["train"] = sorted(pool[count:])
        listed[split] = {label: listed["train"].pop(label) for label in names[split]}
    classes = names["train"] + names.get("val", []) + names.get("test", [])
    splits = _label_and_filter(listed, max_pixels, classes)
    _refuse_unusable_splits(listed, splits, root)
    if len(names["train"]) < 2:
        raise DataError(f"{root} has {len(names['train'])} training class(es) with images; at least 2 are needed")
    if not splits.val:
        raise DataError(f"{root} has no readable val images: give a val/ folder of other classes or --val-split")
    return splits


def _read_split_folders(root: Path) -> dict[str, dict[str, list[str]]]:
    listed = {"train": _read_class_folders(root / "train")}
    for name in VAL_ALIASES:
        if (root / name).is_dir():
            listed["val"] = _read_class_folders(root / name)
            break
    if (root / "test").is_dir():
        listed["test"] = _read_class_folders(root / "test")
    return listed


def _read_class_folders(folder: Path) -> dict[str, list[str]]:
    """class name -> file paths; files outside class folders go under the key ''."""
    by_class: dict[str, list[str]] = {}
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            by_class[entry.name] = [str(p) for p in list_files(entry)]
        elif entry.is_file():
            by_class.setdefault("", []).append(str(entry))
    return by_class


def _read_csv(path: Path) -> dict[str, dict[str, list[str]]]:
    """split -> label -> files of a ``path,label[,split]`` CSV (header names in any case, UTF-8 with or
    without BOM, else Latin-1 with a warning)."""
    rows = csv.DictReader(io.StringIO(_read_text(path), newline=""))
    columns = {name.strip().lower(): name for name in rows.fieldnames or [] if name}
    if not {"path", "label"} <= set(columns):
        raise DataError(f"{path} must have a header with columns path,label (and optionally split), "
                        f"not {','.join(rows.fieldnames or []) or 'an empty first line'}")
    listed: dict[str, dict[str, list[str]]] = {}
    for row_number, row in enumerate(rows, start=2):
        if not any((value or "").strip() for value in row.values() if isinstance(value, str)):
            continue  # a blank line
        file_text, label = ((row.get(columns[key]) or "").strip() for key in ("path", "label"))
        if not file_text or not label:
            missing = "path" if not file_text else "label"
            raise DataError(f"{path} line {row_number}: no {missing}: give every row a path and a label")
        split = (row.get(columns.get("split", "")) or "train").strip().lower()
        split = "val" if split in VAL_ALIASES else split
        if split not in SPLIT_NAMES:
            raise DataError(f"{path} line {row_number}: split must be train, val or test, not '{split}'")
        file = Path(file_text)
        file = file if file.is_absolute() else path.parent / file
        listed.setdefault(split, {}).setdefault(label, []).append(str(file))
    return listed


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        log.warning("%s is not UTF-8: read as Latin-1 (save it as UTF-8 if names look wrong)", path)
        return data.decode("latin-1")


def _check_listed_once(listed: dict[str, dict[str, list[str]]]) -> dict[str, dict[str, list[str]]]:
    """Refuse a file under two labels or in two splits (leakage); keep one copy of a file listed twice."""
    seen: dict[str, tuple[str, str]] = {}
    repeated = 0
    # every split and class stays, even one whose files all repeat (its emptiness is reported later)
    kept: dict[str, dict[str, list[str]]] = {split: {label: [] for label in by_class} for split, by_class in listed.items()}
    for split, by_class in listed.items():
        for label, files in by_class.items():
            for file in files:
                key = os.path.realpath(file)
                if key in seen:
                    if seen[key] != (split, label):
                        before = seen[key]
                        where = (f"under labels '{before[1]}' and '{label}'" if before[0] == split
                                 else f"in the {before[0]} and {split} splits (leakage)")
                        raise DataError(f"{file} is listed {where}: list each image once")
                    repeated += 1
                    continue
                seen[key] = (split, label)
                kept[split][label].append(file)
    if repeated:
        log.warning("%d file(s) listed more than once: each is used once", repeated)
    return kept


def _label_and_filter(listed: dict[str, dict[str, list[str]]], max_pixels: int,
                      classes: list[str] | None = None) -> DatasetSplits:
    """Label the listed files (``classes``, default the training classes, sorted) and skip unusable ones."""
    listed.setdefault("train", {})
    train_classes = classes if classes is not None else sorted(name for name in listed["train"] if name)
    for split, by_class in listed.items():
        extra = sorted(set(by_class) - set(train_classes) - {""})
        if extra:
            raise DataError(
                f"class(es) {', '.join(extra)} appear in {split} but not in train: "
                "add training images for them or remove them"
            )
    index = {name: i for i, name in enumerate(train_classes)}
    samples: dict[str, list[Sample]] = {name: [] for name in SPLIT_NAMES}
    skipped: list[tuple[str, str]] = []
    for split, by_class in listed.items():
        skipped += [(p, "not inside a class folder") for p in by_class.get("", [])]
        paths = [(p, index[c]) for c, files in by_class.items() if c for p in files]
        reasons = check_images([p for p, _ in paths], max_pixels)
        for (path, label), reason in zip(paths, reasons):
            if reason is None:
                samples[split].append((path, label))
            else:
                skipped.append((path, reason))
    if skipped:
        log.warning("skipped %d unusable file(s) (unreadable or not images)", len(skipped))
    return DatasetSplits(classes=train_classes, skipped=skipped, **samples)


def _refuse_unusable_splits(listed: dict[str, dict[str, list[str]]], splits: DatasetSplits, root: Path) -> None:
    """A val or test split the data gives must keep an image: never replace it by a part of train."""
    for name in ("val", "test"):
        given = sum(len(files) for label, files in listed.get(name, {}).items() if label)
        if given and not splits.split(name):
            raise DataError(f"the {name} split of {root} lists {given} file(s) and none is a readable image "
                            f"(see the warnings): fix them, or remove that split to carve one out of train")


def _split_missing(splits: DatasetSplits, val_split: float, test_split: float, seed: int, require_val: bool) -> None:
    """Carve test and val out of train when the data has no such split.

    Both fractions are of the whole labelled pool, as users read them: ``--val-split 0.2 --test-split 0.2``
    on 100 images of a class holds out 20 for val and 20 for test (not 20% of the 80 left after test).
    """
    carve_test = not splits.test and test_split > 0
    carve_val = not splits.val and require_val
    if carve_val and val_split <= 0:
        raise DataError("the data has no val/ split and --val-split is 0: give a val/ folder or a fraction")
    if carve_test and carve_val and val_split + test_split >= 0.95:
        raise DataError(f"--val-split {val_split} and --test-split {test_split} leave less than 5% of the data "
                        "for training: lower them (both are fractions of the whole data set)")
    rng = random.Random(seed)
    whole = Counter(label for _, label in splits.train)
    if carve_test:
        splits.train, splits.test = stratified_split(splits.train, test_split, rng)
    if carve_val:
        splits.train, splits.val = stratified_split(splits.train, val_split, rng, whole=whole)


def stratified_split(
    samples: list[Sample], fraction: float, rng: random.Random, whole: Counter[int] | None = None
) -> tuple[list[Sample], list[Sample]]:
    """Hold out ``fraction`` of each class (at least one image of every class that has two).

    ``whole``: per-class counts the fraction is taken of (default: the samples' own counts), so a
    second split carved after a first one is still a fraction of the original pool.
    Written here rather than with scikit-learn's train_test_split, which refuses classes with a
    single image; such a class stays in training.
    """
    by_label: dict[int, list[Sample]] = {}
    for sample in samples:
        by_label.setdefault(sample[1], []).append(sample)
    kept: list[Sample] = []
    held: list[Sample] = []
    for label in sorted(by_label):
        items = by_label[label][:]
        rng.shuffle(items)
        base = whole[label] if whole is not None else len(items)
        count = min(max(1, round(base * fraction)), len(items) - 1)
        held += items[:count]
        kept += items[count:]
    return sorted(kept), sorted(held)


def check_classes(splits: DatasetSplits, root: Path) -> None:
    """Errors for unusable class sets, a warning for strong imbalance."""
    counts = splits.counts("train")
    if len(splits.classes) < 2:
        raise DataError(f"{root} has {len(splits.classes)} class(es) with images; at least 2 are needed")
    empty = [name for name, n in counts.items() if n == 0]
    if empty:
        raise DataError(
            f"class folder(s) {', '.join(empty)} in {root} have no usable training images: "
            "add images or remove the folder"
        )
    if max(counts.values()) / min(counts.values()) > IMBALANCE_WARNING_RATIO:
        log.warning(
            "classes are imbalanced (%d to %d images): consider --class-weights auto or --balanced-sampler",
            max(counts.values()),
            min(counts.values()),
        )


def write_skipped(splits: DatasetSplits, path: Path) -> None:
    """Write the skipped files and the reasons, one per line, when there are any."""
    if splits.skipped:
        from cvtransfer.io import atomic_write_text

        atomic_write_text(path, "".join(f"{p}\t{reason}\n" for p, reason in splits.skipped))


def carve_missing(splits: Any, val_split: float, test_split: float, seed: int,
                  key: Callable[[Any], Any] | None = None) -> None:
    """Carve test, then val, out of ``splits.train`` when the data has none: seeded, fractions of the whole
    pool; each split sorted (by ``key``). For the pair-per-sample splits of segmentation and detection."""
    carve_test, carve_val = not splits.test and test_split > 0, not splits.val and val_split > 0
    if carve_test and carve_val and val_split + test_split >= 0.95:
        raise DataError(f"--val-split {val_split} and --test-split {test_split} leave less than 5% of the data "
                        "for training: lower them (both are fractions of the whole data set)")
    pool = sorted(splits.train, key=key)
    random.Random(seed).shuffle(pool)
    whole = len(pool)
    for name, fraction, carve in (("test", test_split, carve_test), ("val", val_split, carve_val)):
        if carve:
            if len(pool) < 2:
                raise DataError(f"{len(pool)} training image(s): too few to hold out a {name} split; add images "
                                f"or give a {name}/ folder")
            count = min(max(1, round(whole * fraction)), len(pool) - 1)
            setattr(splits, name, sorted(pool[:count], key=key))
            pool = pool[count:]
    splits.train = sorted(pool, key=key)
