"""Object detection labels in memory: boxes per image, checked, their layouts found, summarised.

Three label formats are told apart by their layout (read and written by :mod:`cvtransfer.data.box_formats`):
- COCO: a folder holding one ``*.json`` (``annotations.json`` or ``instances*.json`` preferred among several);
  its images relative to the folder, else in ``folder/images/``;
- Pascal VOC: ``Annotations/*.xml`` + ``JPEGImages/`` (or ``annotations/`` + ``images/``); classes from
  ``classes.txt`` when present, else the sorted names;
- YOLO: ``images/`` + ``labels/<stem>.txt`` (``class cx cy w h``, normalised); names from ``classes.txt`` or
  ``data.yaml``'s ``names``.
Splits: ``train/`` (``val/`` or ``valid/``, ``test/``) folders each in a format, or Ultralytics' ``images/train``
+ ``labels/train``; otherwise one set, ``all``, which the engine splits later.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from cvtransfer.data.folders import VAL_ALIASES, _read_text
from cvtransfer.data.images import (
    DEFAULT_MAX_PIXELS,
    ImageReadError,
    _open_checked,
    is_image_file,
    list_files,
)
from cvtransfer.errors import ConfigError, DataError

log = logging.getLogger(__name__)

FORMATS = ("coco", "voc", "yolo")
MISSING_LABELS = ("error", "background")
TOLERANCE = 1.0  # pixels a box may pass the image's border by (rounding): it is clipped back
ROTATED = (5, 6, 7, 8)  # EXIF orientations that swap width and height
LAYOUTS_HELP = ("COCO (a folder with one .json and its images), Pascal VOC (Annotations/*.xml + JPEGImages/) or "
                "YOLO (images/ + labels/*.txt with classes.txt or data.yaml), each alone or in train/ val/ test/")
QUANTILES = {"min": 0.0, "p10": 0.1, "p25": 0.25, "median": 0.5, "p75": 0.75, "p90": 0.9, "max": 1.0}
ANCHOR_GRID = tuple(sorted({round(2 ** (k / 2)) for k in range(4, 33)}))  # 4, 6, 8, 11, 16, 23, 32, 45, 64...


@dataclass(frozen=True, eq=False)
class BoxImage:
    """One image's boxes: (N, 4) float64 x1, y1, x2, y2 in pixels from its top-left corner, and (N,) int64
    labels indexing the class list (0 is the first class, not background). No box: shape (0, 4)."""

    image: str
    width: int
    height: int
    boxes: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "boxes", np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4))
        object.__setattr__(self, "labels", np.asarray(self.labels, dtype=np.int64).reshape(-1))
        assert len(self.boxes) == len(self.labels), "one label per box"


def box_image(image: str | Path, width: int, height: int, boxes: Sequence[Sequence[float]],
              labels: Sequence[int]) -> BoxImage:
    """A :class:`BoxImage` from lists of boxes (x1, y1, x2, y2) and labels."""
    return BoxImage(str(image), width, height, np.array(boxes, dtype=np.float64).reshape(-1, 4),
                    np.array(labels, dtype=np.int64))


@dataclass
class BoxSet:
    """Images with their boxes, and the class names the labels index. ``category_ids``: COCO's id of each
    class where the labels came from COCO (written back by the COCO writer), else None."""

    classes: list[str]
    images: list[BoxImage]
    category_ids: list[int] | None = field(default=None)

    @property
    def num_boxes(self) -> int:
        return sum(len(image.boxes) for image in self.images)


@dataclass(frozen=True)
class Layout:
    """Where one set's labels are: ``labels`` is the COCO json, the VOC annotations or the YOLO labels folder;
    class files (classes.txt, data.yaml) are looked for in ``names_dirs``, in order."""

    fmt: str
    folder: Path
    images: Path
    labels: Path
    names_dirs: tuple[Path, ...] = ()


def detect_format(folder: str | Path) -> str:
    """"coco", "voc" or "yolo": the label format of ``folder``, told by its layout."""
    return find_layout(Path(folder)).fmt


def find_layout(folder: Path, names_dirs: tuple[Path, ...] = ()) -> Layout:
    """The one layout of ``folder``; an error if it has none, or labels of several formats."""
    if not folder.is_dir():
        state = "is not a folder" if folder.exists() else "does not exist"
        raise DataError(f"data path {folder} {state}: give a folder in {LAYOUTS_HELP}")
    annotations = _first_dir(folder, ("Annotations", "annotations"))
    jsons = sorted(folder.glob("*.json"))
    found = {"voc": annotations is not None and next(annotations.rglob("*.xml"), None) is not None,
             "yolo": (folder / "labels").is_dir() and (folder / "images").is_dir(), "coco": bool(jsons)}
    formats = [fmt for fmt, present in found.items() if present]
    if len(formats) > 1:
        raise DataError(f"{folder} holds labels of several formats ({', '.join(formats)}): keep one per folder")
    if not formats:
        raise DataError(f"{folder} has no detection labels in a known layout: give {LAYOUTS_HELP}")
    names_dirs = names_dirs or (folder,)
    if formats[0] == "coco":
        return Layout("coco", folder, folder, _coco_json(folder, jsons), names_dirs)
    if formats[0] == "yolo":
        return Layout("yolo", folder, folder / "images", folder / "labels", names_dirs)
    assert annotations is not None
    images = _first_dir(folder, ("JPEGImages", "images"))
    if images is None:
        raise DataError(f"{folder} has {annotations.name}/ but no JPEGImages/ (or images/): put the images there")
    return Layout("voc", folder, images, annotations, names_dirs)


def _first_dir(folder: Path, names: Sequence[str]) -> Path | None:
    return next((folder / name for name in names if (folder / name).is_dir()), None)


def _coco_json(folder: Path, jsons: list[Path]) -> Path:
    if len(jsons) == 1:
        return jsons[0]
    preferred = [p for p in jsons if p.name == "annotations.json"] or [p for p in jsons if p.name.startswith("instances")]
    if len(preferred) != 1:
        raise DataError(f"{folder} holds several .json files ({', '.join(p.name for p in jsons)}): keep one, or "
                        "name the COCO labels annotations.json")
    return preferred[0]


def split_layouts(root: str | Path) -> dict[str, Layout]:
    """The layout of each split: ``train``/``val``/``test`` folders, Ultralytics' images/<split> + labels/<split>,
    else ``{"all": ...}`` for the whole folder."""
    root = Path(root)
    if (root / "train").is_dir():
        folders = {"train": root / "train", "val": _first_dir(root, VAL_ALIASES), "test": root / "test"}
        return {split: find_layout(folder, (folder, root)) for split, folder in folders.items()
                if folder is not None and folder.is_dir()}
    if (root / "images" / "train").is_dir() and (root / "labels" / "train").is_dir():
        splits = {"train": ("train",), "val": VAL_ALIASES, "test": ("test",)}
        names = {split: _first_dir(root / "images", aliases) for split, aliases in splits.items()}
        return {split: Layout("yolo", root, images, root / "labels" / images.name, (root,))
                for split, images in names.items() if images is not None}
    return {"all": find_layout(root)}


def check_missing_labels(value: str) -> None:
    if value not in MISSING_LABELS:
        raise ConfigError(f"--missing-labels must be error or background, not '{value}'")


def pair_files(images: Path, labels: Path, suffix: str, missing_labels: str = "error") -> list[tuple[Path, Path | None]]:
    """(image, label file) pairs matched by path without extension; an image without one is an error, or
    (``missing_labels="background"``) paired with None; a label file without an image is an error."""
    check_missing_labels(missing_labels)
    if not images.is_dir():
        raise DataError(f"images folder {images} does not exist: put the images there")
    found = _by_stem(images, is_image_file)
    labelled = _by_stem(labels, lambda p: p.suffix.lower() == suffix and p.name != "classes.txt")
    if not found:
        raise DataError(f"{images} holds no images: put them there (.jpg, .png...)")
    for key, label in labelled.items():
        if key not in found:
            raise DataError(f"label file {label} has no image in {images} (paired by file stem): add the image "
                            "or remove the label file")
    missing = [key for key in found if key not in labelled]
    if missing and missing_labels == "error":
        raise DataError(f"image {found[missing[0]]} has no label file {labels / missing[0]}{suffix} ({len(missing)} "
                        "image(s) lack one): add it, or pass --missing-labels background to read them as images "
                        "without objects")
    if missing:
        log.warning("%d image(s) without a label file in %s read as background", len(missing), labels)
    return [(found[key], labelled.get(key)) for key in sorted(found)]


def _by_stem(folder: Path, keep: Callable[[Path], bool]) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in list_files(folder) if folder.is_dir() else ():
        key = path.relative_to(folder).with_suffix("").as_posix()
        if not keep(path):
            continue
        if key in found:
            raise DataError(f"{path} and {found[key].name} in {folder} have the same stem: keep one (images and "
                            "labels are paired by stem)")
        found[key] = path
    return found


def read_class_names(folders: Sequence[Path], with_yaml: bool = True) -> list[str] | None:
    """Class names of the first ``classes.txt`` (one a line) or, if ``with_yaml``, ``data.yaml`` (``names``: a
    list or an {id: name} map) in ``folders``; None when there is neither."""
    for folder in folders:
        if (folder / "classes.txt").is_file():
            return _unique(folder / "classes.txt", [line.strip() for line in _read_text(folder / "classes.txt")
                                                    .splitlines() if line.strip()])
        if with_yaml and (folder / "data.yaml").is_file():
            return _yaml_names(folder / "data.yaml")
    return None


def _yaml_names(path: Path) -> list[str]:
    try:
        values = yaml.safe_load(_read_text(path))
    except yaml.YAMLError as err:
        line = getattr(getattr(err, "problem_mark", None), "line", -1) + 1
        raise DataError(f"{path} line {line}: not valid YAML: fix the file") from None
    names: Any = values.get("names") if isinstance(values, dict) else None
    if isinstance(names, dict):
        if sorted(names) != list(range(len(names))):
            raise DataError(f"{path}: names ids must be 0..{len(names) - 1}, not {sorted(names)}: number them so")
        names = [names[i] for i in range(len(names))]
    if not isinstance(names, list) or not names:
        raise DataError(f"{path} has no 'names' list or {{id: name}} map: list the classes under names")
    return _unique(path, [str(name) for name in names])


def _unique(path: Path, names: list[str]) -> list[str]:
    if not names:
        raise DataError(f"{path} lists no classes: write one class name a line")
    repeated = next((name for i, name in enumerate(names) if name in names[:i]), None)
    if repeated is not None:
        raise DataError(f"{path} lists class '{repeated}' twice: list each class once")
    return names


def image_header_size(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """(width, height) of an image as shown (EXIF rotation applied), from its header: no pixel is decoded; an
    image of more than ``max_pixels`` (a decompression bomb) is refused."""
    try:
        with _open_checked(path, max_pixels) as image:
            width, height = image.size
            rotated = image.getexif().get(0x0112, 1) in ROTATED
    except ImageReadError as err:
        raise DataError(f"image {path}: {err}: replace or remove it") from None
    except (OSError, ValueError, SyntaxError) as err:
        raise DataError(f"image {path}: cannot read its header: {err}: replace or remove it") from None
    return (height, width) if rotated else (width, height)


def check_box(box: Sequence[float], width: int, height: int, where: str) -> list[float]:
    """``box`` (x1, y1, x2, y2 in pixels) clipped to the image if it passes the border by up to a pixel; an
    error naming ``where`` if it lies further out or has no area."""
    x1, y1, x2, y2 = (float(v) for v in box)
    shown = f"({x1:g}, {y1:g}, {x2:g}, {y2:g}) (x1, y1, x2, y2 in pixels)"
    if not np.isfinite([x1, y1, x2, y2]).all():
        raise DataError(f"{where}: box {shown} is not finite: fix the label")
    if min(x1, y1) < -TOLERANCE or x2 > width + TOLERANCE or y2 > height + TOLERANCE:
        raise DataError(f"{where}: box {shown} lies outside the {width}x{height} image: fix the label (or the "
                        "image size it gives)")
    clipped = [min(max(x1, 0.0), width), min(max(y1, 0.0), height), min(max(x2, 0.0), width), min(max(y2, 0.0), height)]
    if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
        raise DataError(f"{where}: box {shown} has no area (width or height <= 0): fix or remove it")
    return clipped


def with_classes(boxset: BoxSet, classes: list[str], category_ids: list[int] | None = None) -> BoxSet:
    """``boxset`` with its labels re-indexed into ``classes`` (which hold all its class names)."""
    index = np.array([classes.index(name) for name in boxset.classes] or [0], dtype=np.int64)
    images = [BoxImage(im.image, im.width, im.height, im.boxes, index[im.labels]) for im in boxset.images]
    return BoxSet(list(classes), images, category_ids)


def unify_classes(sets: dict[str, BoxSet]) -> dict[str, BoxSet]:
    """The splits' sets over one class list: when their lists differ, the union (sorted if each list is), each
    set's labels re-indexed into it."""
    lists = [boxset.classes for boxset in sets.values()]
    if all(classes == lists[0] for classes in lists):
        return sets
    merged = list(dict.fromkeys(name for classes in lists for name in classes))
    if all(classes == sorted(classes) for classes in lists):
        merged.sort()
    pairs = {(name, cid) for s in sets.values() for name, cid in zip(s.classes, s.category_ids or [])}
    ids = dict(pairs)
    known = all(s.category_ids for s in sets.values()) and len(pairs) == len(set(ids.values())) == len(merged)
    log.warning("the splits list different classes (%s): their union of %d classes is used",
                "; ".join(f"{split}: {len(s.classes)}" for split, s in sets.items()), len(merged))
    return {split: with_classes(s, merged, [ids[name] for name in merged] if known else None) for split, s in sets.items()}


