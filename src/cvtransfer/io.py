"""Atomic file writes: a reader (or a crash) never sees half a file."""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cvtransfer.errors import DiskFull

# Below this much free space a failed write is taken for a full disk: torch.save reports one as a
# RuntimeError of its zip writer, without an errno.
LOW_SPACE_BYTES = 16 * 2**20
FULL_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename."""
    path = Path(path)
    tmp_path: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        yield tmp_path
        with open(tmp_path, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp_path, path)
    except (OSError, RuntimeError) as err:
        if is_disk_full(err, path.parent):
            raise disk_full(path) from None
        raise
    finally:
        if tmp_path is not None:
            tmp_path.unlink(missing_ok=True)


def is_disk_full(err: BaseException, folder: Path) -> bool:
    """Whether ``err``, raised while writing in ``folder``, comes from a full disk (or quota)."""
    if isinstance(err, OSError) and err.errno in FULL_DISK_ERRNOS:
        return True
    try:
        return shutil.disk_usage(folder).free < LOW_SPACE_BYTES
    except OSError:
        return False


def disk_full(path: Path) -> DiskFull:
    return DiskFull(f"the disk is full: {path} could not be written; free space, then run the command again "
                    "(a run with a checkpoint continues with --resume RUN_DIR; nothing written before was lost)")


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def beside(metrics_file: str | Path, kind: str) -> Path:
    """The picture of ``kind`` written beside a metrics file: metrics.json -> KIND.png,
    metrics_external.json -> KIND_external.png, other.json -> other_KIND.png."""
    path = Path(metrics_file)
    stem = path.stem.replace("metrics", kind) if "metrics" in path.stem else f"{path.stem}_{kind}"
    return path.with_name(stem + ".png")


def output_stems(files: Sequence[str | Path]) -> list[str]:
    """A distinct file name stem per input file, for the pictures written per image: each file's own stem,
    with _2, _3, ... added to a stem seen before (a/x.jpg and b/x.png give x and x_2)."""
    seen: set[str] = set()
    stems = []
    for file in files:
        stem, number = Path(file).stem, 1
        candidate = stem
        while candidate in seen:
            number += 1
            candidate = f"{stem}_{number}"
        seen.add(candidate)
        stems.append(candidate)
    return stems
