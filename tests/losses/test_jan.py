"""JAN's joint MMD: zero for identical domains, growing with a feature shift, sensitive to predictions,
equal to DAN's MMD for one layer; its --jan-sigma option and one adaptation run."""

from __future__ import annotations

import csv
import math
from itertools import pairwise
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import cvtransfer
from cvtransfer import Config
from cvtransfer.cli import app
from cvtransfer.losses import LOSSES
from cvtransfer.losses.dan import DEFAULT_ALPHAS, gaussian_mmd2
from cvtransfer.losses.jan import JointMaximumMeanDiscrepancy, joint_mmd2
from tests.losses.conftest import adapt_config, write_domain


def batch(seed: int, n: int = 32, dims: int = 16, classes: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """(features, logits) of one random batch."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, dims, generator=generator), torch.randn(n, classes, generator=generator)


def jan(source: tuple[torch.Tensor, torch.Tensor], target: tuple[torch.Tensor, torch.Tensor],
        sigma: float = 0.92) -> float:
    loss, metrics = JointMaximumMeanDiscrepancy(sigma).compare(source[0], target[0], source[1], target[1], 0.5)
    assert loss.ndim == 0 and metrics == {}
    return float(loss)


def test_registered_as_an_adaptation_method() -> None:
    assert LOSSES.get("jan") is JointMaximumMeanDiscrepancy and JointMaximumMeanDiscrepancy.needs_target


def test_identical_domains_give_zero() -> None:
    features, logits = batch(0)
    assert jan((features, logits), (features.clone(), logits.clone())) == pytest.approx(0.0, abs=1e-6)


def test_grows_with_a_shift_of_the_target_features() -> None:
    features, logits = batch(0)
    losses = [jan((features, logits), (features + shift, logits)) for shift in (0.0, 0.5, 1.0, 2.0)]
    assert losses[0] == pytest.approx(0.0, abs=1e-6)
    assert all(a < b for a, b in pairwise(losses)), losses


def test_differing_predictions_on_identical_features_give_a_positive_loss() -> None:
    features, logits = batch(0)
    _, other_logits = batch(1)
    assert jan((features, logits), (features, other_logits * 3)) > 1e-3
    # the prediction kernel's bandwidth is --jan-sigma: a narrower kernel tells the predictions apart more
    assert jan((features, logits), (features, other_logits * 3), sigma=0.1) > jan(
        (features, logits), (features, other_logits * 3), sigma=5.0)


def test_one_layer_is_dans_mmd() -> None:
    source, _ = batch(0)
    target, _ = batch(1)
    target = target + 0.7
    variances = torch.tensor(DEFAULT_ALPHAS) * 3.0
    joint = joint_mmd2([source], [target], [variances])
    assert float(joint) == pytest.approx(float(gaussian_mmd2(source, target, variances)), rel=1e-5, abs=1e-7)
    assert float(joint) > 0.01


def test_jan_sigma_is_an_option(tmp_path: Path) -> None:
    assert Config(jan_sigma=0.5).jan_sigma == 0.5
    assert JointMaximumMeanDiscrepancy.build(None, Config(jan_sigma=0.5)).sigma == 0.5
    result = CliRunner().invoke(app, ["adapt", "--help"], env={"COLUMNS": "1000"})
    assert result.exit_code == 0 and "--jan-sigma" in result.output
    source, target = tmp_path / "source", tmp_path / "target"
    write_domain(source, 6, seed=0, background=(0, 70))
    write_domain(target / "train", 5, seed=1, background=(120, 230))
    write_domain(target / "test", 3, seed=2, background=(120, 230))
    run = cvtransfer.adapt(adapt_config(source, target, tmp_path / "run", method="jan", jan_sigma=0.5, epochs=1,
                                        iters_per_epoch=2, shift_samples=8, selection_samples=10))
    with open(run.path / "history.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 1 and math.isfinite(float(rows[0]["train_transfer_loss"]))
    assert run.config.method == "jan" and run.config.jan_sigma == 0.5
