"""Dataset layouts, splits, skipped files and the class checks made before training."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from PIL import Image

from cvtransfer.data.folders import discover
from cvtransfer.errors import DataError
from tests.conftest import write_class_images


def test_split_folders_keep_their_splits(split_dir: Path) -> None:
    splits = discover(split_dir)
    assert splits.classes == ["a", "b", "c"]
    assert (len(splits.train), len(splits.val), len(splits.test)) == (30, 12, 12)


def test_class_folders_are_split_stratified_and_seeded(folder_dir: Path) -> None:
    first = discover(folder_dir, val_split=0.2, seed=3)
    again = discover(folder_dir, val_split=0.2, seed=3)
    other = discover(folder_dir, val_split=0.2, seed=4)
    assert first.val == again.val and first.val != other.val
    assert first.counts("val") == {"a": 2, "b": 2, "c": 2}
    assert not set(first.train) & set(first.val)


def test_test_split_is_carved_out_too(folder_dir: Path) -> None:
    splits = discover(folder_dir, val_split=0.2, test_split=0.3)
    assert splits.counts("test") == {"a": 3, "b": 3, "c": 3}
    assert len(splits.train) + len(splits.val) + len(splits.test) == 30


def test_val_and_test_fractions_are_of_the_whole_data(tmp_path: Path) -> None:
    write_class_images(tmp_path / "d", {"a": 50, "b": 50})
    splits = discover(tmp_path / "d", val_split=0.2, test_split=0.2)
    # 20% of 50 each, not 20% of the 40 left after the test split (8)
    assert splits.counts("val") == {"a": 10, "b": 10}
    assert splits.counts("test") == {"a": 10, "b": 10}
    assert splits.counts("train") == {"a": 30, "b": 30}


def test_fractions_leaving_no_training_data_are_refused(folder_dir: Path) -> None:
    with pytest.raises(DataError, match=r"--val-split 0\.5 and --test-split 0\.5"):
        discover(folder_dir, val_split=0.5, test_split=0.5)


def test_csv_layout_with_split_column(tmp_path: Path, folder_dir: Path) -> None:
    rows = ["path,label,split"]
    for cls in "abc":
        files = sorted((folder_dir / cls).iterdir())
        rows += [f"{folder_dir.name}/{cls}/{f.name},{cls},{'val' if i < 2 else 'train'}" for i, f in enumerate(files)]
    csv = tmp_path / "labels.csv"
    csv.write_text("\n".join(rows) + "\n")
    splits = discover(csv)
    assert splits.counts("val") == {"a": 2, "b": 2, "c": 2}
    assert len(splits.train) == 24


def test_unreadable_files_are_skipped_and_listed(folder_dir: Path) -> None:
    (folder_dir / "a" / "notes.txt").write_text("not an image")
    (folder_dir / "b" / "broken.jpg").write_bytes(b"garbage")
    (folder_dir / "stray.png").write_bytes(b"")
    splits = discover(folder_dir)
    skipped = {Path(p).name: reason for p, reason in splits.skipped}
    assert set(skipped) == {"notes.txt", "broken.jpg", "stray.png"}
    assert "class folder" in skipped["stray.png"]
    assert len(splits.train) + len(splits.val) == 30


def test_empty_class_is_an_error(folder_dir: Path) -> None:
    (folder_dir / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty.*no usable training images"):
        discover(folder_dir)


def test_class_with_only_broken_images_is_an_error(folder_dir: Path) -> None:
    (folder_dir / "d").mkdir()
    (folder_dir / "d" / "x.png").write_bytes(b"broken")
    with pytest.raises(DataError, match=r"d.*no usable training images"):
        discover(folder_dir)


def test_class_only_in_val_is_an_error(split_dir: Path) -> None:
    write_class_images(split_dir / "val", {"zebra": 2})
    with pytest.raises(DataError, match=r"zebra.*val but not in train"):
        discover(split_dir)


def test_fewer_than_two_classes_is_an_error(tmp_path: Path) -> None:
    write_class_images(tmp_path / "one", {"only": 5})
    with pytest.raises(DataError, match="at least 2"):
        discover(tmp_path / "one")


def test_missing_path_and_non_csv_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        discover(tmp_path / "nope")
    (tmp_path / "x.txt").write_text("")
    with pytest.raises(DataError, match=r"not a \.csv"):
        discover(tmp_path / "x.txt")


def test_imbalance_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_class_images(tmp_path / "imb", {"many": 30, "few": 3})
    with caplog.at_level(logging.WARNING):
        discover(tmp_path / "imb")
    assert "imbalanced" in caplog.text and "--class-weights auto" in caplog.text


def test_single_image_class_stays_in_train(tmp_path: Path) -> None:
    write_class_images(tmp_path / "d", {"a": 6, "b": 1})
    splits = discover(tmp_path / "d", val_split=0.5)
    assert splits.counts("train")["b"] == 1 and splits.counts("val")["b"] == 0


def test_grayscale_and_rgba_images_are_usable(tmp_path: Path) -> None:
    write_class_images(tmp_path / "d", {"a": 3, "b": 3})
    Image.new("L", (10, 10), 5).save(tmp_path / "d" / "a" / "gray.png")
    Image.new("RGBA", (10, 10), (1, 2, 3, 4)).save(tmp_path / "d" / "b" / "alpha.png")
    Image.new("I;16", (10, 10)).save(tmp_path / "d" / "b" / "deep.png")
    splits = discover(tmp_path / "d", val_split=0.3)
    assert not splits.skipped and len(splits.train) + len(splits.val) == 9
