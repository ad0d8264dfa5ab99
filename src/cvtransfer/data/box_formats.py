"""Object detection labels read and written as COCO, Pascal VOC and YOLO; conversion between them.

Each reader takes a :class:`~cvtransfer.data.boxes.Layout` and returns a :class:`~cvtransfer.data.boxes.BoxSet`
(boxes x1, y1, x2, y2 in pixels, labels from 0); each writer writes the layout its reader reads. Outputs are
made in a temporary folder beside the target and renamed to it: a failure leaves no half-made folder.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cvtransfer.data.boxes import (
    FORMATS,
    BoxImage,
    BoxSet,
    Layout,
    box_image,
    check_box,
    check_missing_labels,
    find_layout,
    image_header_size,
    pair_files,
    read_class_names,
    split_layouts,
    unify_classes,
)
from cvtransfer.data.folders import _read_text
from cvtransfer.data.images import DEFAULT_MAX_PIXELS, is_image_file, list_files
from cvtransfer.errors import DataError, unknown_name
from cvtransfer.io import disk_full, is_disk_full

log = logging.getLogger(__name__)

Rows = tuple[list[list[float]], list[int]]  # one image's boxes and labels


def read_boxes(folder: str | Path, missing_labels: str = "error", max_pixels: int = DEFAULT_MAX_PIXELS) -> BoxSet:
    """The boxes of a COCO, Pascal VOC or YOLO folder (the format told by its layout)."""
    return read_layout(find_layout(Path(folder)), missing_labels, max_pixels)


def read_layout(layout: Layout, missing_labels: str = "error", max_pixels: int = DEFAULT_MAX_PIXELS) -> BoxSet:
    """The boxes of one layout; images over ``max_pixels`` are refused when their headers are read."""
    return READERS[layout.fmt](layout, missing_labels, max_pixels)


def discover_detection(root: str | Path, missing_labels: str = "error",
                       max_pixels: int = DEFAULT_MAX_PIXELS) -> dict[str, BoxSet]:
    """The boxes of each split (``train``, ``val``, ``test``) or ``{"all": ...}``, over one class list."""
    return unify_classes({split: read_layout(layout, missing_labels, max_pixels)
                          for split, layout in split_layouts(root).items()})


def read_coco(layout: Layout, missing_labels: str = "error", max_pixels: int = DEFAULT_MAX_PIXELS) -> BoxSet:
    """A COCO json's boxes (bbox [x, y, w, h]); crowd annotations skipped, images without any are background."""
    check_missing_labels(missing_labels)
    path = layout.labels
    try:
        data = json.loads(_read_text(path))
    except json.JSONDecodeError as err:
        raise DataError(f"{path} line {err.lineno}: not valid JSON ({err.msg}): fix the file") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DataError(f"{path} has no 'images' list: give a COCO json (images, annotations, categories)")
    ids, classes = _coco_categories(data, path)
    index = {cid: i for i, cid in enumerate(ids)}
    entries: dict[Any, dict[str, Any]] = {}
    for entry in (_coco_image(e, layout, max_pixels) for e in data["images"]):
        if entry["id"] in entries:
            raise DataError(f"{path}: image id {entry['id']} is listed twice: give each image its own id")
        entries[entry["id"]] = entry
    rows: dict[Any, Rows] = {key: ([], []) for key in entries}
    for number, ann in enumerate(data.get("annotations") or []):
        where = f"{path} annotation {ann.get('id', f'#{number}') if isinstance(ann, dict) else f'#{number}'}"
        if not isinstance(ann, dict):
            raise DataError(f"{where}: an annotation must be an object with image_id, category_id and bbox: fix it")
        if ann.get("iscrowd"):
            continue
        if ann.get("image_id") not in entries:
            raise DataError(f"{where}: image_id {ann.get('image_id')} is no image's id: fix it or add the image")
        if ann.get("category_id") not in index:
            raise DataError(f"{where}: category_id {ann.get('category_id')} is no category's id ({', '.join(map(str, ids))}): "
                            "fix it or add the category")
        bbox, entry = ann.get("bbox"), entries[ann["image_id"]]
        if not isinstance(bbox, list) or len(bbox) != 4 or not all(_is_number(v) for v in bbox):
            raise DataError(f"{where}: bbox must be [x, y, width, height], not {bbox}: fix it")
        x, y, w, h = bbox
        box = check_box((x, y, x + w, y + h), entry["width"], entry["height"], f"{where} (image {entry['file_name']})")
        rows[ann["image_id"]][0].append(box)
        rows[ann["image_id"]][1].append(index[ann["category_id"]])
    images = [box_image(e["path"], e["width"], e["height"], *rows[key]) for key, e in entries.items()]
    unlisted = _unlisted(layout, [e["path"] for e in entries.values()], missing_labels, max_pixels)
    return BoxSet(classes, images + unlisted, ids)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _coco_categories(data: dict[str, Any], path: Path) -> tuple[list[int], list[str]]:
    categories = data.get("categories")
    if not isinstance(categories, list) or not categories:
        raise DataError(f"{path} has no 'categories' list: list the classes as {{\"id\": 1, \"name\": ...}}")
    found: dict[int, str] = {}
    for category in categories:
        if not isinstance(category, dict) or not isinstance(category.get("id"), int) or "name" not in category:
            raise DataError(f"{path}: category {category} needs an integer id and a name: fix it")
        if category["id"] in found or str(category["name"]) in found.values():
            raise DataError(f"{path}: category id {category['id']} or name '{category['name']}' is listed twice: "
                            "list each class once")
        found[category["id"]] = str(category["name"])
    ids = sorted(found)
    return ids, [found[cid] for cid in ids]


