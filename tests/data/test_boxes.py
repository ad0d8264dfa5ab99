"""Detection labels: COCO, Pascal VOC and YOLO read from hand-written files, told apart, split, converted, refused."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from cvtransfer.data import box_formats
from cvtransfer.data.box_formats import (
    convert,
    convert_with_summary,
    discover_detection,
    read_boxes,
    write_boxes,
)
from cvtransfer.data.boxes import BoxSet, box_image, box_statistics, detect_format, suggest_anchor_sizes
from cvtransfer.errors import ConfigError, DataError
from tests.test_cli import run_cli

W, H = 40, 56  # every test image: 40 pixels wide, 56 high
# The boxes every hand-written label file below describes: stem -> (class, x1, y1, x2, y2) in pixels, 0-based.
EXPECTED: dict[str, list[tuple[str, float, float, float, float]]] = {
    "a": [("cat", 4, 7, 20, 35), ("dog", 20, 14, 40, 56)],
    "b": [("bird", 0, 0, 40, 56)],
    "c": [],  # a background image
}
COCO_EXPECTED = {**EXPECTED, "b": [("bird", 0, 0, 40, 56), ("dog", 10.5, 20.25, 16, 28.25)]}

COCO_JSON = """{
  "images": [
    {"id": 1, "file_name": "a.png", "width": 40, "height": 56},
    {"id": 2, "file_name": "b.png", "width": 40, "height": 56},
    {"id": 5, "file_name": "c.png", "width": 40, "height": 56}
  ],
  "annotations": [
    {"id": 1, "image_id": 1, "category_id": 7, "bbox": [4, 7, 16, 28], "iscrowd": 0},
    {"id": 2, "image_id": 1, "category_id": 3, "bbox": [20, 14, 20, 42], "iscrowd": 0},
    {"id": 3, "image_id": 2, "category_id": 9, "bbox": [0, 0, 40, 56], "iscrowd": 0},
    {"id": 4, "image_id": 2, "category_id": 3, "bbox": [10.5, 20.25, 5.5, 8], "iscrowd": 0},
    {"id": 5, "image_id": 2, "category_id": 7, "bbox": [1, 1, 30, 30], "iscrowd": 1}
  ],
  "categories": [{"id": 7, "name": "cat"}, {"id": 3, "name": "dog"}, {"id": 9, "name": "bird"}]
}
"""

# VOC pixels count from 1 and are inclusive: the cat's 0-based box (4, 7, 20, 35) is written 5 8 20 35.
VOC_XML = {
    "a": """<annotation>
  <filename>a.png</filename>
  <size><width>40</width><height>56</height><depth>3</depth></size>
  <object><name>cat</name><difficult>0</difficult>
    <bndbox><xmin>5</xmin><ymin>8</ymin><xmax>20</xmax><ymax>35</ymax></bndbox></object>
  <object><name>dog</name><difficult>1</difficult>
    <bndbox><xmin>21</xmin><ymin>15</ymin><xmax>40</xmax><ymax>56</ymax></bndbox></object>
</annotation>
""",
    "b": """<annotation>
  <filename>b.png</filename>
  <size><width>40</width><height>56</height><depth>3</depth></size>
  <object><name>bird</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>40</xmax><ymax>56</ymax></bndbox></object>
</annotation>
""",
    "c": """<annotation>
  <filename>c.png</filename>
  <size><width>40</width><height>56</height><depth>3</depth></size>
