"""Feature extraction: the backbone is frozen, its features computed once and cached, the head fitted.

``--head`` says how the head is fitted on the cached features:

- ``lbfgs`` (the default, ``auto``): multinomial logistic regression solved to convergence by L-BFGS on
  the whole feature matrix, its L2 penalty chosen on the validation split (the protocol of the
  linear-probe papers, e.g. CLIP's); costs about a second on thousands of images;
- ``linear``: the head trained by the engine for ``--epochs`` with the run's optimizer (loss terms,
  mixing and schedules apply);
- ``logistic`` or ``svm``: a scikit-learn classifier, whose coefficients become the linear head.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC
from torch import nn

from cvtransfer.errors import ConfigError
from cvtransfer.models.transfer_model import TransferModel
from cvtransfer.options import STRATEGY, opt
from cvtransfer.strategies.base import STRATEGIES, Strategy

if TYPE_CHECKING:
    from cvtransfer.config import Config

log = logging.getLogger(__name__)

SOLVED_HEADS = ("lbfgs", "logistic", "svm")  # fitted by a solver on the cached features, not by the engine's epochs
# The L2 penalties tried on standardised features, strongest first (each solve starts from the last one's solution).
L2_GRID = tuple(10.0 ** -k for k in range(7))
PATIENCE = 2  # the search stops after this many penalties in a row that do no better on val than the best


@dataclass
class LinearOptions:
    """How the probe fits its head."""

    head: Literal["auto", "lbfgs", "linear", "logistic", "svm"] = opt(
        "auto", "linear strategy: lbfgs (auto: logistic regression solved to convergence, L2 chosen on val), linear "
        "(trained by the optimizer for --epochs), or a scikit-learn logistic/svm, on cached features.", STRATEGY)
    probe_l2: str = opt(
        "auto", "lbfgs head: L2 penalty on the standardised weights, or auto (the best of 1 to 1e-6 on the val "
        "split, by --monitor).", STRATEGY)


def head_kind(config: Config) -> str:
    """The head fitting of ``config``: ``auto`` resolved (lbfgs; a segmentation decoder or a detector's heads
    train: linear)."""
    if config.task in ("segmentation", "detection"):
        return "linear"
    return "lbfgs" if config.head == "auto" else config.head


def solved_head(config: Config) -> bool:
    """Whether ``config``'s head is fitted by a solver on cached features (no epochs, no loss terms)."""
    return bool(STRATEGIES.get(config.strategy).uses_feature_cache) and head_kind(config) in SOLVED_HEADS


def probe_l2_values(config: Config) -> tuple[float, ...]:
    """The penalties ``--probe-l2`` asks to try (one value, or the grid for ``auto``)."""
    if config.probe_l2 == "auto":
        return L2_GRID
    try:
        value = float(config.probe_l2)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also NaN
        raise ConfigError(f"--probe-l2 must be auto or a number >= 0, not '{config.probe_l2}'")
    return (value,)


@STRATEGIES.register("linear")
class LinearProbe(Strategy):
    """Frozen backbone, cached features, trainable head."""

    name = "linear"
    uses_feature_cache = True
    options = LinearOptions

    def setup(self) -> None:
        if not isinstance(self.model.bottleneck, nn.Identity):
            raise ConfigError("--strategy linear trains the head on cached backbone features and takes no "
                              "bottleneck: use --bottleneck-dim 0, or --strategy partial to train a bottleneck")
        self.model.set_frozen_groups(range(self.model.num_groups), requires_grad=False)

    def param_groups(self) -> list[dict[str, Any]]:
        params = list(self.model.head.parameters())
        return [{"name": "head", "params": params, "lr": self.config.lr * self.config.head_lr_mult,
                 "weight_decay": self.config.weight_decay}]


