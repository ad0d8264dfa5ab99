"""The LR range test's suggestion: steepest descent of the smoothed loss against log10(LR)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from cvtransfer import cli
from cvtransfer.workflows.lr_find import diverged_at, smooth_losses, suggest_lr
from tests.conftest import tiny_config

STEEPEST = 1e-3  # where the synthetic loss falls fastest per decade of LR


def synthetic_curve(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per-batch losses over 1e-7..1: flat, a sigmoid drop centred on 1e-3, then divergence past ~3e-2."""
    lrs = np.logspace(-7, 0, 100)
    x = np.log10(lrs)
    drop = 1.8 / (1 + np.exp(-(x - math.log10(STEEPEST)) / 0.35))
    loss = 2.3 - drop + np.where(x > -1.5, 8 * (x + 1.5) ** 2, 0)
    return lrs, loss * np.exp(np.random.default_rng(seed).normal(0, 0.03, len(x)))


def lightning_suggestion(lrs: np.ndarray, raw: np.ndarray) -> float:
    """What Lightning's ``suggestion()`` answers for the losses its callback records (EMA, beta 0.98)."""
    from lightning.pytorch.tuner.lr_finder import _LRFinder

    average, smoothed = 0.0, []
    for step, loss in enumerate(raw, start=1):
        average = 0.98 * average + 0.02 * loss
        smoothed.append(average / (1 - 0.98 ** (step + 1)))
    finder = _LRFinder("exponential", float(lrs[0]), float(lrs[-1]), len(lrs))
    finder.results = {"lr": lrs.tolist(), "loss": smoothed}
    return float(finder.suggestion())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_suggestion_is_at_the_steepest_descent_in_log_lr(seed: int) -> None:
    lrs, raw = synthetic_curve(seed)
    found = suggest_lr(lrs, raw)
    assert found["rule"] == "steepest"
    assert STEEPEST / 1.5 < found["steepest"] < STEEPEST * 1.5
    lowest = lrs[int(np.argmin(np.asarray(found["smoothed_losses"])[: found["used"][1]]))]
    assert found["minimum_10"] == pytest.approx(lowest / 10)
    assert not STEEPEST / 1.5 < lightning_suggestion(lrs, raw) < STEEPEST * 1.5  # steepest per unit LR


def test_smoothing_does_not_shift_the_curve_and_divergence_is_cut() -> None:
    x = np.linspace(-3, 3, 101)
    step = np.tanh(x)
    smoothed = smooth_losses(step)
    assert np.argmin(np.abs(smoothed)) == 50  # a forward-only EMA would move the crossing to the right
    assert diverged_at(np.array([2.0, 1.0, 0.5, 1.9, 2.1, 9.0])) == 4  # above 4 x the minimum so far
    assert diverged_at(np.array([2.0, 1.0, math.nan])) == 2


def test_too_few_points_give_no_suggestion() -> None:
    found = suggest_lr([1e-5, 1e-4], [1.0, 0.9])
    assert found["steepest"] is None and found["minimum_10"] is None


def test_lr_find_cli_prints_one_suggestion_and_records_the_rule(split_dir: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "lr"
    monkeypatch.setattr(sys, "argv", [
        "cvtransfer", "lr-find", str(split_dir), "--backbone", "tinycnn", "--weights", "none",
        "--image-size", "16", "--batch-size", "8", "--no-progress", "--accelerator", "cpu",
        "--num-workers", "0", "--steps", "20", "--out", str(out)])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    captured = capsys.readouterr()
    assert exit_.value.code in (0, None), captured.err
    lines = (captured.out + captured.err).strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("suggested lr: "), lines  # no bar, no library messages
    result = json.loads((out / "lr_find.json").read_text())
    assert result["rule"] == "steepest" and result["suggestion"] == result["steepest"]
    assert 1e-7 <= result["steepest"] <= 1.0 and result["minimum_10"] > 0
    assert f"{result['suggestion']:.3g}" in lines[0]
    assert len(result["losses"]) == len(result["lrs"]) == len(result["smoothed_losses"])
    assert sorted(p.name for p in out.iterdir()) == ["lr_find.json", "lr_find.png"]  # no .lr_find_*.ckpt left


def test_lr_find_from_python(split_dir: Path, tmp_path: Path) -> None:
    import cvtransfer

    result = cvtransfer.lr_find(tiny_config(split_dir, tmp_path / "lr"), steps=20)
    assert result["rule"] == "steepest" and 1e-7 <= result["suggestion"] <= 1.0
    assert json.loads((tmp_path / "lr" / "lr_find.json").read_text())["suggestion"] == result["suggestion"]
