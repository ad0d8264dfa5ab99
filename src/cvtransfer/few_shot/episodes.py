"""N-way K-shot episodes sampled from labelled samples, seeded, and their accuracy's 95% interval."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cvtransfer.errors import DataError


@dataclass(frozen=True)
class Episode:
    """Indices into the sample list: ``support`` (ways x shots, class-major) and ``query`` (ways x queries);
    ``classes`` the dataset's class indices, in the episode's label order 0..ways-1."""

    classes: np.ndarray
    support: np.ndarray
    query: np.ndarray


def sample_episodes(labels: Sequence[int] | np.ndarray, class_names: Sequence[str], ways: int, shots: int,
                    queries: int, episodes: int, seed: int = 0) -> list[Episode]:
    """``episodes`` episodes of ``ways`` classes, ``shots`` support and ``queries`` query images each (no image in
    both), drawn with ``seed``; a class with fewer than shots + queries images is an error naming it."""
    labels = np.asarray(labels)
    present = sorted(set(labels.tolist()))
    by_class = {c: np.flatnonzero(labels == c) for c in present}
    short = [c for c in present if len(by_class[c]) < shots + queries]
    if short:
        counts = ", ".join(f"'{class_names[c]}' ({len(by_class[c])})" for c in short[:3])
        raise DataError(f"class(es) {counts} have fewer than --shots + --queries = {shots + queries} images: add images, "
                        "lower --shots/--queries, or leave the class out (--classes-file)")
    if ways > len(present):
        raise DataError(f"--ways {ways} needs {ways} classes but the data has {len(present)}: lower --ways")
    rng = np.random.default_rng(seed)
    result = []
    for _ in range(episodes):
        chosen = rng.choice(present, size=ways, replace=False)
        picks = [rng.choice(by_class[c], size=shots + queries, replace=False) for c in chosen]
        result.append(Episode(np.asarray(chosen), np.concatenate([p[:shots] for p in picks]),
                              np.concatenate([p[shots:] for p in picks])))
    return result


def episode_labels(ways: int, per_class: int) -> np.ndarray:
    """Labels 0..ways-1, each repeated ``per_class`` times (the order of :class:`Episode`'s indices)."""
    return np.repeat(np.arange(ways), per_class)


def interval95(accuracies: Sequence[float]) -> tuple[float, float | None]:
    """(mean, half-width of its 95% confidence interval: 1.96 standard errors) over episodes; no interval
    (None) from a single episode."""
    values = np.asarray(accuracies, dtype=np.float64)
    if len(values) < 2:
        return float(values.mean()), None
    return float(values.mean()), float(1.96 * values.std(ddof=1) / math.sqrt(len(values)))
