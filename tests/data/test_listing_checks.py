"""CSV files as people write them (BOM, Latin-1, capitalised headers, blank labels) and files listed twice."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from cvtransfer.data.folders import discover
from cvtransfer.errors import DataError


def _rows(folder_dir: Path, header: str = "path,label,split") -> list[str]:
    rows = [header]
    for cls in "abc":
        files = sorted((folder_dir / cls).iterdir())
        rows += [f"{folder_dir.name}/{cls}/{f.name},{cls},{'val' if i < 2 else 'train'}" for i, f in enumerate(files)]
    return rows


def _write(path: Path, rows: list[str], encoding: str = "utf-8") -> Path:
    path.write_bytes("\n".join(rows).encode(encoding) + b"\n")
    return path


def test_bom_and_capitalised_header_are_read(tmp_path: Path, folder_dir: Path) -> None:
    csv = _write(tmp_path / "labels.csv", _rows(folder_dir, " Path , Label ,Split"), "utf-8-sig")
    splits = discover(csv)
    assert splits.counts("val") == {"a": 2, "b": 2, "c": 2} and len(splits.train) == 24


def test_latin1_is_read_with_a_warning(tmp_path: Path, folder_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    rows = [row.replace(",a,", ",caf\u00e9,") for row in _rows(folder_dir)]
    csv = _write(tmp_path / "labels.csv", rows, "latin-1")
    with caplog.at_level(logging.WARNING):
        splits = discover(csv)
    assert "caf\u00e9" in splits.classes and "not UTF-8" in caplog.text


def test_a_row_without_label_names_its_line(tmp_path: Path, folder_dir: Path) -> None:
    rows = _rows(folder_dir)
    rows[3] = rows[3].split(",")[0]
    with pytest.raises(DataError, match=r"labels\.csv line 4: no label"):
        discover(_write(tmp_path / "labels.csv", rows))


def test_a_header_without_the_columns_is_named(tmp_path: Path, folder_dir: Path) -> None:
    with pytest.raises(DataError, match=r"path,label.*not file,class"):
        discover(_write(tmp_path / "labels.csv", _rows(folder_dir, "file,class,split")))


def test_blank_lines_are_ignored(tmp_path: Path, folder_dir: Path) -> None:
    rows = _rows(folder_dir)
    rows.insert(5, ",,")
    assert len(discover(_write(tmp_path / "labels.csv", rows)).train) == 24


def test_a_file_under_two_labels_is_refused(tmp_path: Path, folder_dir: Path) -> None:
    rows = _rows(folder_dir)
    rows.append(rows[-1].replace(",c,", ",a,"))
    with pytest.raises(DataError, match=r"c_9\.png is listed under labels 'a' and 'c'"):
        discover(_write(tmp_path / "labels.csv", rows))


def test_a_file_in_train_and_val_is_refused(tmp_path: Path, folder_dir: Path) -> None:
    rows = _rows(folder_dir)
    rows.append(rows[1].replace(",val", ",train"))
    with pytest.raises(DataError, match="in the val and train splits"):
        discover(_write(tmp_path / "labels.csv", rows))


def test_a_file_listed_twice_is_used_once(tmp_path: Path, folder_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    rows = _rows(folder_dir)
    rows.append(rows[-1])
    rows.append(rows[-1].replace(f"{folder_dir.name}/", f"./{folder_dir.name}/"))
    with caplog.at_level(logging.WARNING):
        splits = discover(_write(tmp_path / "labels.csv", rows))
    assert len(splits.train) == 24 and "2 file(s) listed more than once" in caplog.text


def test_a_linked_copy_across_split_folders_is_refused(split_dir: Path) -> None:
    train_file = sorted((split_dir / "train" / "a").iterdir())[0]
    os.symlink(train_file, split_dir / "val" / "a" / "linked.png")
    with pytest.raises(DataError, match="leakage"):
        discover(split_dir)


def test_a_val_folder_of_unreadable_files_is_not_replaced(split_dir: Path) -> None:
    for file in (split_dir / "val").rglob("*.*"):
        file.write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"val split .* none is a readable image"):
        discover(split_dir)