def _coco_image(entry: Any, layout: Layout, max_pixels: int) -> dict[str, Any]:
    """A COCO image entry with its file found (beside the json, else in images/) and its size."""
    if not isinstance(entry, dict) or "id" not in entry or not isinstance(entry.get("file_name"), str):
        raise DataError(f"{layout.labels}: image {entry} needs an id and a file_name: fix it")
    name = entry["file_name"]
    path = next((p for p in (layout.folder / name, layout.folder / "images" / name) if p.is_file()), None)
    if path is None:
        raise DataError(f"{layout.labels}: image {name} (id {entry['id']}) is in neither {layout.folder} nor "
                        f"{layout.folder / 'images'}: add it or remove its entry")
    width, height = entry.get("width"), entry.get("height")
    if not (isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0) or \
            width * height > max_pixels:
        width, height = image_header_size(path, max_pixels)  # the header's size, checked against max_pixels
    return {"id": entry["id"], "file_name": name, "path": path, "width": width, "height": height}


def _unlisted(layout: Layout, listed: list[Path], missing_labels: str, max_pixels: int) -> list[BoxImage]:
    """Images of a COCO folder its json does not list: an error, or background images."""
    known = {path.resolve() for path in listed}
    extra = [p for p in list_files(layout.folder) if is_image_file(p) and p.resolve() not in known]
    if extra and missing_labels == "error":
        raise DataError(f"image {extra[0]} is not listed in {layout.labels} ({len(extra)} image(s) are not): add it "
                        "to its images, or pass --missing-labels background to read them as images without objects")
    if extra:
        log.warning("%d image(s) not listed in %s read as background", len(extra), layout.labels)
    return [box_image(p, *image_header_size(p, max_pixels), [], []) for p in extra]