</annotation>
""",
}

# YOLO: class cx cy w h as fractions of 40 x 56: the cat's centre (12, 21), size 16 x 28.
YOLO_TXT = {"a": "0 0.3 0.375 0.4 0.5\n1 0.75 0.625 0.5 0.75\n", "b": "2 0.5 0.5 1 1\n", "c": ""}
YOLO_CLASSES = "cat\ndog\nbird\n"


def write_images(folder: Path, stems: tuple[str, ...] = ("a", "b", "c")) -> None:
    """40x56 grey images with their EXPECTED boxes drawn as coloured rectangles."""
    folder.mkdir(parents=True, exist_ok=True)
    for stem in stems:
        image = Image.new("RGB", (W, H), (90, 90, 90))
        for i, (_, x1, y1, x2, y2) in enumerate(EXPECTED[stem]):
            ImageDraw.Draw(image).rectangle((x1, y1, x2 - 1, y2 - 1), fill=(200, 60 * i, 40))
        image.save(folder / f"{stem}.png")


def make_coco(folder: Path) -> Path:
    write_images(folder / "images")
    (folder / "instances_train.json").write_text(COCO_JSON)
    return folder


def make_voc(folder: Path, images: str = "JPEGImages", annotations: str = "Annotations") -> Path:
    write_images(folder / images)
    (folder / annotations).mkdir(parents=True)
    for stem, text in VOC_XML.items():
        (folder / annotations / f"{stem}.xml").write_text(text)
    return folder


def make_yolo(folder: Path, images: str = "images", labels: str = "labels") -> Path:
    write_images(folder / images)
    (folder / labels).mkdir(parents=True)
    for stem, text in YOLO_TXT.items():
        (folder / labels / f"{stem}.txt").write_text(text)
    (folder / "classes.txt").write_text(YOLO_CLASSES)
    return folder


MAKERS: dict[str, Callable[[Path], Path]] = {"coco": make_coco, "voc": make_voc, "yolo": make_yolo}


def named(boxset: BoxSet) -> dict[str, list[tuple[str, float, float, float, float]]]:
    """stem -> sorted (class name, x1, y1, x2, y2) of a BoxSet, to compare with EXPECTED."""
    return {Path(image.image).stem: sorted((boxset.classes[label], *box)
                                           for box, label in zip(image.boxes.tolist(), image.labels.tolist()))
            for image in boxset.images}


def assert_boxes(boxset: BoxSet, expected: dict[str, list[tuple[str, float, float, float, float]]],
                 atol: float = 1e-9) -> None:
    got = named(boxset)
    assert sorted(got) == sorted(expected)
    for stem, rows in expected.items():
        assert [row[0] for row in got[stem]] == [row[0] for row in sorted(rows)], stem
        assert np.allclose([row[1:] for row in got[stem]], [row[1:] for row in sorted(rows)], atol=atol), (
            stem, got[stem], sorted(rows))


def test_coco_classes_follow_category_ids_and_crowds_are_skipped(tmp_path: Path) -> None:
    boxset = read_boxes(make_coco(tmp_path / "coco"))
    assert boxset.classes == ["dog", "cat", "bird"] and boxset.category_ids == [3, 7, 9]
    assert_boxes(boxset, COCO_EXPECTED)
    assert all(image.boxes.dtype == np.float64 and image.labels.dtype == np.int64 for image in boxset.images)
    background = next(image for image in boxset.images if Path(image.image).stem == "c")
    assert background.boxes.shape == (0, 4) and (background.width, background.height) == (W, H)


def test_coco_images_beside_the_json(tmp_path: Path) -> None:
    folder = tmp_path / "coco"
    write_images(folder)
    (folder / "annotations.json").write_text(COCO_JSON)
    (folder / "other.json").write_text("{}")  # annotations.json is preferred among several
    assert_boxes(read_boxes(folder), COCO_EXPECTED)


def test_voc_is_read_one_based_inclusive(tmp_path: Path) -> None:
    boxset = read_boxes(make_voc(tmp_path / "voc"))
    assert boxset.classes == ["bird", "cat", "dog"]  # sorted names without classes.txt
    assert_boxes(boxset, EXPECTED)  # xmin 5 -> x1 4, xmax 20 -> x2 20; the difficult dog is kept


def test_voc_classes_txt_orders_the_classes(tmp_path: Path) -> None:
    folder = make_voc(tmp_path / "voc", images="images", annotations="annotations")
    (folder / "classes.txt").write_text("dog\ncat\nbird\nhorse\n")
    boxset = read_boxes(folder)
    assert boxset.classes == ["dog", "cat", "bird", "horse"]
    assert_boxes(boxset, EXPECTED)


@pytest.mark.parametrize("names_file", ["classes.txt", "data.yaml list", "data.yaml map"])
def test_yolo_reads_names_from_classes_txt_or_data_yaml(tmp_path: Path, names_file: str) -> None:
    folder = make_yolo(tmp_path / "yolo")
    if names_file != "classes.txt":
        (folder / "classes.txt").unlink()
        names = "[cat, dog, bird]" if names_file.endswith("list") else "{2: bird, 0: cat, 1: dog}"
        (folder / "data.yaml").write_text(f"path: .\nnames: {names}\n")
    boxset = read_boxes(folder)
    assert boxset.classes == ["cat", "dog", "bird"]
    assert_boxes(boxset, EXPECTED, atol=1e-9)
    assert all((image.width, image.height) == (W, H) for image in boxset.images)


@pytest.mark.parametrize("fmt", ["coco", "voc", "yolo"])
def test_detect_format(tmp_path: Path, fmt: str) -> None:
    assert detect_format(MAKERS[fmt](tmp_path / fmt)) == fmt


def test_detect_format_accepts_lower_case_voc_folders(tmp_path: Path) -> None:
    assert detect_format(make_voc(tmp_path / "voc", images="images", annotations="annotations")) == "voc"


def test_train_val_folders_are_splits_over_one_class_list(tmp_path: Path) -> None:
    root = tmp_path / "data"
    make_voc(root / "train")
    make_voc(root / "valid")  # Roboflow's name for val
    (root / "valid" / "Annotations" / "b.xml").write_text(VOC_XML["c"].replace("c.png", "b.png"))  # no bird in val
    splits = discover_detection(root)
    assert sorted(splits) == ["train", "val"]
    assert splits["train"].classes == splits["val"].classes == ["bird", "cat", "dog"]
    assert_boxes(splits["val"], {**EXPECTED, "b": []})


def test_ultralytics_layout(tmp_path: Path) -> None:
    root = tmp_path / "ultra"
    for split in ("train", "val"):
        make_yolo(root, images=f"images/{split}", labels=f"labels/{split}")
    (root / "classes.txt").unlink()
    (root / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/val\nnames: {0: cat, 1: dog, 2: bird}\n")
    splits = discover_detection(root)
    assert sorted(splits) == ["train", "val"]
    assert_boxes(splits["val"], EXPECTED)


def test_one_folder_is_all(tmp_path: Path) -> None:
    assert list(discover_detection(make_yolo(tmp_path / "yolo"))) == ["all"]


def test_convert_round_trip_coco_yolo_voc_coco(tmp_path: Path) -> None:
    source = read_boxes(make_coco(tmp_path / "coco"))
    convert(tmp_path / "coco", tmp_path / "yolo", "yolo")
    convert(tmp_path / "yolo", tmp_path / "voc", "voc")
    convert(tmp_path / "voc", tmp_path / "back", "coco")
    back = read_boxes(tmp_path / "back")
    assert back.classes == source.classes == ["dog", "cat", "bird"]
    integral = {stem: rows for stem, rows in COCO_EXPECTED.items() if stem != "b"}
    assert_boxes(BoxSet(back.classes, [i for i in back.images if Path(i.image).stem != "b"]), integral, atol=1e-3)
    assert_boxes(back, COCO_EXPECTED, atol=1e-2)


def test_written_files_use_each_formats_conventions(tmp_path: Path) -> None:
    """The cat (4, 7, 20, 35) as each format writes it: an offset in a reader and its writer would cancel out."""
    boxset = read_boxes(make_yolo(tmp_path / "yolo"))
    for fmt in ("coco", "voc", "yolo"):
        write_boxes(boxset, tmp_path / fmt / "out", fmt)
    coco = json.loads((tmp_path / "coco" / "out" / "annotations.json").read_text())
    assert coco["annotations"][0]["bbox"] == [4, 7, 16, 28] and coco["categories"][0] == {
        "id": 1, "name": "cat", "supercategory": ""}
    xml = (tmp_path / "voc" / "out" / "Annotations" / "a.xml").read_text()
    assert re.search(r"<xmin>5</xmin>\s*<ymin>8</ymin>\s*<xmax>20</xmax>\s*<ymax>35</ymax>", xml)
    assert (tmp_path / "yolo" / "out" / "labels" / "a.txt").read_text().splitlines()[0] == "0 0.3 0.375 0.4 0.5"
    assert (tmp_path / "voc" / "out" / "classes.txt").read_text() == YOLO_CLASSES


@pytest.mark.parametrize("fmt", ["coco", "voc", "yolo"])
def test_background_images_survive_every_format(tmp_path: Path, fmt: str) -> None:
    boxset = BoxSet(["cat"], [box_image(tmp_path / "c.png", W, H, [], []),
                              box_image(tmp_path / "a.png", W, H, [[4, 7, 20, 35]], [0])])
    write_images(tmp_path, ("a", "c"))
    back = read_boxes(write_boxes(boxset, tmp_path / "out", fmt))
    assert_boxes(back, {"a": [("cat", 4, 7, 20, 35)], "c": []}, atol=1e-9)


def test_images_may_be_linked_instead_of_copied(tmp_path: Path) -> None:
    out = write_boxes(read_boxes(make_voc(tmp_path / "voc")), tmp_path / "out", "yolo", copy_images=False)
    assert (out / "images" / "a.png").is_symlink()
    assert_boxes(read_boxes(out), EXPECTED, atol=1e-5)


def test_missing_labels_as_background(tmp_path: Path) -> None:
    folder = make_yolo(tmp_path / "yolo")
    (folder / "labels" / "a.txt").unlink()
    assert_boxes(read_boxes(folder, missing_labels="background"), {**EXPECTED, "a": []})


def test_a_box_a_pixel_out_is_clipped(tmp_path: Path) -> None:
    folder = make_voc(tmp_path / "voc")
    (folder / "Annotations" / "b.xml").write_text(VOC_XML["b"].replace("<xmin>1</xmin>", "<xmin>0</xmin>")
                                                  .replace("<xmax>40</xmax>", "<xmax>40.6</xmax>"))
    assert_boxes(read_boxes(folder), EXPECTED)  # x1 -1 and x2 40.6 lie within a pixel: clipped to 0 and 40


def _replace(path: str, old: str, new: str) -> Callable[[Path], None]:
    def change(root: Path) -> None:
        (root / path).write_text((root / path).read_text().replace(old, new))
    return change


def _write(path: str, text: str) -> Callable[[Path], None]:
    def change(root: Path) -> None:
        (root / path).write_text(text)
    return change


def _rename(path: str, new: str) -> Callable[[Path], None]:
    def change(root: Path) -> None:
        (root / path).rename(root / new)
        (root / "more.json").write_text("{}")
    return change


def _both(first: Callable[[Path], None], second: Callable[[Path], None]) -> Callable[[Path], None]:
    def change(root: Path) -> None:
        first(root)
        second(root)
    return change


def _unlink(path: str) -> Callable[[Path], None]:
    return lambda root: (root / path).unlink()


BAD = [  # (format of the folder, how it is broken, what the one-line message says)
    pytest.param("yolo", _write("labels/a.txt", "0 0.9 0.5 0.5 0.5\n"),
                 r"labels/a\.txt line 1: box .* outside the 40x56 image", id="yolo-box-outside"),
    pytest.param("voc", _replace("Annotations/a.xml", "<xmax>20</xmax>", "<xmax>42</xmax>"),
                 r"a\.xml object 1 \(cat\): box .*outside the 40x56", id="voc-box-outside"),
    pytest.param("coco", _replace("instances_train.json", "[4, 7, 16, 28]", "[4, 7, 0, 28]"),
                 r"instances_train\.json annotation 1 \(image a\.png\): box .*no area", id="coco-zero-width"),
    pytest.param("voc", _replace("Annotations/a.xml", "<xmin>5</xmin>", "<xmin>21</xmin>"),
                 r"a\.xml object 1 \(cat\): box .*no area", id="voc-negative-width"),
    pytest.param("yolo", _write("labels/b.txt", "3 0.5 0.5 1 1\n"),
                 r"labels/b\.txt line 1: class 3 is out of range: 3 classes", id="yolo-class-id"),
    pytest.param("coco", _replace("instances_train.json", '"category_id": 9', '"category_id": 4'),
                 r"instances_train\.json annotation 3: category_id 4 is no category", id="coco-category-id"),
    pytest.param("voc", _write("classes.txt", "cat\ndog\n"),
                 r"b\.xml object 1 \(bird\): class 'bird' is not in .*classes\.txt", id="voc-class-name"),
    pytest.param("yolo", _unlink("labels/b.txt"),
                 r"image .*b\.png has no label file .*--missing-labels background", id="yolo-no-label-file"),
    pytest.param("voc", _unlink("JPEGImages/a.png"), r"label file .*Annotations/a\.xml has no image",
                 id="voc-label-without-image"),
    pytest.param("coco", _unlink("images/b.png"), r"instances_train\.json: image b\.png \(id 2\) is in neither",
                 id="coco-label-without-image"),
    pytest.param("coco", _write("images/d.png", ""),
                 r"image .*d\.png is not listed in .*instances_train\.json.*--missing-labels", id="coco-unlisted-image"),
    pytest.param("coco", _replace("instances_train.json", '"images": [', '"images": [[,'),
                 r"instances_train\.json line 2: not valid JSON", id="coco-bad-json"),
    pytest.param("voc", _replace("Annotations/b.xml", "</size>", "</sise>"), r"b\.xml line 3: not valid XML",
                 id="voc-bad-xml"),
    pytest.param("voc", _replace("Annotations/b.xml", "<xmin>1</xmin>", "<xmin>one</xmin>"),
                 r"b\.xml object 1 \(bird\): needs a <bndbox>", id="voc-bad-number"),
    pytest.param("yolo", _write("labels/a.txt", "0 0.3 0.375 0.4 0.5\n0 0.5 0.5 0.2\n"),
                 r"labels/a\.txt line 2: 4 values", id="yolo-short-line"),
    pytest.param("yolo", _write("labels/a.txt", "\n\ncat 0.5 0.5 0.2 0.2\n"), r"labels/a\.txt line 3: .* not numbers",
                 id="yolo-not-numbers"),
    pytest.param("yolo", _unlink("classes.txt"), r"yolo has no classes\.txt or data\.yaml", id="yolo-no-names"),
    pytest.param("yolo", _both(_unlink("classes.txt"), _write("data.yaml", "names: [cat, dog\n")), r"data\.yaml line 2: not valid YAML",
                 id="yolo-bad-yaml"),
    pytest.param("yolo", _write("data.json", "{}"), r"yolo holds labels of several formats \(yolo, coco\)",
                 id="two-formats"),
    pytest.param("coco", _rename("instances_train.json", "labels.json"),
                 r"coco holds several \.json files \(labels\.json, more\.json\)", id="coco-which-json"),
]


@pytest.mark.parametrize(("fmt", "damage", "message"), BAD)
def test_bad_inputs_name_the_file(tmp_path: Path, fmt: str, damage: Callable[[Path], None], message: str) -> None:
    folder = MAKERS[fmt](tmp_path / fmt)
    damage(folder)
    with pytest.raises(DataError, match=message) as raised:
        read_boxes(folder)
    assert "\n" not in str(raised.value)


def test_no_layout_lists_the_accepted_ones(tmp_path: Path) -> None:
    write_images(tmp_path / "photos")
    with pytest.raises(DataError, match=r"photos has no detection labels .*COCO .*Pascal VOC .*YOLO"):
        detect_format(tmp_path / "photos")


def test_unknown_format_and_option_values(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown label format 'yolov8'"):
        convert(make_yolo(tmp_path / "yolo"), tmp_path / "out", "yolov8")
    with pytest.raises(ConfigError, match="--missing-labels must be error or background"):
        read_boxes(tmp_path / "yolo", missing_labels="skip")


def test_a_non_empty_output_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(DataError, match=r"output folder .*out exists and is not empty"):
        convert(make_yolo(tmp_path / "yolo"), tmp_path / "out", "coco")
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


def test_a_failed_write_leaves_no_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = make_voc(tmp_path / "voc")
    calls = []

    def copy_then_fail(src: Path, dst: Path) -> None:
        calls.append(src)
        if len(calls) == 2:
            raise OSError(5, "Input/output error", str(src))
        Path(dst).write_bytes(Path(src).read_bytes())

    monkeypatch.setattr(box_formats.shutil, "copy2", copy_then_fail)
    with pytest.raises(DataError, match=r"cannot write .*out: .*Input/output error"):
        convert(source, tmp_path / "out", "yolo")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["voc"]  # neither out/ nor its temporary folder


def test_splits_are_converted_into_split_folders(tmp_path: Path) -> None:
    root = tmp_path / "data"
    make_coco(root / "train")
    make_coco(root / "val")
    path, summary = convert_with_summary(root, tmp_path / "out", "voc")
    assert summary == f"6 images, 8 boxes, 3 classes: coco -> voc (train, val), written to {path}"
    splits = discover_detection(path)
    assert sorted(splits) == ["train", "val"] and splits["val"].classes == ["dog", "cat", "bird"]
    assert_boxes(splits["train"], COCO_EXPECTED, atol=1e-3)


def test_cli_convert(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    source, out = make_yolo(tmp_path / "yolo"), tmp_path / "out"
    code, stdout, _ = run_cli(["convert", str(source), str(out), "--to", "coco"], monkeypatch, capsys)
    assert code == 0 and stdout == f"3 images, 3 boxes, 3 classes: yolo -> coco, written to {out}\n"
    assert_boxes(read_boxes(out), EXPECTED, atol=1e-9)


def test_cli_convert_refuses_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture) -> None:
    source, out = make_yolo(tmp_path / "yolo"), tmp_path / "out"
    (source / "labels" / "a.txt").unlink()
    code, _, stderr = run_cli(["convert", str(source), str(out), "--to", "voc"], monkeypatch, capsys)
    assert code == 2 and stderr.count("\n") == 1 and stderr.startswith("error: image ")
    assert "--missing-labels background" in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["yolo"]
    code, _, _ = run_cli(["convert", str(source), str(out), "--to", "voc", "--missing-labels", "background"],
                         monkeypatch, capsys)
    assert code == 0 and read_boxes(out).images[0].boxes.shape == (0, 4)


def test_box_statistics(tmp_path: Path) -> None:
    stats = box_statistics(read_boxes(make_voc(tmp_path / "voc")))
    assert stats["images"] == 3 and stats["background_images"] == 1 and stats["boxes"] == 3
    assert stats["boxes_per_class"] == {"bird": 1, "cat": 1, "dog": 1}
    assert stats["width"]["min"] == 16 and stats["width"]["max"] == 40 and stats["height"]["median"] == 42
    assert stats["area"]["max"] == W * H and stats["sqrt_area"]["min"] == pytest.approx((16 * 28) ** 0.5)


def test_suggest_anchor_sizes() -> None:
    sides = [8, 12, 30, 64, 100, 200, 400]  # square boxes, one per image
    boxset = BoxSet(["x"], [box_image(f"{i}.png", 500, 500, [[0, 0, s, s]], [0]) for i, s in enumerate(sides)])
    # sqrt(area) quantiles at 0.1, 0.3, 0.5, 0.7, 0.9: 10.4, 26.4, 64, 120, 280 -> the nearest in log of the grid
    assert suggest_anchor_sizes(boxset, levels=5) == (11, 23, 64, 128, 256)
    assert suggest_anchor_sizes(BoxSet(["x"], [box_image("a.png", 50, 50, [[0, 0, 20, 20]], [0])]), 3) == (23, 32, 45)
    with pytest.raises(DataError, match="no box"):
        suggest_anchor_sizes(BoxSet(["x"], [box_image("a.png", 50, 50, [], [])]))