def box_statistics(boxset: BoxSet) -> dict[str, Any]:
    """Images, background images, boxes per class, and quantiles (min, p10...max) of the boxes' width, height,
    area and sqrt(area) in pixels (None when there is no box)."""
    boxes = np.concatenate([im.boxes for im in boxset.images] + [np.zeros((0, 4))])
    labels = np.concatenate([im.labels for im in boxset.images] + [np.zeros(0, np.int64)])
    width, height = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    sizes = {"width": width, "height": height, "area": width * height, "sqrt_area": np.sqrt(width * height)}
    return {"images": len(boxset.images), "background_images": sum(len(im.boxes) == 0 for im in boxset.images),
            "boxes": len(boxes), "boxes_per_class": {name: int((labels == i).sum()) for i, name in enumerate(boxset.classes)},
            **{key: _quantiles(values) for key, values in sizes.items()}}


def _quantiles(values: np.ndarray) -> dict[str, float | None]:
    if not values.size:
        return dict.fromkeys(QUANTILES)
    return {key: float(np.quantile(values, q)) for key, q in QUANTILES.items()}


def suggest_anchor_sizes(boxset: BoxSet, levels: int = 5) -> tuple[int, ...]:
    """One anchor size per feature level, small to large: the boxes' sqrt(area) quantiles at (i + 0.5) / levels,
    each rounded to the nearest of 4, 6, 8, 11, 16, 23, 32... (powers of sqrt 2), strictly increasing."""
    if levels < 1:
        raise ConfigError(f"levels must be at least 1, not {levels}")
    sides = np.sqrt(np.concatenate([(im.boxes[:, 2] - im.boxes[:, 0]) * (im.boxes[:, 3] - im.boxes[:, 1])
                                    for im in boxset.images] + [np.zeros(0)]))
    if not sides.size:
        raise DataError("the data has no box: anchor sizes cannot be suggested (are all images background?)")
    grid = np.log(ANCHOR_GRID)
    chosen: list[int] = []
    for value in np.quantile(sides, (np.arange(levels) + 0.5) / levels):
        index = int(np.abs(grid - np.log(value)).argmin())
        if chosen:
            index = max(index, ANCHOR_GRID.index(chosen[-1]) + 1)
        chosen.append(ANCHOR_GRID[min(index, len(ANCHOR_GRID) - 1)])
    return tuple(chosen)