def read_voc(layout: Layout, missing_labels: str = "error", max_pixels: int = DEFAULT_MAX_PIXELS) -> BoxSet:
    """Pascal VOC xml boxes (``difficult`` objects kept); classes from classes.txt, else the sorted names."""
    listed = next((d / "classes.txt" for d in layout.names_dirs if (d / "classes.txt").is_file()), None)
    given = read_class_names([listed.parent], with_yaml=False) if listed else None
    parsed = [(image, _parse_voc(xml) if xml else (None, []))
              for image, xml in pair_files(layout.images, layout.labels, ".xml", missing_labels)]
    classes = given or sorted({name for _, (_, objects) in parsed for name, _, _ in objects})
    images = []
    for image, (size, objects) in parsed:
        width, height = size if size and size[0] * size[1] <= max_pixels else image_header_size(image, max_pixels)
        for name, _, where in objects:
            if name not in classes:
                raise DataError(f"{where}: class '{name}' is not in {listed}: add it there or fix the name")
        images.append(box_image(image, width, height, [check_box(box, width, height, where)
                                                           for _, box, where in objects],
                               [classes.index(name) for name, _, _ in objects]))
    return BoxSet(classes, images)


def _parse_voc(xml: Path) -> tuple[tuple[int, int] | None, list[tuple[str, list[float], str]]]:
    """The image size (None if not given) and the (class name, box, where) of each object of a VOC xml file."""
    try:
        root = ET.parse(xml).getroot()
    except ET.ParseError as err:
        raise DataError(f"{xml} line {err.position[0]}: not valid XML ({err}): fix or remove the file") from None
    try:
        width, height = (int(float(root.findtext(f"size/{tag}") or 0)) for tag in ("width", "height"))
    except ValueError:
        raise DataError(f"{xml}: <size> must give a numeric width and height: fix it") from None
    objects = []
    for number, obj in enumerate(root.findall("object"), start=1):
        name = (obj.findtext("name") or "").strip()
        where = f"{xml} object {number} ({name or 'no name'})"
        try:
            xmin, ymin, xmax, ymax = (float(obj.findtext(f"bndbox/{tag}")) for tag in ("xmin", "ymin", "xmax", "ymax"))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise DataError(f"{where}: needs a <bndbox> with numeric xmin, ymin, xmax and ymax: fix it") from None
        if not name:
            raise DataError(f"{where}: has no <name>: give each object its class")
        # VOC counts pixels from 1, boxes inclusive: pixel i spans [i - 1, i], so the box spans xmin - 1 .. xmax
        # (the usual reading of VOC; the writer adds the 1 back).
        objects.append((name, [xmin - 1, ymin - 1, xmax, ymax], where))
    return ((width, height) if width > 0 and height > 0 else None), objects


def read_yolo(layout: Layout, missing_labels: str = "error", max_pixels: int = DEFAULT_MAX_PIXELS) -> BoxSet:
    """YOLO boxes (``class cx cy w h`` normalised to 0..1); image sizes from the image headers."""
    classes = read_class_names(layout.names_dirs)
    if classes is None:
        raise DataError(f"{layout.folder} has no classes.txt or data.yaml: list the class names, one a line, in "
                        f"{layout.folder / 'classes.txt'}")
    images = []
    for image, txt in pair_files(layout.images, layout.labels, ".txt", missing_labels):
        width, height = image_header_size(image, max_pixels)
        boxes, labels = _parse_yolo(txt, len(classes), width, height) if txt else ([], [])
        images.append(box_image(image, width, height, boxes, labels))
    return BoxSet(classes, images)


