"""Shared helpers of the benchmarks: which data to use, and a timer."""

from __future__ import annotations

import os
import random
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
OFFICE_IMAGES = SHARED / "office_caltech10" / "images"
OFFICE_AMAZON = OFFICE_IMAGES / "amazon"
OFFICE_VAL_PER_CLASS = 3
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def default_image_folder(work: Path) -> Path:
    """Real photographs when ../shared is there (Office-Caltech amazon), else the embedded demo target."""
    if OFFICE_AMAZON.is_dir():
        return OFFICE_AMAZON
    from cvtransfer.data.demo import make_demo_domains

    return make_demo_domains(work / "demo")["target"] / "test"


@contextmanager
def timed(results: dict[str, float], name: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    results[name] = time.perf_counter() - start


def office_split(domain: str, k: int, seed: int, root: Path) -> dict[str, int] | str:
    """Symlink a seeded split of Office-Caltech's ``domain`` into root/train|val|test/<class>/; return the
    split sizes, or why it cannot be made.

    Per class, a seeded shuffle: the first OFFICE_VAL_PER_CLASS images for val, the next ``k`` for train,
    the rest for test (at least one); the same seed and k give the same images in every benchmark.
    """
    folder = OFFICE_IMAGES / domain
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    files = {c: sorted(p for p in (folder / c).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) for c in classes}
    need = k + OFFICE_VAL_PER_CLASS + 1
    short = [f"{c} has {len(files[c])}" for c in classes if len(files[c]) < need]
    if short:
        return f"{', '.join(short)} images, k={k} needs {need} per class"
    sizes = {"train": 0, "val": 0, "test": 0}
    for c in classes:
        order = list(files[c])
        random.Random(f"{seed}/{domain}/{c}").shuffle(order)
        start = OFFICE_VAL_PER_CLASS + k
        parts = {"val": order[:OFFICE_VAL_PER_CLASS], "train": order[OFFICE_VAL_PER_CLASS:start], "test": order[start:]}
        for split, chosen in parts.items():
            target = root / split / c
            target.mkdir(parents=True, exist_ok=True)
            for path in chosen:
                os.symlink(path.resolve(), target / path.name)
            sizes[split] += len(chosen)
    return sizes


def run_process(command: list[str]) -> tuple[str, float]:
    """(stdout, seconds) of ``command`` run from the repository's root; its failure ends the benchmark, showing
    the end of its stderr."""
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command[:5])} failed:\n{done.stderr[-3000:]}")
    return done.stdout, time.perf_counter() - start
