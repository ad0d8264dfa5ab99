"""The lbfgs head: logistic regression solved to convergence on cached features, its L2 chosen on val."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

import cvtransfer
from cvtransfer.errors import ConfigError
from cvtransfer.strategies.linear import L2_GRID, PATIENCE, Standardiser, fit_lbfgs_head, solve_logistic
from tests.conftest import tiny_config


def blobs(n: int, dims: int, classes: int, seed: int, spread: float = 1.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian classes with different per-feature scales and offsets (so standardising matters)."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dims, generator=generator) * spread
    labels = torch.arange(n) % classes
    scales = torch.logspace(-1, 1, dims)
    features = (centres[labels] + torch.randn(n, dims, generator=generator)) * scales + 3.0
    return features, labels


class HeadOnly(nn.Module):
    """What fit_lbfgs_head writes into: a model with num_classes and a linear head."""

    def __init__(self, dims: int, classes: int) -> None:
        super().__init__()
        self.num_classes = classes
        self.head = nn.Linear(dims, classes)


@pytest.mark.parametrize("l2", [1e-1, 1e-3])
def test_solution_matches_scikit_learn_logistic_regression(l2: float) -> None:
    features, labels = blobs(300, 20, 4, seed=1)
    scaled = StandardScaler().fit_transform(features.double().numpy())
    n = len(labels)
    # sklearn minimises C * sum_i CE_i + ||W||^2 / 2, i.e. mean CE + ||W||^2 / (2 C n): C = 1 / (l2 n)
    reference = LogisticRegression(C=1.0 / (l2 * n), max_iter=10_000, tol=1e-10).fit(scaled, labels.numpy())
    weight, bias, iterations = solve_logistic(torch.from_numpy(scaled), labels, 4, l2, nn.CrossEntropyLoss(),
                                             max_iter=5000)
    assert iterations > 1
    ours = torch.softmax(torch.from_numpy(scaled) @ weight.t() + bias, dim=1).numpy()
    np.testing.assert_allclose(ours, reference.predict_proba(scaled), atol=2e-4)
    np.testing.assert_allclose(weight.numpy(), reference.coef_, rtol=2e-3, atol=2e-3)


def test_the_fitted_head_matches_scikit_learn_on_raw_features() -> None:
    """fit_lbfgs_head as a run calls it (float32, its iteration cap) against scikit-learn's standardised
    logistic regression with the same penalty, both applied to the raw features."""
    features, labels = blobs(400, 32, 5, seed=7, spread=0.8)
    val = blobs(100, 32, 5, seed=8, spread=0.8)
    model = HeadOnly(32, 5)
    fit_lbfgs_head(model, (features, labels), val, nn.CrossEntropyLoss(), l2_values=(1e-2,))  # type: ignore[arg-type]
    reference = make_pipeline(StandardScaler(), LogisticRegression(C=1.0 / (1e-2 * len(labels)), max_iter=10_000,
                                                                   tol=1e-10)).fit(features.numpy(), labels.numpy())
    with torch.no_grad():
        ours = torch.softmax(model.head(val[0]), dim=1).numpy()
    np.testing.assert_allclose(ours, reference.predict_proba(val[0].numpy()), atol=5e-3)
    assert (ours.argmax(1) == reference.predict(val[0].numpy())).mean() >= 0.99


def test_folded_head_applies_to_raw_features() -> None:
    features, labels = blobs(200, 8, 3, seed=2)
    model = HeadOnly(8, 3)
    val = blobs(60, 8, 3, seed=3)
    fit = fit_lbfgs_head(model, (features, labels), val, nn.CrossEntropyLoss(), l2_values=(1e-2,))  # type: ignore[arg-type]
    standardise = Standardiser.of(features.double())
    weight, bias, _ = solve_logistic(standardise(features.double()), labels, 3, 1e-2, nn.CrossEntropyLoss())
    expected = standardise(val[0].double()) @ weight.t() + bias
    with torch.no_grad():
        got = model.head(val[0])
    torch.testing.assert_close(got, expected.float(), atol=1e-3, rtol=1e-4)
    assert fit.l2 == 1e-2 and len(fit.candidates) == 1


def test_penalty_is_chosen_on_val_not_train() -> None:
    # few noisy training samples in many dimensions: the weakest penalty fits train best but generalises worst
    train = blobs(40, 60, 2, seed=4, spread=0.4)
    val = blobs(400, 60, 2, seed=5, spread=0.4)
    val = (val[0], val[1])
    model = HeadOnly(60, 2)
    fit = fit_lbfgs_head(model, train, val, nn.CrossEntropyLoss())  # type: ignore[arg-type]
    losses = {row["l2"]: row["val_loss"] for row in fit.candidates}
    assert list(losses) == list(L2_GRID[:len(losses)])  # strongest first
    assert fit.l2 == min(losses, key=losses.__getitem__)
    tried_after_best = len(losses) - 1 - list(losses).index(fit.l2)
    assert tried_after_best == PATIENCE or len(losses) == len(L2_GRID)  # stopped once past the best, not before
    assert fit.l2 > min(L2_GRID)  # the weakest penalty overfits these 40 samples
    by_accuracy = fit_lbfgs_head(HeadOnly(60, 2), train, val, nn.CrossEntropyLoss(),  # type: ignore[arg-type]
                                 select="val_accuracy")
    best = max(row["val_accuracy"] for row in by_accuracy.candidates)
    assert next(r for r in by_accuracy.candidates if r["l2"] == by_accuracy.l2)["val_accuracy"] == best


def test_linear_fit_uses_lbfgs_by_default_and_records_the_search(split_dir: Path, tmp_path: Path) -> None:
    run = cvtransfer.fit(tiny_config(split_dir, tmp_path / "run", strategy="linear"))
    probe = json.loads((run.path / "probe.json").read_text())
    assert probe["solver"] == "lbfgs" and probe["selected_by"] == "val_loss"
    assert 1 <= len(probe["candidates"]) <= len(L2_GRID)
    assert probe["l2"] == min(probe["candidates"], key=lambda row: row["val_loss"])["l2"]
    assert len(run.history) == 1  # one solve, no epochs
    assert not (run.path / "checkpoints").exists() or not any((run.path / "checkpoints").iterdir())
    fixed = cvtransfer.fit(tiny_config(split_dir, tmp_path / "fixed", strategy="linear", probe_l2="0.01"))
    assert json.loads((fixed.path / "probe.json").read_text())["l2"] == 0.01


@pytest.mark.parametrize(("options", "message"), [
    ({"strategy": "linear", "probe_l2": "-1"}, "--probe-l2 must be auto or a number >= 0"),
    ({"strategy": "linear", "probe_l2": "nan"}, "--probe-l2 must be auto or a number >= 0"),
    ({"strategy": "full", "probe_l2": "0.1"}, "--probe-l2 sets the penalty of the lbfgs head"),
    ({"strategy": "linear", "head": "linear", "probe_l2": "0.1"}, "--probe-l2 sets the penalty of the lbfgs head"),
    ({"strategy": "linear", "loss": "l2sp"}, "does not apply to a solved head"),
])
def test_probe_options_are_refused_when_they_cannot_apply(options: dict[str, object], message: str, split_dir: Path,
                                                          tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=message):
        cvtransfer.fit(tiny_config(split_dir, tmp_path / "run", **options))
    assert not (tmp_path / "run").exists()


def test_a_class_missing_from_train_is_never_predicted() -> None:
    features, labels = blobs(90, 6, 3, seed=6)
    model = HeadOnly(6, 4)  # class 3 has no training sample
    fit_lbfgs_head(model, (features, labels), (features[:30], labels[:30]), nn.CrossEntropyLoss())  # type: ignore[arg-type]
    with torch.no_grad():
        assert (model.head(features).argmax(1) != 3).all()