def _parse_yolo(txt: Path, count: int, width: int, height: int) -> Rows:
    boxes: list[list[float]] = []
    labels: list[int] = []
    for number, line in enumerate(_read_text(txt).splitlines(), start=1):
        where = f"{txt} line {number}"
        try:
            values = [float(part) for part in line.split()]
        except ValueError:
            raise DataError(f"{where}: '{line.strip()}' is not numbers: write 'class cx cy w h'") from None
        if values and len(values) != 5:
            raise DataError(f"{where}: {len(values)} values: write 'class cx cy w h' (normalised to 0..1)")
        if not values:
            continue
        if not values[0].is_integer() or not 0 <= values[0] < count:
            raise DataError(f"{where}: class {line.split()[0]} is out of range: {count} classes are named (0.."
                            f"{count - 1}): fix the id or add its name to classes.txt")
        cx, cy, w, h = values[1:]
        box = ((cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height)
        boxes.append(check_box(box, width, height, where))
        labels.append(int(values[0]))
    return boxes, labels


READERS: dict[str, Callable[[Layout, str, int], BoxSet]] = {"coco": read_coco, "voc": read_voc, "yolo": read_yolo}


def _number(value: float, digits: int) -> float | int:
    """``value`` as an int when integral, else rounded to ``digits`` decimals."""
    rounded = round(value, digits)
    return int(rounded) if float(rounded).is_integer() else rounded


def _place_images(boxset: BoxSet, folder: Path, copy_images: bool) -> list[str]:
    """Copy (or symlink) the images into ``folder`` under unique stems; their new file names."""
    folder.mkdir(parents=True)
    names: list[str] = []
    stems: set[str] = set()
    for image in boxset.images:
        source = Path(image.image)
        stem, number = source.stem, 0
        while stem.lower() in stems:
            number += 1
            stem = f"{source.stem}_{number}"
        stems.add(stem.lower())
        target = folder / f"{stem}{source.suffix}"
        if copy_images:
            shutil.copy2(source, target)
        else:
            target.symlink_to(source.resolve())
        names.append(target.name)
    return names


def _write_classes(boxset: BoxSet, folder: Path) -> None:
    (folder / "classes.txt").write_text("".join(f"{name}\n" for name in boxset.classes), encoding="utf-8")


def write_coco(boxset: BoxSet, folder: Path, copy_images: bool = True) -> None:
    """images/ and annotations.json (category ids: the original COCO ones where known, else 1..N)."""
    names = _place_images(boxset, folder / "images", copy_images)
    ids = boxset.category_ids or list(range(1, len(boxset.classes) + 1))
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for number, (image, name) in enumerate(zip(boxset.images, names), start=1):
        images.append({"id": number, "file_name": name, "width": image.width, "height": image.height})
        for (x1, y1, x2, y2), label in zip(image.boxes.tolist(), image.labels.tolist()):
            annotations.append({"id": len(annotations) + 1, "image_id": number, "category_id": ids[label],
                                "bbox": [_number(v, 4) for v in (x1, y1, x2 - x1, y2 - y1)],
                                "area": _number((x2 - x1) * (y2 - y1), 4), "iscrowd": 0})
    categories = [{"id": cid, "name": name, "supercategory": ""} for cid, name in zip(ids, boxset.classes)]
    data = {"info": {"description": "written by cvtransfer convert"}, "licenses": [], "images": images,
            "annotations": annotations, "categories": categories}
    (folder / "annotations.json").write_text(json.dumps(data, indent=1), encoding="utf-8")


def write_voc(boxset: BoxSet, folder: Path, copy_images: bool = True) -> None:
    """JPEGImages/, Annotations/<stem>.xml (1-based inclusive pixels) and classes.txt."""
    names = _place_images(boxset, folder / "JPEGImages", copy_images)
    (folder / "Annotations").mkdir()
    for image, name in zip(boxset.images, names):
        root = ET.Element("annotation")
        ET.SubElement(root, "folder").text = "JPEGImages"
        ET.SubElement(root, "filename").text = name
        size = ET.SubElement(root, "size")
        for tag, value in (("width", image.width), ("height", image.height), ("depth", 3)):
            ET.SubElement(size, tag).text = str(value)
        for (x1, y1, x2, y2), label in zip(image.boxes.tolist(), image.labels.tolist()):
            obj = ET.SubElement(root, "object")
            ET.SubElement(obj, "name").text = boxset.classes[label]
            ET.SubElement(obj, "difficult").text = "0"
            bndbox = ET.SubElement(obj, "bndbox")
            for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), (x1 + 1, y1 + 1, x2, y2)):
                ET.SubElement(bndbox, tag).text = str(_number(value, 3))
        ET.indent(root)
        ET.ElementTree(root).write(folder / "Annotations" / f"{Path(name).stem}.xml", encoding="utf-8")
    _write_classes(boxset, folder)


