"""What a transferability score is, the registry of scores, and the checks every score runs on its input.

A score maps a backbone's frozen features (or its source model's class probabilities) on the target
training set, with the target labels, to one number; higher means the backbone should transfer
better. No training is involved.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, TypeVar

import numpy as np
import torch

from cvtransfer.errors import DataError
from cvtransfer.scores.base import Scorer, ScorersOfKind, register

Array = np.ndarray | torch.Tensor
Inputs = Literal["features", "source_probs"]
F = TypeVar("F", bound=Callable[..., float])


SCORES = ScorersOfKind("transferability", "transferability score")
Score = Scorer  # a transferability score is a Scorer of kind "transferability"


def register_score(name: str, uses: Inputs = "features") -> Callable[[F], F]:
    """Decorator registering ``function(inputs, labels) -> float`` as transferability score ``name``.

    ``uses``: what ``inputs`` is, the backbone's ``features`` or the source classifier's ``source_probs``.
    """

    def add(function: F) -> F:
        register(Scorer(name, "transferability", lambda s: function(getattr(s, uses), s.labels), "max",
                        (uses, "labels")))
        return function

    return add


def as_numpy(values: Array | Any, dtype: type = np.float64) -> np.ndarray:
    """A numpy array of ``dtype`` from a numpy array, a torch tensor (any device) or a list."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=dtype)


def check_inputs(inputs: Array, labels: Array, what: str = "features") -> tuple[np.ndarray, np.ndarray]:
    """(float64 matrix N x D, labels re-indexed 0..C-1); DataError on shapes a score cannot use."""
    x = as_numpy(inputs)
    y = as_numpy(labels, np.int64).reshape(-1)
    if x.ndim != 2:
        raise DataError(f"{what} must be a matrix (samples x dimensions), got shape {x.shape}")
    if len(x) != len(y):
        raise DataError(f"{what} has {len(x)} rows but there are {len(y)} labels: pass one label per row")
    if not np.isfinite(x).all():
        raise DataError(f"{what} contain NaN or infinite values")
    classes, y = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise DataError(f"a transferability score needs at least two classes in the labels, got {len(classes)}")
    return x, y


def check_probabilities(probs: np.ndarray) -> np.ndarray:
    """Rows of source-class probabilities: non-negative, each summing to 1."""
    if (probs < 0).any() or not np.allclose(probs.sum(axis=1), 1.0, atol=1e-4):
        raise DataError("source_probs must be probabilities (non-negative rows summing to 1): apply a softmax first")
    return probs
