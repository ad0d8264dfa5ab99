"""Shared helpers of the benchmarks: which data to use, and a timer."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
OFFICE_AMAZON = SHARED / "office_caltech10" / "images" / "amazon"


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
