"""Reading a run's history.csv, and which row its best checkpoint kept."""

from __future__ import annotations

import csv
import math
from pathlib import Path


def read_history(path: str | Path) -> list[dict[str, float]]:
    """Rows of a history.csv as floats (missing values are NaN)."""
    path = Path(path)
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return [{k: float(v) if v not in ("", None) else float("nan") for k, v in row.items()}
                for row in csv.DictReader(handle)]


def selected_row(history: list[dict[str, float]], column: str, mode: str) -> int | None:
    """Index of the row the best checkpoint keeps by ``column`` ("min" or "max"): the first best, NaN skipped."""
    known = [(row[column], index) for index, row in enumerate(history)
             if not math.isnan(row.get(column, math.nan))]
    if not known:
        return None
    return min(known, key=lambda pair: (pair[0] if mode == "min" else -pair[0], pair[1]))[1]