def write_yolo(boxset: BoxSet, folder: Path, copy_images: bool = True) -> None:
    """images/, labels/<stem>.txt (``class cx cy w h`` normalised, 6 decimals; empty for background) and classes.txt."""
    names = _place_images(boxset, folder / "images", copy_images)
    (folder / "labels").mkdir()
    for image, name in zip(boxset.images, names):
        scale = [image.width, image.height] * 2
        lines = []
        for (x1, y1, x2, y2), label in zip(image.boxes.tolist(), image.labels.tolist()):
            values = ((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1)
            lines.append(" ".join([str(label), *(str(_number(v / s, 6)) for v, s in zip(values, scale))]) + "\n")
        (folder / "labels" / f"{Path(name).stem}.txt").write_text("".join(lines), encoding="utf-8")
    _write_classes(boxset, folder)


WRITERS: dict[str, Callable[[BoxSet, Path, bool], None]] = {"coco": write_coco, "voc": write_voc, "yolo": write_yolo}


def write_boxes(boxset: BoxSet, folder: str | Path, fmt: str, copy_images: bool = True) -> Path:
    """Write ``boxset`` as a new ``folder`` in ``fmt`` (images copied, or symlinked); an existing non-empty
    folder is refused."""
    writer = _writer(fmt)
    with _new_folder(Path(folder)) as tmp:
        writer(boxset, tmp, copy_images)
    return Path(folder)


def _writer(fmt: str) -> Callable[[BoxSet, Path, bool], None]:
    if fmt not in WRITERS:
        raise unknown_name("label format", fmt, FORMATS)
    return WRITERS[fmt]


def _refuse_existing(folder: Path) -> None:
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise DataError(f"output folder {folder} exists and is not empty: give a new folder, or empty it")


@contextmanager
def _new_folder(folder: Path) -> Iterator[Path]:
    """A temporary folder beside ``folder``, renamed to it when the block succeeds, removed when it fails."""
    _refuse_existing(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        yield tmp
        if folder.exists():
            folder.rmdir()
        tmp.rename(folder)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if is_disk_full(err, folder.parent):
            raise disk_full(folder) from None
        raise DataError(f"cannot write {folder}: {err}: check the paths and their permissions") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def convert(src: str | Path, dst: str | Path, to: str, missing_labels: str = "error",
            max_pixels: int = DEFAULT_MAX_PIXELS) -> Path:
    """Write the detection data of ``src`` (any accepted layout, splits kept) as a new folder ``dst`` in ``to``."""
    return convert_with_summary(src, dst, to, missing_labels, max_pixels)[0]


def convert_with_summary(src: str | Path, dst: str | Path, to: str, missing_labels: str = "error",
                         max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[Path, str]:
    """:func:`convert`, and its one-line summary: images, boxes, classes, the formats from and to."""
    writer, dst = _writer(to), Path(dst)
    check_missing_labels(missing_labels)
    _refuse_existing(dst)
    layouts = split_layouts(src)
    sets = unify_classes({split: read_layout(layout, missing_labels, max_pixels) for split, layout in layouts.items()})
    with _new_folder(dst) as tmp:
        for split, boxset in sets.items():
            writer(boxset, tmp if split == "all" else tmp / split, True)
    source = "/".join(sorted({layout.fmt for layout in layouts.values()}))
    splits = "" if list(sets) == ["all"] else f" ({', '.join(sets)})"
    images, boxes = sum(len(s.images) for s in sets.values()), sum(s.num_boxes for s in sets.values())
    classes = len(next(iter(sets.values())).classes)
    return dst, f"{images} images, {boxes} boxes, {classes} classes: {source} -> {to}{splits}, written to {dst}"
