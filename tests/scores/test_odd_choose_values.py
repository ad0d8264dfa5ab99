"""Property-style, as tests/test_bad_inputs.py for fit: odd values for rank's and auto's own options give a
finished result (exit 0) or one line and exit 2 with no folder left behind; never a traceback or a hang."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tests.scores.conftest import IMAGE_SIZE, weights_pairs
from tests.test_bad_inputs import ODD, finished_or_refused, run_cli

COMMON = ["--image-size", str(IMAGE_SIZE), "--accelerator", "cpu", "--num-workers", "0", "--no-progress",
          "--batch-size", "8"]
RANK_OPTIONS = ["backbones", "rank_by", "cache_dir"]
AUTO_OPTIONS = ["budget", "tiny_per_class", "small_per_class", "small_images", "backbones", "epochs"]


@pytest.fixture(autouse=True)
def in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Relative paths among the odd values (a --cache-dir named 0.5) land in the test's folder."""
    monkeypatch.chdir(tmp_path)


def _cases(options: list[str], count: int, seed: int) -> list[tuple[str, str]]:
    every = [(name, value) for name in options for value in ODD]
    return sorted(random.Random(seed).sample(every, count))


@pytest.mark.parametrize(("option", "value"), _cases(RANK_OPTIONS, 10, 1))
def test_rank_with_an_odd_value(option: str, value: str, split_dir: Path, tmp_path: Path,
                                candidate_weights: dict[str, Path]) -> None:
    out = tmp_path / "ranked"
    args = {"backbones": "tinycnn,lenet", "weights": weights_pairs(candidate_weights), option: value}
    code, lines = run_cli(["rank", str(split_dir), "--out", str(out), *COMMON, *_flags(args)])
    finished_or_refused(code, lines, out, made=("ranking.csv",))


@pytest.mark.parametrize(("option", "value"), _cases(AUTO_OPTIONS, 8, 2))
def test_auto_with_an_odd_value(option: str, value: str, split_dir: Path, tmp_path: Path,
                                candidate_weights: dict[str, Path]) -> None:
    out = tmp_path / "auto"
    args = {"budget": "fast", "backbones": "tinycnn,lenet", "weights": weights_pairs(candidate_weights),
            "epochs": "1", "augment": "none", "no_report": None, option: value}
    code, lines = run_cli(["auto", str(split_dir), "--out", str(out), *COMMON, *_flags(args)])
    finished_or_refused(code, lines, out, made=("auto.json",))


def _flags(values: dict[str, str | None]) -> list[str]:
    flags: list[str] = []
    for name, value in values.items():
        flags += ["--" + name.replace("_", "-")] + ([] if value is None else [value])
    return flags
