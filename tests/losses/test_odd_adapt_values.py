"""Property-style, as tests/test_bad_inputs.py for fit: odd values for adapt's own options give a finished
run (exit 0) or one line and exit 2 with no folder left behind; never a traceback or a hang."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tests.losses.conftest import write_domains
from tests.test_bad_inputs import ODD, finished_or_refused, run_cli

FAST = {"backbone": "tinycnn", "weights": "none", "image-size": "16", "epochs": "1", "batch-size": "8",
        "accelerator": "cpu", "num-workers": "0", "augment": "none", "bottleneck-dim": "16", "iters-per-epoch": "3",
        "discriminator-dim": "16", "selection-samples": "20", "shift-samples": "20", "method": "dann"}
ADAPT_OPTIONS = ["method", "trade_off", "mcc", "bottleneck_dim", "iters_per_epoch", "discriminator_dim",
                 "select_by", "selection_samples", "shift_samples", "jan_sigma", "target_test", "loss"]


@pytest.fixture(autouse=True)
def in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Relative paths among the odd values (a --cache-dir named 0.5) land in the test's folder."""
    monkeypatch.chdir(tmp_path)


def adapt_cases() -> list[tuple[str, str]]:
    every = [(name, value) for name in ADAPT_OPTIONS for value in ODD]
    return sorted(random.Random(3).sample(every, 16))


@pytest.fixture(scope="module")
def domains(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_domains(tmp_path_factory.mktemp("odd_domains"), 6, 4, 3)


@pytest.mark.parametrize(("option", "value"), adapt_cases())
def test_adapt_with_an_odd_value(option: str, value: str, domains: tuple[Path, Path], tmp_path: Path) -> None:
    source, target = domains
    out = tmp_path / "run"
    values = {**FAST, option.replace("_", "-"): value}
    if option == "jan_sigma":
        values["method"] = "jan"
    flags = [item for name, given in values.items() for item in ("--" + name, given)]
    code, lines = run_cli(["adapt", "--source", str(source), "--target", str(target), "--out", str(out),
                           "--no-progress", "--no-report", *flags])
    finished_or_refused(code, lines, out)