@dataclass
class Standardiser:
    """Per-feature mean and scale of the training features; folded into the head's weights at the end."""

    mean: torch.Tensor
    scale: torch.Tensor

    @classmethod
    def of(cls, features: torch.Tensor) -> Standardiser:
        scale = features.std(dim=0, unbiased=False)
        return cls(features.mean(dim=0), torch.where(scale > 0, scale, torch.ones_like(scale)))

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        return (features - self.mean) / self.scale

    def fold(self, weight: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(W', b') such that W' x + b' = W standardise(x) + b."""
        folded = weight / self.scale
        return folded, bias - folded @ self.mean


@dataclass
class ProbeFit:
    """What :func:`fit_lbfgs_head` found: the chosen penalty and each tried one's validation result."""

    l2: float
    candidates: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


def solve_logistic(
    features: torch.Tensor, labels: torch.Tensor, num_classes: int, l2: float,
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], start: tuple[torch.Tensor, torch.Tensor] | None = None,
    max_iter: int = 100,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(W, b, iterations) minimising ``loss(features W^T + b, labels) + l2 / 2 * ||W||^2`` (b unpenalised)
    by L-BFGS with a strong-Wolfe line search, from ``start`` (default zeros).

    Written here rather than taken from scikit-learn: it runs in torch on the run's device (a GPU when
    there is one), in the precision of the features, with the task's criterion (class weights, label
    smoothing); scikit-learn's LogisticRegression is the reference it is tested against.
    """
    weight = torch.zeros(num_classes, features.shape[1], dtype=features.dtype, device=features.device)
    bias = torch.zeros(num_classes, dtype=features.dtype, device=features.device)
    if start is not None:
        weight, bias = start[0].clone(), start[1].clone()
    weight.requires_grad_(True)
    bias.requires_grad_(True)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, history_size=20,
                                  tolerance_grad=1e-6, tolerance_change=1e-10, line_search_fn="strong_wolfe")

    def objective() -> torch.Tensor:
        optimizer.zero_grad()
        value = loss(torch.addmm(bias, features, weight.t()), labels) + 0.5 * l2 * weight.pow(2).sum()
        value.backward()
        return value

    optimizer.step(objective)  # one step runs up to max_iter iterations
    iterations = int(optimizer.state[optimizer._params[0]].get("n_iter", 0))
    return weight.detach(), bias.detach(), iterations


def _better(row: dict[str, float], best: dict[str, float], select: str) -> bool:
    if select == "val_loss":
        return row["val_loss"] < best["val_loss"]
    return (row["val_accuracy"], -row["val_loss"]) > (best["val_accuracy"], -best["val_loss"])


def fit_lbfgs_head(
    model: TransferModel, train: tuple[torch.Tensor, torch.Tensor], val: tuple[torch.Tensor, torch.Tensor],
    loss: nn.Module, l2_values: tuple[float, ...] = L2_GRID, select: str = "val_loss",
    device: torch.device | str = "cpu",
) -> ProbeFit:
    """Fit ``model.head`` by :func:`solve_logistic` on standardised ``train`` features for each penalty of
    ``l2_values`` (strongest first, until PATIENCE of them in a row did no better) and keep the one best on
    ``val`` by ``select`` (``val_loss``: lowest plain cross-entropy; else highest accuracy, ties to the lower
    loss). Without a val split, the weakest penalty of the grid that is at least 1 / n (scikit-learn's
    default C = 1) is used.
    """
    start_time = time.perf_counter()
    dtype = torch.float32  # within 1e-3 of the converged objective after 100 iterations, at half fp64's cost
    x, y = train[0].to(device, dtype), train[1].to(device)
    loss = loss.to(device=device, dtype=dtype)  # class weights in the features' precision
    standardise = Standardiser.of(x)
    x = standardise(x)
    x_val, y_val = standardise(val[0].to(device, dtype)), val[1].to(device)
    if len(y_val) == 0 and len(l2_values) > 1:
        l2_values = (min((v for v in l2_values if v >= 1.0 / len(y)), default=l2_values[0]),)
    num_classes = model.num_classes
    candidates: list[dict[str, float]] = []
    solutions: list[tuple[torch.Tensor, torch.Tensor]] = []
    best = 0
    for l2 in l2_values:
        weight, bias, iterations = solve_logistic(x, y, num_classes, l2, loss, start=solutions[-1] if solutions else None)
        solutions.append((weight, bias))
        row = {"l2": l2, "iterations": float(iterations)}
        if len(y_val):
            with torch.no_grad():
                logits = torch.addmm(bias, x_val, weight.t())
            row["val_loss"] = float(nn.functional.cross_entropy(logits, y_val))
            row["val_accuracy"] = float((logits.argmax(1) == y_val).double().mean())
        candidates.append(row)
        if len(candidates) > 1 and _better(row, candidates[best], select):
            best = len(candidates) - 1
        if len(candidates) - 1 - best >= PATIENCE:  # the val curve is past its best: weaker penalties only overfit more
            break
    weight, bias = standardise.fold(*solutions[best])
    with torch.no_grad():
        model.head.weight.copy_(weight.to(model.head.weight))
        model.head.bias.copy_(bias.to(model.head.bias))
    return ProbeFit(candidates[best]["l2"], candidates, time.perf_counter() - start_time)


def fit_sklearn_head(
    model: TransferModel, features: torch.Tensor, labels: torch.Tensor, kind: str, seed: int = 0
) -> None:
    """Fit a scikit-learn ``logistic`` or ``svm`` classifier and write it into ``model.head``.

    Features are standardised inside the pipeline; the scaler is folded into the linear weights, so
    the head applies to raw features. Classes missing from ``labels`` get a large negative bias.
    """
    x = features.double().numpy()
    y = labels.numpy()
    classifier = (
        LogisticRegression(max_iter=2000, C=1.0, random_state=seed)
        if kind == "logistic"
        else LinearSVC(C=1.0, max_iter=20000, random_state=seed)
    )
    pipeline = make_pipeline(StandardScaler(), classifier).fit(x, y)
    scaler = pipeline[0]
    scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    coef, intercept = classifier.coef_, classifier.intercept_
    if coef.shape[0] == 1:  # binary: sklearn keeps one row for the positive class
        coef = np.vstack([-coef / 2, coef / 2])
        intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
    weight = np.full((model.num_classes, x.shape[1]), 0.0)
    bias = np.full(model.num_classes, -1e4)
    weight[classifier.classes_] = coef / scale
    bias[classifier.classes_] = intercept - (coef / scale) @ scaler.mean_
    with torch.no_grad():
        model.head.weight.copy_(torch.from_numpy(weight))
        model.head.bias.copy_(torch.from_numpy(bias))
